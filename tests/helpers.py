"""Shared test helpers: researchers with working copies against one repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from dsg.backends.base import Repository
from dsg.backends.registry import open_repository
from dsg.core.manifest import Manifest
from dsg.fs.files import hash_bytes, hash_file
from dsg.sync import ops
from dsg.workcopy.config import ProjectConfig, RepositoryConfig, UserConfig
from dsg.workcopy.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parent.parent
DSG = str(REPO_ROOT / ".venv" / "bin" / "dsg") if (REPO_ROOT / ".venv/bin/dsg").exists() else "dsg"


def project_config(
    name: str, mountpoint: Path, repo_type: str = "posix", **repo: object
) -> ProjectConfig:
    return ProjectConfig(
        name=name,
        repository=RepositoryConfig(
            type=repo_type, host="localhost", mountpoint=str(mountpoint), **repo
        ),
    )


def settle() -> None:
    """Let the racy window (scan.RACY_NS) pass: files written just before a scan are hashed
    but not cached, so a test that counts hashes waits this long after writing."""
    from dsg.workcopy.scan import RACY_NS

    time.sleep(RACY_NS / 1e9 + 0.02)


@dataclass
class Researcher:
    name: str
    root: Path
    cfg_home: Path
    config: ProjectConfig
    user: UserConfig = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.cfg_home.mkdir(parents=True, exist_ok=True)
        self.user = UserConfig(user_name=self.name.title(), user_id=f"{self.name}@hrdag.org")
        # The agent command lives in the user's dsg.yml: dsg ignores it in a project file.
        cmd = self.config.repository.remote_command
        (self.cfg_home / "dsg.yml").write_text(
            f"user_name: {self.user.user_name}\nuser_id: {self.user.user_id}\n"
            + (f"remote_command: {json.dumps(cmd)}\n" if cmd else "")
        )
        (self.root / ".dsgconfig.yml").write_text(self.config.to_yaml())

    # --- files
    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, data: bytes | str) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink():
            p.unlink()
        p.write_bytes(data.encode() if isinstance(data, str) else data)

    def link(self, rel: str, target: str) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            p.unlink()
        os.symlink(target, p)

    def delete(self, rel: str) -> None:
        self.path(rel).unlink()

    def read(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    # --- engine (in-process)
    @property
    def ws(self) -> Workspace:
        return Workspace(self.root, self.config)

    @property
    def repo(self) -> Repository:
        return open_repository(self.config)

    def init(self, message: str = "init") -> ops.Result:
        with closing(self.repo) as repo:
            return ops.init(self.root, self.config, repo, self.user, message)

    def clone(self) -> ops.Result:
        with closing(self.repo) as repo:
            return ops.clone(self.ws, repo, self.user)

    def status(self) -> ops.Result:
        with closing(self.repo) as repo:
            return ops.status(self.ws, repo, keep_unchanged=True)

    def sync(self, **kw: object) -> ops.Result:
        with closing(self.repo) as repo:
            return ops.sync(self.ws, repo, self.user, lock_timeout=10, **kw)  # type: ignore[arg-type]

    def resolve(self, path: str, use: str) -> None:
        with closing(self.repo) as repo:
            ops.resolve(self.ws, repo, [path], use)

    def states(self) -> dict[str, str]:
        return {it.path: it.state.value for it in self.status().plan.items}

    def actions(self) -> dict[str, str]:
        return {it.path: it.action.value for it in self.status().plan.items}

    # --- CLI (subprocess)
    def cli(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
        full_env = {**os.environ, "DSG_CONFIG_HOME": str(self.cfg_home), **(env or {})}
        return subprocess.run(
            [DSG, *args],
            cwd=cwd or self.root,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=120,
        )


def small_project(tmp_path: Path, files: int = 40) -> Researcher:
    """Ana's working copy of `files` small files under task0/ and task1/, settled and
    initialized into a posix repository in `tmp_path/repos`."""
    (tmp_path / "repos").mkdir()
    r = Researcher(
        "ana", tmp_path / "ana", tmp_path / "cfg-a", project_config("proj", tmp_path / "repos")
    )
    for i in range(files):
        r.write(f"task{i % 2}/input/d{i // 20}/f{i}.csv", f"row {i}\n")
    settle()
    r.init()
    return r


def tree_content(
    root: Path, data_dirs: tuple[str, ...] = ("input", "output", "frozen")
) -> dict[str, str]:
    """path -> 'f:<hash>' / 'l:<target>' for the tracked content of a working copy."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        parts = [] if rel_dir == "." else rel_dir.split(os.sep)
        in_data = any(p in data_dirs for p in parts)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            if name.startswith(".") or ".dsg-conflict-" in name or not in_data:
                continue
            full = os.path.join(dirpath, name)
            rel = "/".join([*parts, name])
            if os.path.islink(full):
                out[rel] = "l:" + os.readlink(full)
            else:
                out[rel] = "f:" + hash_file(full).hex()
    return out


def manifest_content(m: Manifest) -> dict[str, str]:
    return {e.path: (f"l:{e.target}" if e.is_link else f"f:{e.hash_hex}") for e in m}


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


_REACH: dict[str, str | None] = {}


def skip_unless_lab_users_can_run(lab: object, command: str, user: str = "alice") -> None:
    """Skip (with the reason) when lab users cannot run `command` over SSH: e.g. when the
    checkout lives under a directory other users cannot enter (such as /root)."""
    import pytest

    if command not in _REACH:
        if hasattr(lab, "run"):  # the sshd_lab fixture
            proc = lab.run(user, [command, "--version"], timeout=60)
        else:  # a lab directory (<repo>/.lab) with its ssh_config
            proc = subprocess.run(
                ["ssh", "-F", str(Path(lab) / "ssh_config"), f"lab-{user}", command, "--version"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        _REACH[command] = (
            None
            if proc.returncode == 0
            else f"lab user {user} cannot run {command} over SSH ({proc.stderr.strip()[-200:]}); "
            "the SSH tests need the checkout readable by other users"
        )
    reason = _REACH[command]
    if reason:
        pytest.skip(reason)


def stored_file(repo: Repository, snapshot: str, path: str) -> Path:
    """Where the repository keeps the bytes of `path` in `snapshot` (to damage them in a
    tamper test): the content object of a posix repository of format 2, else the file in
    the snapshot's tree."""
    object_path = getattr(repo, "object_path", None)
    if object_path is not None and getattr(repo, "layout", 1) == 2:
        entry = repo.manifest(snapshot).get(path)
        assert entry is not None and entry.hash is not None, path
        return Path(object_path(entry.hash.hex()))
    return repo.snapshot_path(snapshot) / path


def empty_stored_object(repo_root: Path, content: bytes) -> Path:
    """Empty the object that stores `content` in the format-2 repository at `repo_root`, as
    a power cut before the commit's flush can, keeping its mode; returns its path."""
    digest = hash_bytes(content).hex()
    obj = repo_root / "objects" / digest[:2] / digest[2:]
    mode = obj.stat().st_mode & 0o7777
    obj.chmod(0o664)
    obj.write_bytes(b"")
    obj.chmod(mode)
    return obj
