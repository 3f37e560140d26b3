"""Structured logging: JSON lines with a transaction id, one file per working copy."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

MAX_FIELD = 1024  # characters of one string field: a reason, a path, a hint
MAX_EVENT = 16 << 10  # bytes of one line: a log never grows by more than this per event


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_FIELD:
        return value[:MAX_FIELD] + "…"
    if isinstance(value, list | tuple) and len(value) > 64:
        return [*value[:64], f"… {len(value) - 64} more"]
    return value


def new_tx() -> str:
    return "tx-" + uuid.uuid4().hex[:12]


_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class EventLog:
    """Appends one JSON object per event to `path` (if given). Never raises."""

    def __init__(self, path: Path | None, tx: str, command: str) -> None:
        self.path = path
        self.tx = tx
        self.command = command

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        if self.path is None:
            return
        rec = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "level": level,
            "tx": self.tx,
            "cmd": self.command,
            "event": event,
            "pid": os.getpid(),
            **{k: _bounded(v) for k, v in fields.items()},
        }
        line = orjson.dumps(rec, default=str)
        if len(line) > MAX_EVENT:
            line = orjson.dumps({**{k: rec[k] for k in ("ts", "level", "tx", "cmd", "event")},
                                 "truncated": len(line)})  # fmt: skip
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a link planted at the log's name (committed to git) is not appended to.
            fd = os.open(self.path, _APPEND, 0o666)  # the umask decides, as open() did
            with open(fd, "ab") as f:
                f.write(line + b"\n")
        except OSError:
            pass
