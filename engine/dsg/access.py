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

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .yamlfile import explain, load_yaml

DEFAULT_ACCESS_FILE = Path("/etc/dsg/access.yml")
Role = Literal["read", "write", "admin"]
RANK = {"read": 1, "write": 2, "admin": 3}


class ProjectAccess(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["zfs", "posix"] | None = None
    group: str | None = None
    dataset: str | None = None
    mountpoint: str
    users: dict[str, Role] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _kind(self) -> ProjectAccess:
        if self.type is None:
            object.__setattr__(self, "type", "zfs" if self.dataset else "posix")
        if self.type == "zfs" and not self.dataset:
            raise ValueError("a zfs project needs 'dataset'")
        if not self.mountpoint.startswith("/"):
            raise ValueError("mountpoint must be absolute")
        return self

    @property
    def pool(self) -> str | None:
        return self.dataset.split("/")[0] if self.dataset else None


class AccessFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    projects: dict[str, ProjectAccess] = Field(default_factory=dict)

    def role(self, project: str, login: str) -> Role | None:
        p = self.projects.get(project)
        return p.users.get(login) if p else None


def load_access(path: Path = DEFAULT_ACCESS_FILE) -> AccessFile:
    if not path.is_file():
        raise ConfigError(
            f"the repository host has no access file ({path})",
            hint="an admin provisions it with the dsg_access Ansible role",
        )
    data, text = load_yaml(path)
    try:
        return AccessFile.model_validate(data)
    except ValidationError as e:
        raise explain(path, text, e, {}) from e


def allows(role: Role | None, needed: Role) -> bool:
    return role is not None and RANK[role] >= RANK[needed]
