"""What the repositories on this machine (posix, zfs) share: the flock write lock with
recovery on entry, and reading committed files from a snapshot's directory."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dsg.backends.base import LockOwner, Repository
from dsg.backends.locking import hold_lock
from dsg.core.errors import RepositoryError
from dsg.core.paths import check_path, show


class LocalRepository(Repository):
    name: str
    locked = False
    recovered: list[str]
    stale_holder: str | None

    @property
    def lock_path(self) -> Path:
        raise NotImplementedError

    def _require(self) -> None:
        raise NotImplementedError

    def _recover(self) -> list[str]:
        """Undo what a writer that died left behind; runs under the lock."""
        raise NotImplementedError

    @contextlib.contextmanager
    def lock(self, owner: LockOwner, timeout: float) -> Iterator[None]:
        self._require()
        self.lock_path.parent.mkdir(exist_ok=True)
        with hold_lock(self.lock_path, owner, timeout, self.name) as stale:
            self.stale_holder = stale  # a writer that died holding the lock
            self.locked = True
            try:
                self.recovered = self._recover()
                yield
            finally:
                self.locked = False

    def open_file(self, snapshot: str, path: str) -> BinaryIO:
        check_path(path)
        p = self.snapshot_path(snapshot) / path
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            if not self._has_snapshot(snapshot):
                raise self.no_such_snapshot(snapshot) from None
            raise RepositoryError(f"cannot read {show(path)} from {snapshot}: {e.strerror}") from e
        return io.FileIO(fd, "rb")  # unbuffered: every reader reads big blocks or all
