"""Named crash points for fault-injection tests.

`crash_point("posix.after_snapshot_rename")` does nothing unless the environment variable
DSG_CRASH_AT names that point, in which case the process dies on the spot with
os._exit(137), as if killed: no cleanup handlers, no finally blocks. Tests use it to prove
that the next command recovers. In-process hooks (`hooks`) let tests run code at a point.
"""

from __future__ import annotations

import os
from collections.abc import Callable

POINTS: list[str] = []
hooks: dict[str, Callable[[], None]] = {}
# Read once: a crash point is passed once per file in a transaction, and os.environ's lookup
# (it encodes the key) was ~7% of an initial upload's CPU. Tests set it for a new process.
_CRASH_AT = os.environ.get("DSG_CRASH_AT")


def register(*names: str) -> None:
    for n in names:
        if n not in POINTS:
            POINTS.append(n)


def crash_point(name: str) -> None:
    hook = hooks.get(name)
    if hook is not None:
        hook()
    if name == _CRASH_AT:
        os._exit(137)
