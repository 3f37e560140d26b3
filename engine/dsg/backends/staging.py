"""What posix and zfs transactions share: staging verified uploads (as numbered objects,
unless a subclass names them, see `_upload_name`), recording the changes a commit applies,
and building the new snapshot's record."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

from dsg.backends.base import (
    Repository,
    Transaction,
    check_received,
    write_bytes_verified,
    write_verified,
)
from dsg.core.changes import Change
from dsg.core.errors import ManifestError, PathError, RepositoryError
from dsg.core.faults import crash_point
from dsg.core.manifest import Entry, SnapshotRecord
from dsg.core.paths import check_path, link_target_problem, show
from dsg.core.stored import StoredManifest
from dsg.fs.files import hash_bytes, read_upto
from dsg.fs.writers import Writers

# Small uploads are checked as they arrive, then written through `Writers` (from a few
# threads once the filesystem proves slow), into SPREAD directories of the transaction:
# threads overlap creation latency only across directories (ext4 serializes creations
# within one). At most 64 uploads of <= SMALL_OBJECT bytes wait in memory per session; a
# write that failed is raised at a later put or at commit.
SMALL_OBJECT = 256 << 10
SPREAD = 16


class StagedTransaction(Transaction):
    """Uploads land in `objects/<n mod SPREAD>/<n>` or where `_upload_name` says
    (hash-verified); `changes` is what commit applies."""

    crash_after_put = ""  # the crash point name a subclass registers

    def __init__(self, repo: Repository, parent: str | None, tx: str, objects: Path) -> None:
        self.repo = repo
        self.parent = parent
        self.tx = tx
        self.objects = objects
        self.objects.mkdir(parents=True)
        self.changes: dict[str, Change] = {}
        # path -> where its content is: an upload (objects/...) or, format 1, an older file
        self.sources: dict[str, str] = {}
        self._n = 0
        self._objects_s = str(objects)
        self._spread: set[int] = set()
        self._writers = Writers("dsg-store")

    def _new_object(self) -> str:
        """A new name for an upload: objects/<n mod SPREAD>/<n> (a plain string: this runs
        once per upload)."""
        self._n += 1
        k = self._n % SPREAD
        d = f"{self._objects_s}/{k:x}"
        if k not in self._spread:
            os.makedirs(d, exist_ok=True)
            self._spread.add(k)
        return f"{d}/{self._n}"

    def _upload_name(self, digest: bytes) -> str:
        """Where an upload of content `digest` is staged (a subclass may name it by it)."""
        return self._new_object()

    def put_file(self, path: str, src: BinaryIO, size: int, mtime_ns: int, digest: bytes) -> None:
        check_path(path)
        if size <= SMALL_OBJECT:
            data = read_upto(src, size)
            check_received(path, len(data), hash_bytes(data), size, digest)
            obj = self._upload_name(digest)
            self._writers.submit(write_bytes_verified, obj, data, path, mtime_ns)
        else:
            obj = self._upload_name(digest)
            write_verified(src, obj, path, size, mtime_ns, digest)
        self._staged(path, obj, Entry(path, size, mtime_ns, digest))

    def _staged(self, path: str, obj: str, entry: Entry) -> None:
        self.sources[path] = obj
        self.changes[path] = Change(path, entry)
        crash_point(self.crash_after_put)

    def settle(self) -> None:
        """Wait for every upload handed to a writer thread; raise the first that failed.
        A commit starts with this; an abort too, before it removes the files."""
        self._writers.settle()

    def settle_quietly(self) -> None:
        """For an abort: wait for the writer threads; their failures go with the rest."""
        with contextlib.suppress(Exception):
            self._writers.settle()

    def put_link(self, path: str, target: str) -> None:
        check_path(path)
        problem = link_target_problem(path, target)
        if problem:
            raise PathError(f"{show(path)}: {problem}")
        self.sources.pop(path, None)
        self.changes[path] = Change(path, Entry(path, target=target))

    def delete(self, path: str) -> None:
        check_path(path)
        self.sources.pop(path, None)
        self.changes[path] = Change(path, None)

    def _restored_entry(self, path: str, snapshot: str) -> Entry:
        check_path(path)
        entry = self.repo.manifest(snapshot).get(path)
        if entry is None:
            raise RepositoryError(f"{show(path)} is not in snapshot {snapshot}")
        self.changes[path] = Change(path, entry)
        return entry

    def edited_parent(
        self, parent: StoredManifest, n: int, author: str
    ) -> tuple[StoredManifest, int]:
        """The new snapshot's manifest spliced from the parent's lines, which must be the
        ones the parent's record vouches for, and the bytes its files hold."""
        rec = self.repo.record(self.parent) if self.parent else None
        if rec is not None and rec.manifest_digest != parent.digest:
            raise ManifestError(f"the manifest of {self.parent} does not match its record")
        edited, delta = parent.edit(self.changes.values(), n, author)
        return edited, (rec.total_bytes if rec is not None else 0) + delta

    def new_record(
        self,
        new_id: str,
        digest: str,
        entry_count: int,
        total_bytes: int,
        message: str,
        author: str,
        author_name: str,
        created: str,
        login: str = "",
        original_at: str = "",
    ) -> SnapshotRecord:
        parent_rec = self.repo.record(self.parent) if self.parent else None
        imported = ""
        if original_at:  # an imported snapshot keeps its own date; now is when it came in
            created, imported = original_at, created
        return SnapshotRecord(
            id=new_id,
            parent=self.parent,
            author=author,
            author_name=author_name,
            message=message,
            created_at=created,
            manifest_digest=digest,
            entry_count=entry_count,
            total_bytes=total_bytes,
            tx=self.tx,
            login=login,
            imported_at=imported,
            chain=SnapshotRecord.compute_chain(
                parent_rec.chain if parent_rec else None,
                new_id,
                self.parent,
                author,
                message,
                created,
                digest,
                login,
                imported,
            ),
        )
