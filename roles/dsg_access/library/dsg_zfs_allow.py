#!/usr/bin/python
# Copyright (c) HRDAG. GPL-3.0-or-later.
"""Make `zfs allow` on one dataset match a declared set exactly.

community.general.zfs_delegate_admin only ever adds grants and has no check
mode.  This module reads `zfs allow <dataset>`, keeps only the block that
belongs to the dataset itself (grants inherited from ancestors are shown by
ZFS but are managed on the ancestor), diffs it against the declared grants and
runs the `zfs allow` / `zfs unallow` commands that close the gap.  Check mode
and diff mode are supported; the parsing and planning are pure functions so
they can be unit-tested without ZFS.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dsg_zfs_allow
short_description: Make ZFS delegated permissions on a dataset match a declared set exactly
description:
  - Reads C(zfs allow DATASET), diffs the dataset's own grants against the declared ones and
    adds missing and removes extra grants (users, groups, everyone, create-time permissions
    and permission sets).
  - Grants shown for ancestor datasets are ignored; manage them on the ancestor.
  - Supports check mode and diff mode.
options:
  name:
    description: Dataset (filesystem or volume) to manage.
    type: str
    required: true
  users:
    description: Map of user name to the list of permissions it must hold, exactly.
    type: dict
    default: {}
  groups:
    description: Map of group name to the list of permissions it must hold, exactly.
    type: dict
    default: {}
  everyone:
    description: Permissions granted to everyone, exactly.
    type: list
    elements: str
    default: []
  create_time:
    description: Create-time permissions (C(zfs allow -c)), exactly.
    type: list
    elements: str
    default: []
  sets:
    description: Permission sets (C(zfs allow -s @name)); keys may omit the leading C(@).
    type: dict
    default: {}
  scope:
    description:
      - Where user, group and everyone grants apply. C(local+descendent) is ZFS's default.
    type: str
    choices: [local, descendent, local+descendent]
    default: local+descendent
  unsupported:
    description:
      - What to do when the platform has no working C(zfs allow) (zfs-fuse needs a missing
        pyzfs helper). C(skip) returns unchanged with C(supported=false) and a message.
    type: str
    choices: [fail, skip]
    default: fail
author: dsg maintainers
"""

EXAMPLES = r"""
- name: Exactly these delegations on a project dataset
  dsg_zfs_allow:
    name: tank/dsg/guatemala
    users:
      alice: [snapshot, hold, release, rollback, send, userprop]
      bob: [snapshot, hold, release, rollback, send, userprop]
    unsupported: skip
"""

RETURN = r"""
supported:
  description: Whether C(zfs allow) works on this host.
  type: bool
  returned: always
commands:
  description: The zfs commands that were (or in check mode would be) run, as argv lists.
  type: list
  returned: always
before:
  description: The dataset's own delegations before, rendered like C(zfs allow) output.
  type: str
  returned: when supported
after:
  description: The declared delegations, rendered the same way.
  type: str
  returned: when supported
"""

import re

SCOPES = ("local", "descendent")
KINDS = ("user", "group", "everyone")
HEADERS = {
    "Local permissions:": ("local",),
    "Descendent permissions:": ("descendent",),
    "Local+Descendent permissions:": ("local", "descendent"),
    "Create time permissions:": "create",
    "Permission sets:": "sets",
}
UNSUPPORTED_PATTERNS = (
    "pyzfs",  # zfs-fuse: "internal error: /usr/lib/zfs/pyzfs.py not found"
    "unrecognized command 'allow'",
    "delegated administration is disabled",
    "operation not supported",
)
_PERM_RE = re.compile(r"^@?[A-Za-z0-9_:.@-]+$")
_UNKNOWN_RE = re.compile(r"^(user|group) \(unknown: (\d+)\) (\S+)$")


class AllowError(ValueError):
    """Malformed input or output."""


def empty_perms():
    return {"grants": {}, "create": frozenset(), "sets": {}}


def _split_perms(text):
    return frozenset(p for p in text.strip().split(",") if p)


def parse_allow(text, dataset):
    """Parse `zfs allow <dataset>` output; return the grants of `dataset` itself.

    The result is {"grants": {(kind, who, scope): frozenset(perms)},
    "create": frozenset(perms), "sets": {"@name": frozenset(perms)}}, with
    Local+Descendent grants split into their local and descendent halves (that
    is how ZFS stores them).
    """
    perms = empty_perms()
    grants = {}
    sets = {}
    create = set()
    owner = None
    section = None
    for raw in text.splitlines():
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("---- Permissions on "):
            rest = line[len("---- Permissions on ") :].strip()
            owner = rest.split()[0] if rest.split() else ""
            section = None
            continue
        if not line[0].isspace():
            header = line.strip()
            if header not in HEADERS:
                raise AllowError(f"unexpected line in zfs allow output: {line!r}")
            section = HEADERS[header]
            continue
        if owner != dataset:
            continue  # inherited from an ancestor: not ours to manage here
        if section is None:
            raise AllowError(f"permission line outside a section: {line!r}")
        words = line.split()
        if section == "create":
            create |= _split_perms(" ".join(words))
        elif section == "sets":
            if len(words) != 2 or not words[0].startswith("@"):
                raise AllowError(f"cannot parse permission set line: {line!r}")
            sets[words[0]] = frozenset(sets.get(words[0], frozenset()) | _split_perms(words[1]))
        else:
            unknown = _UNKNOWN_RE.match(line.strip())
            if unknown:  # an id with no name on this host, e.g. "user (unknown: 1001) send"
                words = [unknown.group(1), unknown.group(2), unknown.group(3)]
            if words[0] == "everyone" and len(words) == 2:
                kind, who, plist = "everyone", "", words[1]
            elif words[0] in ("user", "group") and len(words) == 3:
                kind, who, plist = words[0], words[1], words[2]
            else:
                raise AllowError(f"cannot parse grant line: {line!r}")
            for scope in section:
                key = (kind, who, scope)
                grants[key] = frozenset(grants.get(key, frozenset()) | _split_perms(plist))
    perms["grants"] = {k: v for k, v in grants.items() if v}
    perms["create"] = frozenset(create)
    perms["sets"] = {k: v for k, v in sets.items() if v}
    return perms


def _clean_list(values, what):
    out = set()
    for value in values or []:
        value = str(value).strip()
        if not value or not _PERM_RE.match(value):
            raise AllowError(f"invalid permission {value!r} in {what}")
        out.add(value)
    return frozenset(out)


def _clean_name(name, what):
    name = str(name).strip()
    if not name or any(c.isspace() for c in name) or "," in name:
        raise AllowError(f"invalid {what} name {name!r}")
    return name


def desired_perms(
    users=None, groups=None, everyone=None, create_time=None, sets=None, scope="local+descendent"
):
    """Build the declared permissions in the same shape parse_allow returns."""
    if scope not in ("local", "descendent", "local+descendent"):
        raise AllowError(f"invalid scope {scope!r}")
    scopes = SCOPES if scope == "local+descendent" else (scope,)
    grants = {}
    for kind, table in (("user", users or {}), ("group", groups or {})):
        if not isinstance(table, dict):
            raise AllowError(f"{kind}s must be a mapping of name to permission list")
        for who, plist in table.items():
            who = _clean_name(who, kind)
            clean = _clean_list(plist, f"{kind} {who}")
            for s in scopes:
                if clean:
                    grants[(kind, who, s)] = clean
    clean = _clean_list(everyone, "everyone")
    for s in scopes:
        if clean:
            grants[("everyone", "", s)] = clean
    out_sets = {}
    for name, plist in (sets or {}).items():
        name = _clean_name(name, "permission set")
        name = name if name.startswith("@") else "@" + name
        clean = _clean_list(plist, f"set {name}")
        if clean:
            out_sets[name] = clean
    return {"grants": grants, "create": _clean_list(create_time, "create_time"), "sets": out_sets}


def _who_flag(kind):
    return {"user": "-u", "group": "-g", "everyone": "-e"}[kind]


def _grant_cmds(verb, changes, dataset):
    """changes: {(kind, who): {scope: set(perms)}} -> list of argv (without 'zfs')."""
    cmds = []
    for kind, who in sorted(changes):
        by_scope = changes[(kind, who)]
        local = by_scope.get("local", frozenset())
        desc = by_scope.get("descendent", frozenset())
        both = local & desc
        for flag, plist in (("-ld", both), ("-l", local - both), ("-d", desc - both)):
            if not plist:
                continue
            argv = [verb, flag, _who_flag(kind)]
            if kind != "everyone":
                argv.append(who)
            argv += [",".join(sorted(plist)), dataset]
            cmds.append(argv)
    return cmds


def plan(current, desired, dataset):
    """Return the zfs argv lists (without the leading 'zfs') that turn current into desired.

    Order: define/extend sets first (grants may reference them), then remove extra
    grants, add missing grants, fix create-time permissions, and prune sets last.
    """
    cmds = []
    cur_sets, want_sets = current["sets"], desired["sets"]
    for name in sorted(want_sets):
        add = want_sets[name] - cur_sets.get(name, frozenset())
        if add:
            cmds.append(["allow", "-s", name, ",".join(sorted(add)), dataset])

    removals, additions = {}, {}
    keys = set(current["grants"]) | set(desired["grants"])
    for key in keys:
        kind, who, scope = key
        have = current["grants"].get(key, frozenset())
        want = desired["grants"].get(key, frozenset())
        if have - want:
            removals.setdefault((kind, who), {})[scope] = have - want
        if want - have:
            additions.setdefault((kind, who), {})[scope] = want - have
    cmds += _grant_cmds("unallow", removals, dataset)
    cmds += _grant_cmds("allow", additions, dataset)

    extra_create = current["create"] - desired["create"]
    missing_create = desired["create"] - current["create"]
    if extra_create:
        cmds.append(["unallow", "-c", ",".join(sorted(extra_create)), dataset])
    if missing_create:
        cmds.append(["allow", "-c", ",".join(sorted(missing_create)), dataset])

    for name in sorted(cur_sets):
        if name not in want_sets:
            cmds.append(["unallow", "-s", name, dataset])
            continue
        extra = cur_sets[name] - want_sets[name]
        if extra:
            cmds.append(["unallow", "-s", name, ",".join(sorted(extra)), dataset])
    return cmds


def render(perms, dataset):
    """Render permissions the way `zfs allow` prints them (stable order), for diffs."""
    lines = []
    if perms["sets"]:
        lines.append("Permission sets:")
        lines += [f"\t{n} {','.join(sorted(p))}" for n, p in sorted(perms["sets"].items())]
    if perms["create"]:
        lines.append("Create time permissions:")
        lines.append("\t" + ",".join(sorted(perms["create"])))
    sections = {
        "Local permissions:": [],
        "Descendent permissions:": [],
        "Local+Descendent permissions:": [],
    }
    whos = sorted(
        {(k, w) for k, w, _ in perms["grants"]}, key=lambda kw: (KINDS.index(kw[0]), kw[1])
    )
    for kind, who in whos:
        local = perms["grants"].get((kind, who, "local"), frozenset())
        desc = perms["grants"].get((kind, who, "descendent"), frozenset())
        both = local & desc
        label = "everyone" if kind == "everyone" else f"{kind} {who}"
        for header, plist in (
            ("Local permissions:", local - both),
            ("Descendent permissions:", desc - both),
            ("Local+Descendent permissions:", both),
        ):
            if plist:
                sections[header].append(f"\t{label} {','.join(sorted(plist))}")
    for header in (
        "Local permissions:",
        "Descendent permissions:",
        "Local+Descendent permissions:",
    ):
        if sections[header]:
            lines.append(header)
            lines += sections[header]
    if not lines:
        return f"# no delegated permissions on {dataset}\n"
    return f"---- Permissions on {dataset} ----\n" + "\n".join(lines) + "\n"


def is_unsupported(stderr):
    low = (stderr or "").lower()
    return any(p.lower() in low for p in UNSUPPORTED_PATTERNS)


def main():  # pragma: no cover - exercised by the lab run, not unit tests
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            users=dict(type="dict", default={}),
            groups=dict(type="dict", default={}),
            everyone=dict(type="list", elements="str", default=[]),
            create_time=dict(type="list", elements="str", default=[]),
            sets=dict(type="dict", default={}),
            scope=dict(
                type="str",
                default="local+descendent",
                choices=["local", "descendent", "local+descendent"],
            ),
            unsupported=dict(type="str", default="fail", choices=["fail", "skip"]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    dataset = p["name"]
    result = dict(changed=False, supported=True, commands=[], name=dataset)
    try:
        want = desired_perms(
            p["users"], p["groups"], p["everyone"], p["create_time"], p["sets"], p["scope"]
        )
    except AllowError as exc:
        module.fail_json(msg=str(exc), **result)

    zfs = module.get_bin_path("zfs", required=True)
    rc, out, err = module.run_command([zfs, "allow", dataset])
    if rc != 0:
        if is_unsupported(err + out):
            result["supported"] = False
            msg = (
                f"zfs allow is not supported on this host ({(err or out).strip()}); "
                f"delegation on {dataset} not managed"
            )
            if p["unsupported"] == "skip":
                result["msg"] = msg
                module.exit_json(**result)
            module.fail_json(msg=msg, **result)
        exists_rc, _, _ = module.run_command([zfs, "list", "-H", "-o", "name", dataset])
        nothing_wanted = not (want["grants"] or want["create"] or want["sets"])
        if exists_rc != 0 and nothing_wanted:
            result["msg"] = f"{dataset} does not exist and no delegation is declared"
            module.exit_json(**result)
        if exists_rc != 0 and module.check_mode:
            out = ""  # dataset would be created earlier in a real run; plan from nothing
            module.warn(f"{dataset} does not exist yet; planning delegation from an empty set")
        else:
            module.fail_json(
                msg=f"zfs allow {dataset} failed: {(err or out).strip()}", rc=rc, **result
            )
    try:
        have = parse_allow(out, dataset)
    except AllowError as exc:
        module.fail_json(msg=f"cannot parse zfs allow output: {exc}", stdout=out, **result)

    cmds = plan(have, want, dataset)
    result["commands"] = [[zfs, *c] for c in cmds]
    result["before"] = render(have, dataset)
    result["after"] = render(want, dataset)
    if cmds:
        result["changed"] = True
        result["diff"] = dict(
            before=result["before"],
            after=result["after"],
            before_header=f"zfs allow {dataset}",
            after_header=f"zfs allow {dataset} (declared)",
        )
        if not module.check_mode:
            for argv in result["commands"]:
                module.run_command(argv, check_rc=True)
            rc, out, err = module.run_command([zfs, "allow", dataset], check_rc=True)
            now = parse_allow(out, dataset)
            if plan(now, want, dataset):
                module.fail_json(
                    msg=f"delegation on {dataset} still differs after changes",
                    now=render(now, dataset),
                    **result,
                )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
