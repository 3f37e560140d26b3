"""A group-shared space on the lab sshd host for SSH tests: repositories, access file, logs.

The fixtures `ssh_space` and `ssh_team` (in conftest.py) build on it.
"""

from __future__ import annotations

import grp
import os
import uuid
from pathlib import Path

import yaml

from dsg.workcopy.config import ProjectConfig, RepositoryConfig
from tests.helpers import REPO_ROOT, Researcher

AGENT = REPO_ROOT / ".venv" / "bin" / "dsg"
A = "task1/input/a.csv"


class SshSpace:
    """A group-shared directory on the lab host: repositories, the access file, logs."""

    def __init__(self, lab, tmp_path: Path) -> None:
        self.lab = lab
        self.tmp = tmp_path
        top = Path("/srv/dsg-lab-tests")
        top.mkdir(exist_ok=True)
        top.chmod(0o755)
        self.base = top / uuid.uuid4().hex[:10]
        gid = grp.getgrnam(lab.group).gr_gid
        for d in (self.base, self.base / "repos", self.base / "logs"):
            d.mkdir()
            os.chown(d, 0, gid)
            d.chmod(0o2775)
        self.access_file = self.base / "access.yml"
        self.projects: dict[str, dict] = {}

    def grant(self, project: str, **users: str) -> None:
        self.projects.setdefault(
            project,
            {"type": "posix", "mountpoint": str(self.base / "repos" / project), "users": {}},
        )["users"].update(users)
        self.access_file.write_text(yaml.safe_dump({"projects": self.projects}))
        self.access_file.chmod(0o644)

    def config(self, project: str, login: str) -> ProjectConfig:
        return ProjectConfig(
            name=project,
            repository=RepositoryConfig(
                type="posix",
                host=self.lab.alias(login),
                mountpoint=str(self.base / "repos"),
                remote_command=f"{AGENT} serve --access-file {self.access_file} "
                f"--log-dir {self.base / 'logs'}",
            ),
        )

    def researcher(self, login: str, project: str = "proj", name: str | None = None) -> Researcher:
        """A working copy syncing as `login`; `name` tells two copies of one login apart."""
        name = name or login
        return Researcher(
            name, self.tmp / name / project, self.tmp / "cfg" / name, self.config(project, login)
        )

    def agent_argv(self) -> list[str]:
        return [str(AGENT), "serve", "--access-file", str(self.access_file)]


def repo_on_disk(space, project: str = "proj"):
    from dsg.backends.posix import PosixRepository

    return PosixRepository(space.base / "repos" / project, project)
