"""The server's audit trail: who did what to which project, when.

One JSON object per line in `<log dir>/audit.jsonl` on the repository host, written by the
agent (`dsg serve`, running as the connecting researcher) and by the admin commands. Records
name people, projects, snapshots and counts — never file contents, never file paths (the
names of files can themselves be confidential).

Append-only: every record is a single `write()` on a descriptor opened with `O_APPEND`, so
concurrent agents never interleave or overwrite each other. The dsg_server role pre-creates
the file `root:<dsg users> 0620` (researchers may append, not read) and sets the
append-only attribute (`chattr +a`), so not even its owner can truncate or rewrite it;
logrotate lifts the attribute only around the rename.

Fail closed: when the audit file exists (the host is provisioned) but a session's first
record cannot be written, the agent refuses the session — data must not move unaudited.
Where no audit file exists and the directory is not writable (a developer machine), auditing
is off.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from dsg.core.errors import RepositoryError

AUDIT_FILE = "audit.jsonl"
# Fields a record may never carry, whatever a caller passes (defence in depth).
FORBIDDEN_FIELDS = frozenset({"path", "paths", "data", "content", "contents", "target"})


class AuditError(RepositoryError):
    """The audit trail could not be written where it must be."""


def client_address(environ: dict[str, str] | None = None) -> str | None:
    """The SSH client's address (first field of $SSH_CONNECTION), if any."""
    env = os.environ if environ is None else environ
    conn = env.get("SSH_CONNECTION", "").split()
    return conn[0] if conn else None


def format_record(action: str, fields: dict[str, Any], *, now: float | None = None) -> bytes:
    """One audit line (pure): UTC timestamp with milliseconds, the action, then the fields."""
    bad = FORBIDDEN_FIELDS.intersection(fields)
    if bad:
        raise ValueError(f"audit records never carry {sorted(bad)}")
    t = time.time() if now is None else now
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
    rec = {"ts": ts, "action": action}
    rec.update((k, bounded(v)) for k, v in fields.items() if v is not None)
    line = orjson.dumps(rec, default=str)
    if len(line) > MAX_RECORD:  # never more than a bounded line, whatever a peer sent
        rec = {"ts": ts, "action": action, "truncated": True, "bytes": len(line)}
        line = orjson.dumps(rec)
    return line + b"\n"


MAX_FIELD = 256  # characters of one string field (names, versions, addresses: all shorter)
MAX_ITEMS = 64
MAX_RECORD = 4096


def bounded(value: Any) -> Any:
    """A field as the audit log keeps it: long strings cut, long lists cut."""
    if isinstance(value, str):
        return value if len(value) <= MAX_FIELD else value[:MAX_FIELD] + "…"
    if isinstance(value, list | tuple):
        return [bounded(v) for v in value[:MAX_ITEMS]]
    return value


class AuditLog:
    """Appends audit records to one file; `required` makes a failed write an error."""

    def __init__(self, path: Path | None, *, required: bool = False) -> None:
        self.path = path
        self.required = required and path is not None
        self.host = socket.gethostname()
        self.last_error: str | None = None

    @classmethod
    def in_dir(cls, log_dir: Path | None) -> AuditLog:
        """The host's audit log under `log_dir`: required when the file exists, else
        written only if the directory is writable (created 0660), else off."""
        if log_dir is None:
            return cls(None)
        path = log_dir / AUDIT_FILE
        if path.exists():
            return cls(path, required=True)
        if log_dir.is_dir() and os.access(log_dir, os.W_OK | os.X_OK):
            return cls(path)
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def record(self, action: str, **fields: Any) -> bool:
        """Append one record; False when it could not be written (reason in last_error)."""
        if self.path is None:
            return False
        line = format_record(action, {"host": self.host, **fields})
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = self._open(flags)
            try:
                written = os.write(fd, line)
            finally:
                os.close(fd)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as e:
            self.last_error = f"{self.path}: {e.strerror or e}"
            return False
        return True

    def _open(self, flags: int) -> int:
        assert self.path is not None
        try:
            return os.open(self.path, flags)
        except FileNotFoundError:
            pass
        # Not provisioned (a developer's or the lab's log directory): the first writer creates
        # it group-writable so the project's other members can append too.
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o660)
        except FileExistsError:  # another agent created it meanwhile
            return os.open(self.path, flags)
        os.fchmod(fd, 0o660)
        return fd

    def record_strict(self, action: str, **fields: Any) -> None:
        """Append one record; a required log that cannot be written raises AuditError."""
        if not self.record(action, **fields) and self.required:
            raise AuditError(
                f"cannot write the audit log ({self.last_error}); refusing to go on unaudited",
                hint="an admin must fix the audit log (space on /var/log, its owner, group "
                "and mode: the dsg_server role sets root:<dsg users group> 0620, append-only)",
            )
