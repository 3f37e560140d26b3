#!/usr/bin/python
# Copyright (c) HRDAG. GPL-3.0-or-later.
"""Make the supplementary members of a unix group match a declared list exactly.

ansible.builtin.user with append=true only ever adds a user to a group; with
append=false it also strips every group it was not told about (sudo, the
admin's own groups...).  A project group is an access boundary, so dsg wants
exactly the declared members in it and nothing else touched.  Check and diff
mode are supported.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dsg_group_members
short_description: Set the supplementary members of a local group exactly
description:
  - Reads the group from the local group database and adds or removes supplementary
    members with C(gpasswd) so that they equal I(members).
  - Does not create the group (use ansible.builtin.group first) and never touches
    users' other groups or primary groups.
options:
  name:
    description: Group name.
    type: str
    required: true
  members:
    description: Exact list of supplementary members.
    type: list
    elements: str
    default: []
author: dsg maintainers
"""

EXAMPLES = r"""
- name: Exactly these researchers in the project group
  dsg_group_members:
    name: dsg-guatemala
    members: [alice, bob]
"""

RETURN = r"""
added:
  description: Users added to the group.
  type: list
  returned: always
removed:
  description: Users removed from the group.
  type: list
  returned: always
"""


def parse_group_line(line):
    """Parse one /etc/group line into (name, gid, [members])."""
    parts = line.rstrip("\n").split(":")
    if len(parts) != 4:
        raise ValueError(f"malformed group entry: {line!r}")
    members = [m for m in parts[3].split(",") if m]
    return parts[0], parts[2], members


def membership_plan(current, desired):
    """Return (to_add, to_remove), both sorted."""
    cur, want = set(current), set(desired)
    return sorted(want - cur), sorted(cur - want)


def main():  # pragma: no cover - exercised by the lab run
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            members=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    name = module.params["name"]
    desired = sorted(set(module.params["members"]))
    result = dict(changed=False, name=name, added=[], removed=[])

    getent = module.get_bin_path("getent", required=True)
    rc, out, _err = module.run_command([getent, "group", name])
    if rc != 0:
        if module.check_mode:
            module.warn(f"group {name} does not exist yet; planning membership from empty")
            current = []
        else:
            module.fail_json(msg=f"group {name} does not exist", **result)
    else:
        current = parse_group_line(out.splitlines()[0])[2]

    for user in desired:
        urc, _, _ = module.run_command([getent, "passwd", user])
        if urc != 0 and not module.check_mode:
            module.fail_json(
                msg=f"user {user} does not exist (declared member of {name})", **result
            )

    to_add, to_remove = membership_plan(current, desired)
    result.update(added=to_add, removed=to_remove, members=desired)
    if to_add or to_remove:
        result["changed"] = True
        result["diff"] = dict(
            before="\n".join(sorted(current)) + "\n",
            after="\n".join(desired) + "\n",
            before_header=f"members of group {name}",
            after_header=f"members of group {name} (declared)",
        )
        if not module.check_mode:
            gpasswd = module.get_bin_path("gpasswd", required=True)
            # -M sets the whole list in one atomic write of /etc/group and /etc/gshadow
            module.run_command([gpasswd, "-M", ",".join(desired), name], check_rc=True)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
