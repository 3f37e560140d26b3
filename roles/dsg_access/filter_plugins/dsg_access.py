# Copyright (c) HRDAG. GPL-3.0-or-later.
"""Pure functions that turn the inventory's projects and users into what dsg_access writes.

Kept out of Jinja so they can be unit-tested (tests/ansible/test_dsg_access_filters.py).
"""

from __future__ import annotations

ROLES = ("read", "write", "admin")


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


def dsg_access_active_users(projects, present_users):
    """Present users who are members of at least one present project."""
    active = set()
    for project in projects or []:
        active.update(_members(project, present_users))
    return sorted(active)


def dsg_access_project_members(project, present_users):
    """Sorted member names of one project (empty when the project is absent)."""
    return sorted(_members(project, present_users))


def dsg_access_delegations(projects, present_users, role_permissions, parent):
    """{dataset: {user: [permissions]}} for every declared project (absent ones: {})."""
    out = {}
    for project in projects or []:
        grants = {}
        for user, role in sorted(_members(project, present_users).items()):
            if role not in ROLES:
                raise ValueError(f"project {project['name']}: unknown role {role!r} for {user}")
            perms = sorted(set((role_permissions or {}).get(role) or []))
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
            "dsg_access_active_users": dsg_access_active_users,
            "dsg_access_project_members": dsg_access_project_members,
            "dsg_access_delegations": dsg_access_delegations,
            "dsg_access_document": dsg_access_document,
        }
