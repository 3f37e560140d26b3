"""Server-side authorization: who may do what to which project.

`/etc/dsg/access.yml` (written by the Ansible role dsg_access) is read by the agent:

    projects:
      killings:
        group: proj-killings
        dataset: tank/dsg/killings        # zfs projects (the pool is its first component)
        mountpoint: /var/repos/dsg/killings
        users: {ana: write, ben: read, root: admin}
      sandbox:
        type: posix                       # a posix repository (dev, lab)
        mountpoint: /srv/dsg/sandbox
        users: {ana: admin}

Roles are ordered: read < write < admin. read: clone, status, log, fetch. write: also
sync (lock, commit) and init. admin: everything (project administration).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from dsg.core.errors import ConfigError
from dsg.fs.yamlfile import Issue, explain_issues, load_yaml

DEFAULT_ACCESS_FILE = Path("/etc/dsg/access.yml")
Role = Literal["read", "write", "admin"]
RANK = {"read": 1, "write": 2, "admin": 3}
KINDS = ("zfs", "posix")


@dataclass(frozen=True, slots=True)
class ProjectAccess:
    mountpoint: str
    type: Literal["zfs", "posix"] = "posix"
    group: str | None = None
    dataset: str | None = None
    users: Mapping[str, Role] = field(default_factory=dict)

    @property
    def pool(self) -> str | None:
        return self.dataset.split("/")[0] if self.dataset else None


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-session bounds the agent enforces (`limits:` in the access file)."""

    lock_idle_seconds: float = 900.0  # a session holding the lock and silent this long ends
    max_uploads: int = 2_000_000  # files and links put in one transaction
    max_staged_bytes: int = 1 << 40  # bytes uploaded in one transaction


LIMIT_KEYS = {"lock_idle_seconds": float, "max_uploads": int, "max_staged_bytes": int}


@dataclass(frozen=True, slots=True)
class AccessFile:
    projects: Mapping[str, ProjectAccess] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)

    def role(self, project: str, login: str) -> Role | None:
        p = self.projects.get(project)
        return p.users.get(login) if p else None


# The file is checked by hand, not by a pydantic model: the agent reads it at the start of
# every SSH session, and loading pydantic took ~0.1 s of that start. Every problem is
# collected with its key path, so the error names the key and its line in the file.


def _project(name: str, raw: Any, issues: list[Issue]) -> ProjectAccess | None:
    loc = ("projects", name)
    if not isinstance(raw, dict):
        issues.append((loc, "expected a mapping (mountpoint, users, ...)"))
        return None
    n = len(issues)
    for key in raw.keys() - {"type", "group", "dataset", "mountpoint", "users"}:
        issues.append(((*loc, key), "unknown key"))
    for key in ("type", "group", "dataset", "mountpoint"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            issues.append(((*loc, key), "expected a string"))
    kind, dataset, mountpoint = raw.get("type"), raw.get("dataset"), raw.get("mountpoint")
    if isinstance(kind, str) and kind not in KINDS:
        issues.append(((*loc, "type"), f"expected zfs or posix, not {kind!r}"))
    kind = kind or ("zfs" if dataset else "posix")
    if kind == "zfs" and not dataset:
        issues.append((loc, "a zfs project needs 'dataset'"))
    if mountpoint is None:
        issues.append((loc, "'mountpoint' is required"))
    elif isinstance(mountpoint, str) and not mountpoint.startswith("/"):
        issues.append(((*loc, "mountpoint"), "mountpoint must be absolute"))
    users = raw.get("users")
    if users is None:
        users = {}
    elif not isinstance(users, dict):
        issues.append(((*loc, "users"), "expected a mapping of login: role"))
    else:
        for login, role in users.items():
            if not isinstance(login, str):
                issues.append(((*loc, "users", login), "a login must be a string"))
            elif not isinstance(role, str) or role not in RANK:
                issues.append(
                    ((*loc, "users", login), f"expected read, write or admin, not {role!r}")
                )
    if len(issues) > n:
        return None
    return ProjectAccess(
        mountpoint=mountpoint,
        type=kind,
        group=raw.get("group"),
        dataset=dataset,
        users=cast(dict[str, Role], users),
    )


def parse_access(data: dict[str, Any]) -> tuple[AccessFile, list[Issue]]:
    """The access file's contents, and every problem found in them (key path, message)."""
    issues: list[Issue] = [((key,), "unknown key") for key in data.keys() - {"projects", "limits"}]
    limits = _limits(data.get("limits"), issues)
    raw = data.get("projects")
    if raw is None:
        raw = {}
    elif not isinstance(raw, dict):
        issues.append((("projects",), "expected a mapping of project name: settings"))
        raw = {}
    projects: dict[str, ProjectAccess] = {}
    for name, settings in raw.items():
        if not isinstance(name, str):
            issues.append((("projects", name), "a project name must be a string"))
        elif (p := _project(name, settings, issues)) is not None:
            projects[name] = p
    return AccessFile(projects, limits), issues


def _limits(raw: Any, issues: list[Issue]) -> Limits:
    if raw is None:
        return Limits()
    if not isinstance(raw, dict):
        issues.append((("limits",), "expected a mapping"))
        return Limits()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        kind = LIMIT_KEYS.get(key)
        if kind is None:
            issues.append((("limits", key), "unknown key"))
        elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            issues.append((("limits", key), "expected a positive number"))
        else:
            values[key] = kind(value)
    return Limits(**values)


def load_access(path: Path = DEFAULT_ACCESS_FILE) -> AccessFile:
    if not path.is_file():
        raise ConfigError(
            f"the repository host has no access file ({path})",
            hint="an admin provisions it with the dsg_access Ansible role",
        )
    data, text = load_yaml(path)
    access, issues = parse_access(data)
    if issues:
        raise explain_issues(path, text, issues)
    return access


def allows(role: Role | None, needed: Role) -> bool:
    return role is not None and RANK[role] >= RANK[needed]
