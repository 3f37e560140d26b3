"""Execute: carry out a plan -- the repository side in one transaction, then the local side.

Order matters for the invariants:
1. Repository changes are staged, verified by hash at the receiver and committed as one
   snapshot (compare-and-swap on the head, under the repository lock).
2. Local changes follow, file by file, each written to a temp name and renamed into place
   after its hash is checked. A local file about to be replaced or deleted that is not
   exactly the content the plan saw (or that a resolution overrides) is first moved to a
   conflict copy, so nothing local is ever lost.
3. Only then does the caller record the new base. An interruption anywhere leaves the old
   base, and the next run's three-way compare finishes the job.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import stat as stat_mod
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import BinaryIO

from dsg.backends.base import Repository
from dsg.core.errors import IntegrityError, LocalIOError, PathError
from dsg.core.faults import crash_point, register
from dsg.core.manifest import Entry, SnapshotRecord
from dsg.core.paths import show
from dsg.core.plan import Action, Item, Plan
from dsg.core.stored import StoredManifest
from dsg.fs.durable import CREATE_NEW, sync_filesystem
from dsg.fs.files import copy_hashing, hash_bytes, hash_file, read_upto, write_new
from dsg.fs.readahead import read_ahead
from dsg.fs.writers import Writers
from dsg.workcopy.hashcache import HashCache, StatKey, stat_key
from dsg.workcopy.scan import is_racy

register("execute.after_remote_commit", "execute.after_first_local", "execute.before_base")

# Called with the bytes just moved. A display may also listen for the plan's totals
# (`expect(files, bytes)`, from `announce`) and for each file done (`file_done()`).
Progress = Callable[[int], None]


def transfer_totals(plan: Plan) -> tuple[int, int]:
    """The files (links aside) and bytes a plan moves, both ways."""
    files = nbytes = 0
    for it in plan.items:
        e = {Action.upload: it.local, Action.download: it.remote, Action.restore: it.base}.get(
            it.action
        )
        if e is not None and not e.is_link:
            files += 1
            nbytes += e.size
    return files, nbytes


def announce(progress: Progress | None, plan: Plan) -> None:
    expect = getattr(progress, "expect", None)
    if expect is not None:
        expect(*transfer_totals(plan))


def _file_done(progress: Progress | None) -> None:
    done = getattr(progress, "file_done", None)
    if done is not None:
        done()


# Many small downloads are written through `Writers` (from a few threads once the disk
# proves slow), requested interleaved across their directories (`interleave_by_dir`): ext4
# serializes creations within one directory, so threads overlap latency only across them
# (docs/performance.md). A file of at most SMALL_FILE bytes is read whole and hash-checked
# before it is handed over; larger ones stream to disk in this thread.
SMALL_FILE = 1 << 20


def run_remote(
    repo: Repository,
    plan: Plan,
    root: Path,
    tx: str,
    message: str,
    author: str,
    author_name: str,
    progress: Progress | None = None,
) -> tuple[SnapshotRecord, StoredManifest | None]:
    """Stage every repository-side action of `plan` and commit it as the next snapshot.
    Returns its record and, from a repository on this machine, its manifest."""
    announce(progress, plan)
    txn = repo.begin(plan.remote_id, tx)
    try:
        # Uploads first (one path is in one item only, so the order changes nothing),
        # their files opened ahead so the disk fetches the next while one is sent.
        uploads = [it.local for it in plan.items if it.action == Action.upload]
        for e in uploads:
            assert e is not None
            if e.is_link:
                txn.put_link(e.path, e.target)  # type: ignore[arg-type]
        files = read_ahead([e for e in uploads if not e.is_link], partial(_open_upload, root))  # type: ignore[union-attr]
        with contextlib.closing(files):
            for e, f in files:
                with f:
                    txn.put_file(e.path, f, e.size, e.mtime, e.hash)  # type: ignore[arg-type]
                if progress:
                    progress(e.size)
                    _file_done(progress)
        for it in plan.items:
            if it.action == Action.delete_remote:
                txn.delete(it.path)
            elif it.action == Action.restore and not it.base_matches_remote():
                if it.base is None:
                    txn.delete(it.path)
                elif it.base.is_link:
                    txn.put_link(it.path, it.base.target or "")
                else:
                    txn.restore(it.path, f"s{it.base.snap}")
        record = txn.commit(message, author, author_name)
    except BaseException:
        txn.abort()
        raise
    crash_point("execute.after_remote_commit")
    return record, txn.committed


def _open_upload(root: Path, e: Entry) -> BinaryIO:
    try:
        fd = os.open(f"{root}/{e.path}", os.O_RDONLY | os.O_NOFOLLOW)  # once per upload
    except OSError as err:
        raise IntegrityError(
            f"{show(e.path)} cannot be read for upload ({err.strerror}); "
            "it changed during the sync",
            hint="run the sync again",
        ) from err
    # Unbuffered: every reader of an upload reads in large blocks or all at once, and a
    # buffered file object per file cost ~4% of an initial upload's CPU.
    return io.FileIO(fd, "rb")


def conflict_copy_name(path: str, user: str, when: datetime | None = None) -> str:
    """`dir/data.csv` -> `dir/data.dsg-conflict-20261129T201500Z-alice.csv`."""
    when = when or datetime.now(UTC)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    tag = re.sub(r"[^A-Za-z0-9]+", "_", user.split("@")[0]) or "user"
    head, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension (or a leading-dot name)
        stem, dot, ext = name, "", ""
    new = f"{stem}.dsg-conflict-{stamp}-{tag}{dot}{ext}"
    return f"{head}/{new}" if head else new


class LocalApplier:
    """Applies the local side of a plan inside the working copy at `root`."""

    def __init__(
        self,
        root: Path,
        repo: Repository,
        cache: HashCache,
        user: str,
        tx: str,
        progress: Progress | None = None,
    ) -> None:
        self.root = root
        self._root_s = str(root)
        self.repo = repo
        self.cache = cache
        self.user = user
        self.tx = tx
        self.progress = progress
        self.backups: list[str] = []
        self.wrote_files = False
        self._writers = Writers("dsg-write")
        # Parent directories already checked (or made) in this run: real directories, not
        # links. Nothing this run does turns a directory into anything else.
        self._dirs_ok: set[str] = set()

    # --- checks
    def _abs(self, path: str) -> Path:
        """`path` in the working copy, refusing a parent that is a file or a symlink (a
        link there would redirect the write outside the working copy)."""
        return Path(self._checked(path))

    def _checked(self, path: str) -> str:
        """`_abs` as a plain string (the per-file download path)."""
        parent = path.rpartition("/")[0]
        if parent in self._dirs_ok:
            return f"{self._root_s}/{path}"
        cur = self._root_s
        complete = True
        for part in parent.split("/") if parent else ():
            cur = f"{cur}/{part}"
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                complete = False
                break
            if not stat_mod.S_ISDIR(st.st_mode):
                raise PathError(
                    f"cannot write {show(path)}: {show(cur[len(self._root_s) + 1 :])} "
                    "is not a directory here",
                    hint="move that file or link aside and sync again",
                )
        if complete:
            self._dirs_ok.add(parent)
        return f"{self._root_s}/{path}"

    def _temp(self, p: str) -> str:
        """Where a download of `p` is written before it is renamed into place: a new name
        nobody can guess (the tx id is in logs and lock files others read), created with
        O_EXCL|O_NOFOLLOW, so a link planted there is never written through."""
        head, _, name = p.rpartition("/")
        return f"{head}/.{name}.dsg-tmp-{self.tx}-{secrets.token_hex(8)}"

    def matches(self, path: str, expected: Entry | None) -> bool:
        """Is the file on disk exactly `expected` (None = absent)?"""
        p = self.root / path
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return expected is None
        if expected is None:
            return False
        if stat_mod.S_ISLNK(st.st_mode):
            return expected.is_link and os.readlink(p) == expected.target
        if not stat_mod.S_ISREG(st.st_mode) or expected.is_link:
            return False
        key = stat_key(st)
        digest = self.cache.lookup(path, key)
        if digest is None:
            digest = hash_file(p)
            if not is_racy(st.st_ctime_ns, time.time_ns()):  # as a scan would (scan.py)
                self.cache.store(path, key, digest)
        return digest == expected.hash

    def backup(self, path: str) -> str:
        """Move the local file at `path` to a conflict copy; returns the copy's path."""
        copy = conflict_copy_name(path, self.user)
        n = 1
        while os.path.lexists(self.root / copy):
            n += 1
            copy = conflict_copy_name(path + f"~{n}", self.user)
        os.rename(self.root / path, self.root / copy)
        self.backups.append(copy)
        return copy

    def _make_room(self, path: str, expected: Entry | None, force_backup: bool) -> None:
        p = self.root / path
        if not os.path.lexists(p):
            return
        if os.path.isdir(p) and not os.path.islink(p):
            raise PathError(
                f"cannot replace directory {show(path)} with a file",
                hint="move the directory aside and sync again",
            )
        if force_backup or not self.matches(path, expected):
            self.backup(path)

    # --- actions
    def delete(self, it: Item, expected: Entry | None, force_backup: bool) -> None:
        p = self._abs(it.path)
        if not os.path.lexists(p):
            return
        if force_backup or not self.matches(it.path, expected):
            self.backup(it.path)
        else:
            os.unlink(p)

    def prepare_fetch(
        self, it: Item, entry: Entry, expected: Entry | None, force_backup: bool
    ) -> bool:
        """Make room for a download; False when nothing needs to be transferred."""
        # Plain strings, not Path objects: this runs once per downloaded file.
        p = self._checked(it.path)
        parent = it.path.rpartition("/")[0]
        if parent not in self._dirs_ok:
            os.makedirs(p.rpartition("/")[0], exist_ok=True)
            self._dirs_ok.add(parent)
        if os.path.lexists(p):  # a fresh clone's files are absent: one lstat, no more
            if self.matches(it.path, entry):
                return False  # already there (an earlier interrupted run got this far)
            self._make_room(it.path, expected, force_backup)
        if entry.is_link:
            tmp = self._temp(p)
            os.symlink(entry.target, tmp)  # type: ignore[arg-type]
            os.replace(tmp, p)
            return False
        return True

    def receive(self, it: Item, entry: Entry, snapshot: str, src: BinaryIO) -> None:
        """Write one downloaded file: temp name, hash check, mtime, rename into place. A
        small file is read whole and checked here, then written through `Writers` (maybe
        by a thread); `settle` waits for those writes, and run_local settles before it
        returns or raises."""
        p = f"{self._root_s}/{it.path}"
        if entry.size <= SMALL_FILE:
            data = read_upto(src, SMALL_FILE)
            _check(it.path, entry, snapshot, len(data), hash_bytes(data))
            if self.progress:
                self.progress(len(data))
            path, digest = it.path, entry.hash
            self._writers.submit(
                self._write,
                p,
                data,
                entry.mtime,
                on_done=lambda key: self.cache.store(path, key, digest),  # type: ignore[arg-type]
            )
            self.wrote_files = True
            return
        tmp = self._temp(p)
        try:
            with os.fdopen(os.open(tmp, _WRITE_NEW, 0o666), "wb") as out:
                n, got = copy_hashing(src, out, self.progress)
            _check(it.path, entry, snapshot, n, got)
            os.utime(tmp, ns=(entry.mtime, entry.mtime))
            os.replace(tmp, p)
        except OSError as e:
            with_suppress_unlink(tmp)
            raise _naming(e, p) from e
        except BaseException:
            with_suppress_unlink(tmp)
            raise
        self.cache.store(it.path, stat_key(os.lstat(p)), entry.hash)  # type: ignore[arg-type]
        self.wrote_files = True

    def _write(self, p: str, data: bytes, mtime: int) -> StatKey:
        """In a writer thread: one checked download to its temp name, then into place."""
        tmp = self._temp(p)
        try:
            write_new(tmp, data, mtime, _WRITE_NEW, 0o666)
            os.replace(tmp, p)
        except OSError as e:
            with_suppress_unlink(tmp)
            raise _naming(e, p) from e
        except BaseException:
            with_suppress_unlink(tmp)
            raise
        return stat_key(os.lstat(p))

    def settle(self) -> None:
        """Wait until every download handed to a writer thread is on disk (and in the hash
        cache); raise the first that failed."""
        self._writers.settle()


_WRITE_NEW = CREATE_NEW  # a new file at a new name: never through a planted link


def _naming(e: OSError, p: str) -> OSError:
    """`e` naming the file being downloaded (a write on a descriptor names none; the temp
    name means nothing to the user)."""
    if e.filename is None or ".dsg-tmp-" in str(e.filename):
        return OSError(e.errno, e.strerror, p)
    return e


def _check(path: str, entry: Entry, snapshot: str, n: int, got: bytes) -> None:
    if n != entry.size or got != entry.hash:
        raise IntegrityError(
            f"{show(path)} from {snapshot} does not match its manifest "
            f"({n} bytes, hash {got.hex()}; expected {entry.size} bytes, "
            f"{entry.hash_hex})",
            hint="the repository copy may be damaged: run 'dsg validate-snapshot' "
            "and tell your admin",
        )


def interleave_by_dir(paths: list[str]) -> list[str]:
    """`paths` reordered round-robin over their parent directories (each directory's own
    order kept), so consecutive files, written by different threads, are in different
    directories."""
    groups: dict[str, deque[str]] = {}
    for p in paths:
        groups.setdefault(p.rpartition("/")[0], deque()).append(p)
    out: list[str] = []
    queues = list(groups.values())
    while queues:
        for q in queues:
            out.append(q.popleft())
        queues = [q for q in queues if q]
    return out


def with_suppress_unlink(p: Path | str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def run_local(applier: LocalApplier, plan: Plan, head: str | None) -> None:
    """Apply the local side of `plan`; downloads come from snapshot `head`."""
    announce(applier.progress, plan)
    first = True
    deletes: list[tuple[Item, Entry | None, bool]] = []
    fetches: list[tuple[Item, Entry, str, Entry | None, bool]] = []
    for it in plan.items:
        if it.action == Action.delete_local:
            deletes.append((it, it.local, it.backup))
        elif it.action == Action.download:
            assert it.remote is not None and head is not None
            fetches.append((it, it.remote, head, it.local, it.backup))
        elif it.action == Action.restore:
            if it.base is None:
                deletes.append((it, it.local, it.backup))
            else:
                fetches.append((it, it.base, f"s{it.base.snap}", it.local, it.backup))
    for it, expected, backup in deletes:
        applier.delete(it, expected, backup)
        if first:
            crash_point("execute.after_first_local")
            first = False
    by_snapshot: dict[str, list[tuple[Item, Entry]]] = {}
    for it, entry, snap, expected, backup in fetches:
        if applier.prepare_fetch(it, entry, expected, backup):
            by_snapshot.setdefault(snap, []).append((it, entry))
    # still to write, for a full disk's message: how much space the rest needs
    left_files = sum(len(items) for items in by_snapshot.values())
    left_bytes = sum(entry.size for items in by_snapshot.values() for _, entry in items)
    try:
        try:
            for snap, items in by_snapshot.items():
                wanted = {it.path: (it, entry) for it, entry in items}
                files = applier.repo.read_files(snap, interleave_by_dir(list(wanted)))
                with contextlib.closing(files):  # closed at once if a file fails its check
                    for path, src in files:
                        it, entry = wanted[path]
                        applier.receive(it, entry, snap, src)
                        left_files -= 1
                        left_bytes -= entry.size
                        _file_done(applier.progress)
                        if first:
                            crash_point("execute.after_first_local")  # the first is written
                            first = False
        except BaseException:
            with contextlib.suppress(Exception):  # what is already raising comes first
                applier.settle()
            raise
        applier.settle()
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise LocalIOError.from_oserror(
                e, needed=max(left_bytes, 0), files=max(left_files, 0)
            ) from e
        raise
    if applier.wrote_files:
        # downloaded bytes are on disk before the base says they are there
        sync_filesystem(applier.root)
