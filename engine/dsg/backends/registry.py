"""Opening a repository: the one place that chooses a backend class from plain values."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dsg.backends.base import Repository

if TYPE_CHECKING:
    from dsg.workcopy.config import ProjectConfig
    from dsg.zfs.ops import Zfs


def open_local(
    kind: Literal["posix", "zfs"],
    root: Path,
    name: str,
    pool: str | None = None,
    zfs: Zfs | None = None,
) -> Repository:
    """The repository of project `name` at `root` on this machine (a posix directory, or the
    mountpoint of a zfs dataset in `pool`)."""
    if kind == "zfs":
        from dsg.backends.zfs import ZfsRepository

        if pool is None:
            raise ValueError(f"zfs repository {name} needs its pool")
        return ZfsRepository(root, name, pool, zfs=zfs)
    from dsg.backends.posix import PosixRepository

    return PosixRepository(root, name)


def open_repository(config: ProjectConfig) -> Repository:
    """The repository a project config points at: over SSH, or on this machine."""
    repo_cfg = config.repository
    if repo_cfg.transport == "ssh":
        from dsg.backends.ssh import SshRepository
        from dsg.wire.sshstart import user_remote_command

        # The agent command: set by code, else the user's own (dsg.yml, DSG_REMOTE_COMMAND);
        # load_project_config never takes it from the project file.
        remote_command = repo_cfg.remote_command or user_remote_command(repo_cfg.host)
        return SshRepository(
            repo_cfg.host,
            config.name,
            config.repo_path,
            user=repo_cfg.user,
            port=repo_cfg.port,
            remote_command=remote_command,
        )
    return open_local(repo_cfg.type, Path(config.repo_path), config.name, repo_cfg.pool)
