"""The repository write lock: flock(2) on a file, with the holder's identity inside.

The kernel releases a flock when its holder dies, so a crashed writer never leaves a lock
that needs breaking by hand. The identity (user, host, pid, time, transaction) is written
into the file for "locked by ..." messages; a new holder that finds an old identity knows
the previous writer died mid-way and reports it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from dsg.backends.base import LockOwner
from dsg.core.errors import LockTimeout, RepositoryError


def _read_holder(fd: int) -> str | None:
    try:
        data = os.pread(fd, 4096, 0)
        if not data:
            return None
        return LockOwner(**orjson.loads(data)).describe()
    except (OSError, ValueError, TypeError):
        return "an unknown writer"


@contextlib.contextmanager
def hold_lock(path: Path, owner: LockOwner, timeout: float, name: str) -> Iterator[str | None]:
    """Hold the lock at `path`, waiting up to `timeout` s. Yields the identity a dead
    previous holder left (or None)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    except OSError as e:
        raise RepositoryError(
            f"cannot open the lock file {path}: {e.strerror}",
            hint="the repository host's dsg directories may be missing or not writable by you",
        ) from e
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= deadline:
                holder = _read_holder(fd)
                raise LockTimeout(
                    f"repository {name} is locked by {holder or 'another writer'}",
                    hint="wait for that sync to finish and retry "
                    "(a lock whose process died is released automatically)",
                )
            time.sleep(0.05)
        stale = _read_holder(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(owner.to_dict()), 0)
        os.fsync(fd)
        try:
            yield stale
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the flock
