"""A hostile project member at the wire: the real agent (`dsg serve`) in a subprocess, spoken
to frame by frame with whatever a modified client could send, and an honest colleague whose
`dsg` reaches the same agent through an ssh stand-in."""

from __future__ import annotations

import io
import os
import pwd
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash
import yaml

from dsg.backends.posix import PosixRepository
from dsg.wire.protocol import PROTOCOL_VERSION, recv_json, send_json, send_stream
from dsg.workcopy.config import ProjectConfig, RepositoryConfig
from tests.helpers import DSG, Researcher

ME = pwd.getpwuid(os.getuid()).pw_name


@dataclass
class Host:
    """A repository host on this machine: an access file, a log directory, repositories."""

    top: Path
    limits: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.top / "repos").mkdir(parents=True, exist_ok=True)
        (self.top / "logs").mkdir(exist_ok=True)
        self.projects: dict[str, dict[str, Any]] = {}
        self.fake_ssh = self.top / "fake-ssh"
        # Stands in for `ssh host <remote command>`: runs this host's agent, whatever the
        # client asked to run (which is what a forced command does too).
        self.fake_ssh.write_text(
            "#!/bin/sh\n"
            f'exec {DSG} serve --access-file "{self.access_file}" --log-dir "{self.logs}"\n'
        )
        self.fake_ssh.chmod(0o755)

    @property
    def access_file(self) -> Path:
        return self.top / "access.yml"

    @property
    def logs(self) -> Path:
        return self.top / "logs"

    def grant(self, project: str, role: str, login: str = ME) -> None:
        p = self.projects.setdefault(
            project, {"type": "posix", "mountpoint": str(self.top / "repos" / project)}
        )
        p.setdefault("users", {})[login] = role
        doc: dict[str, Any] = {"projects": self.projects}
        if self.limits:
            doc["limits"] = self.limits
        self.access_file.write_text(yaml.safe_dump(doc))

    def repo(self, project: str = "proj") -> PosixRepository:
        return PosixRepository(self.top / "repos" / project, project)

    def config(self, project: str = "proj", data_dirs: list[str] | None = None) -> ProjectConfig:
        cfg = ProjectConfig(
            name=project,
            repository=RepositoryConfig(
                type="posix", host="repo-host.invalid", mountpoint=str(self.top / "repos")
            ),
        )
        if data_dirs is not None:
            cfg = cfg.model_copy(update={"data_dirs": data_dirs})
        return cfg

    def researcher(self, name: str, project: str = "proj", **kw: Any) -> Researcher:
        """A colleague's working copy; their `dsg` reaches this host through `fake_ssh`
        (the test sets DSG_SSH_COMMAND)."""
        return Researcher(name, self.top / "wc" / name / project, self.top / "cfg" / name,
                          self.config(project, **kw))  # fmt: skip

    def audit_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.logs.iterdir() if f.is_file())

    def session(self, project: str | None = "proj", **hello: Any) -> Peer:
        argv = [DSG, "serve", "--access-file", str(self.access_file), "--log-dir", str(self.logs)]
        return Peer(argv, project, **hello)


class Peer:
    """One agent session driven by hand: `argv` runs the agent (directly, or through ssh)."""

    def __init__(self, argv: list[str], project: str | None, **hello: Any) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdin and self.proc.stdout
        self.w, self.r = self.proc.stdin, self.proc.stdout
        msg = {"op": "hello", "version": PROTOCOL_VERSION, "project": project, **hello}
        self.hello = self.call({k: v for k, v in msg.items() if v is not None or k == "project"})

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        send_json(self.w, msg)  # type: ignore[arg-type]
        return recv_json(self.r)  # type: ignore[arg-type]

    def put_file(self, path: str, data: bytes) -> dict[str, Any]:
        send_json(self.w, {"op": "put_file", "path": path, "size": len(data), "mtime_ns": 0,  # type: ignore[arg-type]
                           "hash": xxhash.xxh3_128_hexdigest(data)}, flush=False)  # fmt: skip
        send_stream(self.w, io.BytesIO(data))  # type: ignore[arg-type]
        return recv_json(self.r)  # type: ignore[arg-type]

    def begin(self, parent: str | None) -> None:
        lock = self.call({"op": "lock", "owner": {"user": "x@y.org", "tx": "tx-abcdef"},
                          "timeout": 5})  # fmt: skip
        assert lock["ok"], lock
        begun = self.call({"op": "begin", "parent": parent, "tx": "tx-abcdef"})
        assert begun["ok"], begun

    def commit(self, message: str = "m", author: str = "x@y.org") -> dict[str, Any]:
        return self.call({"op": "commit", "message": message, "author": author,
                          "author_name": "X"})  # fmt: skip

    def close(self) -> int:
        for f in (self.w,):
            try:
                f.close()
            except OSError:
                pass
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.r.close()
            assert self.proc.stderr is not None
            self.stderr = self.proc.stderr.read().decode(errors="replace")
            self.proc.stderr.close()


def tree_outside_data(root: Path, data_dirs: tuple[str, ...] = ("input", "output", "frozen")) -> dict[str, bytes]:  # fmt: skip
    """Every file of a working copy that is not inside a data dir (nor .dsg/), with content."""
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] == ".dsg" or any(part in data_dirs for part in rel.parts[:-1]):
            continue
        if p.is_file() or p.is_symlink():
            out[str(rel)] = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
    return out
