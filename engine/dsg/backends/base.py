"""Repository backends: where snapshots live.

A backend is a handful of verbs (in the spirit of restic's backend interface). Reads work
on committed snapshots only, at any time, without the lock. Writes happen in a transaction
begun under the repository lock; `commit` checks the head has not moved (compare-and-swap),
assigns the next number and publishes the snapshot atomically.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from dsg.core.errors import DsgError, IntegrityError, RepositoryError
from dsg.core.manifest import Manifest, SnapshotRecord, snap_number
from dsg.core.paths import show
from dsg.core.stored import StoredManifest
from dsg.fs.durable import start_writeback
from dsg.fs.files import copy_hashing, write_new
from dsg.fs.readahead import read_ahead
from dsg.workcopy.rules import ScanRules


@dataclass(frozen=True)
class LockOwner:
    user: str
    tx: str
    operation: str = "sync"
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    login: str = field(default_factory=lambda: _login())
    since: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return (
            f"{self.user} ({self.operation}, {self.login}@{self.host} pid {self.pid}) since {when}"
        )


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


TAG_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def new_tag(
    existing: dict[str, dict[str, str]], name: str, snapshot: str, message: str, author: str
) -> dict[str, str]:
    """Validate a new tag against the existing ones; returns its record."""
    if not TAG_NAME.match(name):
        raise RepositoryError(
            f"invalid tag name {name!r}",
            hint="use lowercase letters, digits, '.', '_' and '-' (e.g. v1.0, report-2026)",
        )
    if name in existing:
        raise RepositoryError(
            f"tag {name} already names {existing[name]['snapshot']}; tags never move",
            hint="choose another name",
        )
    return {
        "snapshot": snapshot,
        "message": message,
        "created_by": author,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_verified(
    src: BinaryIO, dest: str, path: str, size: int, mtime_ns: int, digest: bytes
) -> None:
    """Copy `src` to `dest`, hashing as it goes; keep it only if it is `size` bytes hashing
    to `digest` (invariant: every transferred file is verified at the receiver)."""
    try:
        with open(dest, "wb") as out:
            n, got = copy_hashing(src, out)
            out.flush()
            start_writeback(out.fileno())  # the commit's flush then has less left to write
    except OSError as e:
        raise _store_failed(e, dest, path) from e
    if n != size or got != digest:
        _unlink_quietly(dest)
        check_received(path, n, got, size, digest)
    os.chmod(dest, 0o444)
    os.utime(dest, ns=(mtime_ns, mtime_ns))


def check_received(path: str, n: int, got: bytes, size: int, digest: bytes) -> None:
    """Refuse an upload that is not `size` bytes hashing to `digest`."""
    if n != size or got != digest:
        raise IntegrityError(
            f"{show(path)}: received {n} bytes hashing to {got.hex()}, "
            f"expected {size} bytes hashing to {digest.hex()} "
            "(the file changed during the sync, or the transfer was damaged)",
            hint="run the sync again",
        )


_STORE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def write_bytes_verified(dest: str, data: bytes, path: str, mtime_ns: int) -> None:
    """Store checked bytes as the new file `dest` (read-only, with the file's mtime)."""
    try:
        write_new(dest, data, mtime_ns, _STORE_NEW, 0o600, 0o444)
    except OSError as e:
        raise _store_failed(e, dest, path) from e


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):  # gone already; a full ZFS dataset may refuse unlink
        os.unlink(path)


def _store_failed(e: OSError, dest: str, path: str) -> RepositoryError:
    _unlink_quietly(dest)
    return RepositoryError(
        f"cannot store {show(path)} in the repository: {e.strerror}",
        hint="the repository may be full or read-only; nothing was committed",
    )


class Transaction(ABC):
    """Changes to the repository, invisible to readers until `commit` returns."""

    tx: str
    # Stored objects that `commit` found damaged (no longer hashing to their names) and
    # replaced with a verified upload of the same content; none where a backend cannot tell.
    replaced: Sequence[str] = ()
    # After `commit`, the manifest it wrote, where the repository is on this machine (a
    # sync's new base is that manifest: it need not splice it again); None over SSH.
    committed: StoredManifest | None = None

    @abstractmethod
    def put_file(self, path: str, src: BinaryIO, size: int, mtime_ns: int, digest: bytes) -> None:
        """Store the content read from `src`; raises IntegrityError unless it hashes to
        `digest` and has `size` bytes."""

    @abstractmethod
    def put_link(self, path: str, target: str) -> None: ...

    @abstractmethod
    def restore(self, path: str, snapshot: str) -> None:
        """Put back the content `path` had in an earlier `snapshot`."""

    @abstractmethod
    def delete(self, path: str) -> None: ...

    @abstractmethod
    def commit(
        self,
        message: str,
        author: str,
        author_name: str,
        *,
        login: str = "",
        original_at: str = "",
    ) -> SnapshotRecord:
        """Publish the next snapshot. Returns its record. A transaction with no changes
        may still be committed (init of an empty project). `login`: the account the
        repository host authenticated, recorded beside the claimed author. `original_at`
        (import only): the time the snapshot was first committed elsewhere; it becomes
        `created_at` and the time of this commit `imported_at`."""

    @abstractmethod
    def abort(self) -> None: ...


class Repository(ABC):
    """One project's repository.

    What a caller may read after `lock()` is entered is declared here, not probed: `locked`
    (this object holds the write lock), `recovered` (transactions of a dead writer that entering
    the lock rolled back) and `stale_holder` (that writer's lock note)."""

    name: str
    location: str
    locked: bool = False
    recovered: Sequence[str] = ()
    stale_holder: str | None = None

    # --- lifecycle
    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def create(self, shape: ScanRules | None = None) -> None:
        """Create an empty repository; RepositoryExists if there is one. `shape` (the data
        dirs and ignore rules) is recorded with it: from then on the repository accepts only
        paths inside it."""

    def shape(self) -> ScanRules | None:
        """The project's shape recorded in the repository; None for a repository made before
        shapes were recorded (an admin records one with `dsg admin set-shape`)."""
        return None

    def set_shape(self, shape: ScanRules) -> None:
        """Record the project's shape (an admin action on the repository host)."""
        raise RepositoryError(f"{self.location}: the shape is set on the repository host")

    @abstractmethod
    def destroy_new(self) -> None:
        """Remove what `create` made, after an init that failed. Callers allow it only to the
        session that created the repository (the agent enforces that for remote ones)."""

    # --- reads (committed state only)
    @abstractmethod
    def head(self) -> str | None:
        """The id of the newest committed snapshot (None for an empty repository).
        Raises RepositoryError when it cannot be read -- never guesses."""

    @abstractmethod
    def manifest(self, snapshot: str) -> Manifest: ...

    def no_such_snapshot(self, snapshot: str) -> RepositoryError:
        """The error for a snapshot this repository does not have: it names the snapshot
        and the head, never an internal path."""
        try:
            head = self.head()
        except DsgError:
            head = None
        where = f"head is {head}" if head else "the repository is empty"
        return RepositoryError(
            f"no snapshot {show(snapshot)} ({where})",
            hint="'dsg log' lists the snapshots, 'dsg tags' the tags",
        )

    def _has_snapshot(self, snapshot: str) -> bool:
        """Whether `snapshot` is committed (asked only after a read failed)."""
        try:
            head = self.head()
        except DsgError:
            return True  # the repository's own problem: report the read's error
        return head is not None and 0 < snap_number(snapshot) <= snap_number(head)

    @abstractmethod
    def record(self, snapshot: str) -> SnapshotRecord: ...

    def manifest_bytes(self, snapshot: str) -> bytes:
        """The stored (compressed) manifest of `snapshot`, integrity-checked."""
        return self.manifest(snapshot).to_bytes()

    def manifest_digest(self, snapshot: str) -> str:
        """The digest of `snapshot`'s stored manifest, integrity-checked (may skip parsing)."""
        return self.manifest(snapshot).digest()

    @abstractmethod
    def open_file(self, snapshot: str, path: str) -> BinaryIO:
        """Open a committed file of `snapshot` for reading."""

    def read_files(self, snapshot: str, paths: list[str]) -> Iterator[tuple[str, BinaryIO]]:
        """Open many committed files of `snapshot`, in order (a transport may batch them).
        Each stream must be consumed before the next is taken. The next files are opened
        and fetched from disk while one is read (`readahead`)."""
        with contextlib.closing(read_ahead(paths, lambda p: self.open_file(snapshot, p))) as files:
            for p, f in files:
                with f:
                    yield p, f

    @abstractmethod
    def snapshot_path(self, snapshot: str) -> Path:
        """A read-only directory holding the committed tree of `snapshot`."""

    def mount_snapshot(self, snapshot: str, mountpoint: Path) -> Path:
        """Show `snapshot` read-only at `mountpoint` (default: a symlink to its tree)."""
        os.symlink(self.snapshot_path(snapshot), mountpoint, target_is_directory=True)
        return mountpoint

    def unmount_snapshot(self, mountpoint: Path) -> None:
        if not mountpoint.is_symlink():
            raise RepositoryError(f"{mountpoint} is not a dsg snapshot mount")
        mountpoint.unlink()

    def history(self) -> Iterator[SnapshotRecord]:
        """Records from the head back to s1, following parent links."""
        snap = self.head()
        while snap:
            rec = self.record(snap)
            yield rec
            snap = rec.parent

    # --- tags (names for snapshots; a tag never moves)
    @abstractmethod
    def tags(self) -> dict[str, dict[str, str]]:
        """name -> {snapshot, message, created_by, created_at}."""

    @abstractmethod
    def add_tag(self, name: str, snapshot: str, message: str, author: str) -> dict[str, str]:
        """Tag `snapshot`; takes the lock itself. RepositoryError if the name is taken."""

    # --- writes
    @abstractmethod
    def lock(self, owner: LockOwner, timeout: float) -> AbstractContextManager[None]:
        """Hold the repository's write lock (waiting up to `timeout` seconds). Entering
        also recovers any transaction a dead writer left behind."""

    def begin(self, parent: str | None, tx: str) -> Transaction:
        """Start a transaction on top of `parent`; must hold the lock. HeadMoved if the
        head is not `parent`."""
        from dsg.core.errors import HeadMoved

        if not self.locked:
            raise RepositoryError("internal error: begin() without the repository lock")
        head = self.head()
        if head != parent:
            raise HeadMoved(f"repository head is {head}, expected {parent}")
        return self._transaction(parent, tx)

    def _transaction(self, parent: str | None, tx: str) -> Transaction:
        raise NotImplementedError

    def warm(self) -> None:  # noqa: B027 - optional hook
        """Start connecting without waiting (a remote repository's connection is then made
        while the caller scans the working copy); errors surface at the first request."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or mounts."""
