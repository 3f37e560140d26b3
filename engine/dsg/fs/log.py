"""Structured logging: JSON lines with a transaction id, one file per working copy."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import orjson


def new_tx() -> str:
    return "tx-" + uuid.uuid4().hex[:12]


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
            **fields,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(orjson.dumps(rec, default=str) + b"\n")
        except OSError:
            pass
