# Copyright (c) HRDAG. GPL-3.0-or-later.
"""Pure functions that turn the inventory's projects and users into what dsg_access writes.

Kept out of Jinja so they can be unit-tested (tests/ansible/test_dsg_access_filters.py).
"""

from __future__ import annotations

ROLES = ("read", "write", "admin")
WRITERS = ("write", "admin")
# What a read member may be delegated on zfs: permissions that change nothing.
ZFS_READ_ONLY = frozenset({"diff", "send"})
READ_GROUP_SUFFIX = "-read"


def _present(item):
    return (item.get("state") or "present") == "present"


def dsg_access_present_users(users):
    """Names of declared users whose state is present."""
    return sorted(u["name"] for u in users or [] if _present(u))


def _members(project, present_users):
    if not _present(project):
        return {}
    present = set(present_users)
    return {u: r for u, r in (project.get("users") or {}).items() if u in present}


def dsg_access_duplicates(names):
    """Names that occur more than once, sorted."""
    seen, dup = set(), set()
    for n in names or []:
        (dup if n in seen else seen).add(n)
    return sorted(dup)


def dsg_access_present_projects(projects):
    """Declared projects whose state is present."""
    return [p for p in projects or [] if _present(p)]


def dsg_access_absent_users(users):
    """Names of declared users whose state is absent (to be offboarded)."""
    return sorted(u["name"] for u in users or [] if not _present(u))


def dsg_access_active_users(projects, present_users):
    """Present users who are members of at least one present project."""
    active = set()
    for project in projects or []:
        active.update(_members(project, present_users))
    return sorted(active)


def dsg_access_project_members(project, present_users, roles=None):
    """Sorted member names of one project (empty when the project is absent), only those
    whose role is in `roles` when it is given."""
    members = _members(project, present_users)
    return sorted(u for u, r in members.items() if roles is None or r in roles)


def dsg_access_group_members(project, present_users, read_acl=True):
    """Members of the project's own group, which owns the repository and may write it:
    writers and admins; readers too only where the read group cannot be used (no ACLs)."""
    return dsg_access_project_members(project, present_users, None if not read_acl else WRITERS)


def dsg_access_read_group(project):
    """The project's read group: `read_group` if declared, else <group>-read."""
    return project.get("read_group") or f"{project['group']}{READ_GROUP_SUFFIX}"


def dsg_access_read_members(project, present_users):
    """Members of the project's read group: its readers."""
    return dsg_access_project_members(project, present_users, ("read",))


def dsg_access_delegations(projects, present_users, role_permissions, parent, extra=None):
    """{dataset: {user: [permissions]}} for every declared project (absent ones: {}).
    `extra` ({account: [permissions]}) is granted on every present project besides its
    members (e.g. dsg_backup's pull account: send, hold, release)."""
    out = {}
    for project in projects or []:
        grants = {}
        if _present(project):
            for account, perms in sorted((extra or {}).items()):
                if perms:
                    grants[account] = sorted(set(perms))
        for user, role in sorted(_members(project, present_users).items()):
            if role not in ROLES:
                raise ValueError(f"project {project['name']}: unknown role {role!r} for {user}")
            perms = sorted(set((role_permissions or {}).get(role) or []))
            if role == "read" and set(perms) - ZFS_READ_ONLY:
                raise ValueError(
                    f"project {project['name']}: the read role may only be delegated "
                    f"{sorted(ZFS_READ_ONLY)}, not {sorted(set(perms) - ZFS_READ_ONLY)}"
                )
            if perms:
                grants[user] = perms
        out[f"{parent}/{project['name']}"] = grants
    return out


def dsg_access_document(projects, present_users, parent, mountpoint_root):
    """The content of /etc/dsg/access.yml (present projects, present members only)."""
    doc = {}
    for project in projects or []:
        if not _present(project):
            continue
        name = project["name"]
        doc[name] = {
            "group": project["group"],
            "dataset": f"{parent}/{name}",
            "mountpoint": f"{mountpoint_root.rstrip('/')}/{name}",
            "users": dict(sorted(_members(project, present_users).items())),
        }
    return {"projects": dict(sorted(doc.items()))}


class FilterModule:
    def filters(self):
        return {
            "dsg_access_present_users": dsg_access_present_users,
            "dsg_access_absent_users": dsg_access_absent_users,
            "dsg_access_present_projects": dsg_access_present_projects,
            "dsg_access_duplicates": dsg_access_duplicates,
            "dsg_access_active_users": dsg_access_active_users,
            "dsg_access_project_members": dsg_access_project_members,
            "dsg_access_group_members": dsg_access_group_members,
            "dsg_access_read_group": dsg_access_read_group,
            "dsg_access_read_members": dsg_access_read_members,
            "dsg_access_delegations": dsg_access_delegations,
            "dsg_access_document": dsg_access_document,
        }
