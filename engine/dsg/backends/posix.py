"""The posix backend: a content-addressed object store plus per-snapshot manifests, on any
filesystem (the embedded default).

Layout of a repository at `<mountpoint>/<name>/` (format dsg-posix-repo/2):

    repo.json              format marker and project name
    HEAD                   the newest committed snapshot id ("s7"), or "-" when empty
    lock                   flock(2) target; holds the current writer's identity
    objects/ab/cdef...     file contents, read-only, named by their xxh3-128 (32 hex digits,
                           the first two as a directory); shared by every snapshot
    snapshots/sN/.dsg/     manifest.gz + snapshot.json of snapshot N (immutable)
    views/sN/              a browsable tree of snapshot N (hard links into objects/ and
                           symlinks), built on demand by snapmount and validation tools
    txn/<tx>/              a transaction being built (never visible to readers)

A commit costs O(changed files): uploads move into objects/ (an object that already exists
is compared byte for byte, so equal hashes of different bytes are refused, never merged),
then the manifest and record are written, flushed, `rename(2)`d to snapshots/sN, and HEAD
is replaced atomically. Readers follow HEAD only, so they see N or N+1. A writer that died
leaves txn/ leftovers, a snapshots/sK with K above HEAD (both removed under the lock by the
next writer) or objects no snapshot names yet (harmless: the retry reuses them).

Format dsg-posix-repo/1 (a hard-linked tree of every file in each snapshots/sN, O(files)
per commit) is still read and written, so repositories made by earlier versions keep
working unchanged.
"""

from __future__ import annotations

import filecmp
import io
import os
import shutil
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from dsg.backends.base import LockOwner, Transaction, new_tag
from dsg.backends.local import LocalRepository
from dsg.backends.staging import StagedTransaction
from dsg.core.changes import apply_changes
from dsg.core.errors import (
    HeadMoved,
    IntegrityError,
    ManifestError,
    RepositoryError,
    RepositoryExists,
    RepositoryNotFound,
)
from dsg.core.faults import crash_point, register
from dsg.core.manifest import Entry, Manifest, SnapshotRecord, snap_id, snap_number
from dsg.core.paths import check_path, show
from dsg.core.stored import StoredManifest
from dsg.fs.durable import atomic_write, flush_written, fsync_dir, read_manifest, sync_filesystem
from dsg.workcopy.rules import ScanRules

REPO_FORMAT = "dsg-posix-repo/2"  # content-addressed objects, manifests per snapshot
REPO_FORMAT_TREES = "dsg-posix-repo/1"  # a hard-linked tree per snapshot (still supported)
LAYOUTS = {REPO_FORMAT_TREES: 1, REPO_FORMAT: 2}
EMPTY_HEAD = "-"
STALE_VIEW_SECONDS = 3600  # a half-built view older than this was left by a dead process

register(
    "posix.after_put",
    "posix.after_tree",
    "posix.before_publish",
    "posix.after_snapshot_rename",
    "posix.after_head",
)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_snapshot_id(snapshot: str) -> str:
    if snap_number(snapshot) < 1:
        raise RepositoryError(f"invalid snapshot id {snapshot!r} (expected s1, s2, ...)")
    return snapshot


class PosixRepository(LocalRepository):
    def __init__(self, root: Path, name: str, *, create_layout: int = 2) -> None:
        self.root = Path(root)
        self.name = name
        self.location = str(self.root)
        self.locked = False
        self._manifests: dict[str, Manifest] = {}
        self._manifests_lock = threading.Lock()  # a transaction prefetches in a thread
        self._create_layout = create_layout  # what `create` makes (1 only to test upgrades)
        self._layout: int | None = None

    @property
    def layout(self) -> int:
        """1: a hard-linked tree per snapshot; 2: content-addressed objects (repo.json)."""
        if self._layout is None:
            self._require()
            p = self.root / "repo.json"
            try:
                fmt = orjson.loads(p.read_bytes()).get("format")
            except (OSError, orjson.JSONDecodeError, AttributeError) as e:
                raise RepositoryError(f"{p} is unreadable: {e}") from e
            if fmt not in LAYOUTS:
                raise RepositoryError(
                    f"{self.root} has repository format {fmt!r}, which this dsg does not know",
                    hint="a newer dsg made it: install the group's newer dsg wheel "
                    "(docs/user-guide.md, Install dsg on your laptop)",
                )
            self._layout = LAYOUTS[fmt]
        return self._layout

    def object_path(self, digest_hex: str) -> str:
        return f"{self.root}/objects/{digest_hex[:2]}/{digest_hex[2:]}"

    # --- layout helpers
    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def lock_path(self) -> Path:
        return self.root / "lock"

    def snapshot_root(self, snapshot: str) -> Path:
        return self.snapshots_dir / check_snapshot_id(snapshot)

    # --- lifecycle
    def exists(self) -> bool:
        return (self.root / "repo.json").is_file()

    def create(self, shape: ScanRules | None = None) -> None:
        if self.exists():
            raise RepositoryExists(f"a dsg repository already exists at {self.root}")
        base = self.root.parent
        if not base.is_dir():
            raise RepositoryError(
                f"repository base directory {base} does not exist",
                hint="create it (or fix --repo-path / repository.mountpoint) and retry",
            )
        try:
            self.root.mkdir()
            # Members (the group) only: others never enter a repository dsg made itself. One
            # the admin made keeps its mode and ACLs (dsg_access: a read group may enter).
            self.root.chmod(0o2770)
        except FileExistsError as e:
            if any(self.root.iterdir()):
                raise RepositoryExists(
                    f"{self.root} exists and is not empty; refusing to turn it into a repository"
                ) from e
        except OSError as e:
            raise RepositoryError(f"cannot create {self.root}: {e.strerror}") from e
        (self.root / "snapshots").mkdir(exist_ok=True)
        (self.root / "txn").mkdir(exist_ok=True)
        fmt = REPO_FORMAT_TREES if self._create_layout == 1 else REPO_FORMAT
        if fmt == REPO_FORMAT:
            (self.root / "objects").mkdir(exist_ok=True)
        atomic_write(self.root / "HEAD", EMPTY_HEAD.encode() + b"\n")
        if shape is not None:
            self.set_shape(shape)
        meta = {"format": fmt, "name": self.name, "created_at": utc_now()}
        atomic_write(self.root / "repo.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2))

    def shape(self) -> ScanRules | None:
        try:
            data = (self.root / "shape.json").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RepositoryError(f"cannot read {self.root}/shape.json: {e.strerror}") from e
        return ScanRules.from_json(data, origin=f"{self.root}/shape.json")

    def set_shape(self, shape: ScanRules) -> None:
        atomic_write(self.root / "shape.json", shape.to_json())

    def destroy_new(self) -> None:
        """Remove a repository that `create` made moments ago (failed init)."""
        shutil.rmtree(self.root, ignore_errors=True)

    # --- reads
    def _require(self) -> None:
        if not self.exists():
            raise RepositoryNotFound(
                f"no dsg repository at {self.root}",
                hint="check repository.mountpoint and name in .dsgconfig.yml, "
                "or create the repository with 'dsg init'",
            )

    def head(self) -> str | None:
        self._require()
        try:
            text = (self.root / "HEAD").read_text(encoding="ascii").strip()
        except FileNotFoundError as e:
            raise RepositoryError(
                f"repository {self.root} has no HEAD file; refusing to guess its state",
                hint="an admin can restore HEAD to the newest complete snapshot "
                "(see docs/troubleshooting.md)",
            ) from e
        except (OSError, UnicodeDecodeError) as e:
            raise RepositoryError(f"cannot read {self.root}/HEAD: {e}") from e
        if text == EMPTY_HEAD:
            return None
        if snap_number(text) < 1:
            raise RepositoryError(f"{self.root}/HEAD is corrupt ({text[:40]!r})")
        if not (self.snapshots_dir / text / ".dsg" / "snapshot.json").is_file():
            raise RepositoryError(f"{self.root}/HEAD names {text} but that snapshot is missing")
        return text

    def manifest(self, snapshot: str) -> Manifest:
        with self._manifests_lock:
            cached = self._manifests.get(snapshot)  # committed snapshots never change
            if cached is not None:
                return cached  # (asked once per file a download reads: no stat here)
            self._require()
            try:
                m = read_manifest(self.snapshot_root(snapshot) / ".dsg" / "manifest.gz")
            except ManifestError:
                if not self._has_snapshot(snapshot):
                    raise self.no_such_snapshot(snapshot) from None
                raise
            if m.snapshot != snapshot:
                raise ManifestError(f"manifest of {snapshot} claims to be {m.snapshot}")
            if len(self._manifests) >= 2:
                self._manifests.pop(next(iter(self._manifests)))
            self._manifests[snapshot] = m
            return m

    def _manifest_file(self, snapshot: str) -> tuple[bytes, Path]:
        self._require()
        p = self.snapshot_root(snapshot) / ".dsg" / "manifest.gz"
        try:
            return p.read_bytes(), p
        except OSError as e:
            if not self._has_snapshot(snapshot):
                raise self.no_such_snapshot(snapshot) from None
            raise ManifestError(f"cannot read manifest {p}: {e.strerror}") from e

    def _verified_manifest_file(self, snapshot: str) -> tuple[bytes, str]:
        data, p = self._manifest_file(snapshot)
        _, header, snap = Manifest.verified_digest(data, origin=f"manifest {p}")
        if snap != snapshot:
            raise ManifestError(f"manifest of {snapshot} claims to be {snap}")
        return data, header["digest"]

    def manifest_digest(self, snapshot: str) -> str:
        return self._verified_manifest_file(snapshot)[1]

    def stored_manifest(self, snapshot: str) -> StoredManifest:
        data, p = self._manifest_file(snapshot)
        stored = StoredManifest.from_bytes(data, origin=f"manifest {p}")
        if stored.snapshot != snapshot:
            raise ManifestError(f"manifest of {snapshot} claims to be {stored.snapshot}")
        return stored

    def manifest_bytes(self, snapshot: str) -> bytes:
        return self._verified_manifest_file(snapshot)[0]

    def record(self, snapshot: str) -> SnapshotRecord:
        self._require()
        p = self.snapshot_root(snapshot) / ".dsg" / "snapshot.json"
        try:
            data = p.read_bytes()
        except OSError as e:
            if not self._has_snapshot(snapshot):
                raise self.no_such_snapshot(snapshot) from None
            raise RepositoryError(f"cannot read snapshot record {p}: {e.strerror}") from e
        rec = SnapshotRecord.from_bytes(data, origin=str(p))
        if rec.id != snapshot:
            raise ManifestError(f"{p} claims to be {rec.id}")
        return rec

    def snapshot_path(self, snapshot: str) -> Path:
        """A directory holding the committed tree of `snapshot` (for snapmount): the
        snapshot itself in format 1, a view built from its manifest in format 2."""
        if self.layout == 1:
            return self.snapshot_root(snapshot)
        return self._view(snapshot)

    def open_file(self, snapshot: str, path: str) -> BinaryIO:
        if self.layout == 1:
            return super().open_file(snapshot, path)
        check_path(path)
        e = self.manifest(snapshot).get(path)
        if e is None or e.hash is None:
            what = "not in that snapshot" if e is None else "a symlink, not a file"
            raise RepositoryError(f"cannot read {show(path)} from {snapshot}: {what}")
        try:
            fd = os.open(self.object_path(e.hash.hex()), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as err:
            raise RepositoryError(
                f"cannot read {show(path)} from {snapshot}: its content object is "
                f"unreadable ({err.strerror})",
                hint="run 'dsg validate-snapshot' and ask your admin",
            ) from err
        return io.FileIO(fd, "rb")  # unbuffered: every reader reads big blocks or all

    def _view(self, snapshot: str) -> Path:
        views = self.root / "views"
        view = views / check_snapshot_id(snapshot)
        if view.is_dir():
            return view
        m = self.manifest(snapshot)  # digest-checked
        tmp = views / f".{snapshot}.{uuid.uuid4().hex[:12]}"
        try:
            views.mkdir(exist_ok=True)
            tmp.mkdir()
        except OSError as e:
            raise RepositoryError(
                f"cannot build a browsable view of {snapshot} in {views}: {e.strerror}",
                hint="a project member with write access can build it (dsg snapmount); "
                "'dsg snapfetch' gets single files without it",
            ) from e
        try:
            made: set[str] = set()
            for e in m.entries:
                slash = e.path.rfind("/")
                if slash > 0 and e.path[:slash] not in made:
                    os.makedirs(f"{tmp}/{e.path[:slash]}", exist_ok=True)
                    made.add(e.path[:slash])
                dest = f"{tmp}/{e.path}"
                if e.target is not None:
                    os.symlink(e.target, dest)
                else:
                    assert e.hash is not None
                    _link_or_copy(self.object_path(e.hash.hex()), dest)
            os.symlink(f"../../snapshots/{snapshot}/.dsg", tmp / ".dsg")
            try:
                os.rename(tmp, view)
            except OSError:  # another process built it first
                if not view.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return view

    # --- tags: tags.json, replaced atomically under the lock
    def tags(self) -> dict[str, dict[str, str]]:
        self._require()
        try:
            data = orjson.loads((self.root / "tags.json").read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as e:
            raise RepositoryError(f"{self.root}/tags.json is unreadable: {e}") from e
        return data.get("tags", {})

    def add_tag(self, name: str, snapshot: str, message: str, author: str) -> dict[str, str]:
        with self.lock(LockOwner(user=author, tx="tag", operation="tag"), 60):
            self.record(snapshot)  # must exist
            tags = self.tags()
            tag = new_tag(tags, name, snapshot, message, author)
            tags[name] = tag
            doc = {"format": "dsg-tags/1", "tags": dict(sorted(tags.items()))}
            atomic_write(self.root / "tags.json", orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            return tag

    # --- format 1 -> 2
    def upgrade(self, owner: LockOwner, *, dry_run: bool, timeout: float = 60) -> dict[str, Any]:
        """Convert a format-1 repository (a tree per snapshot) to format 2 in place.

        Under the write lock: every distinct content of every snapshot is hash-checked
        and hard-linked into objects/ (O(distinct bytes) read once), the filesystem is
        flushed, repo.json switches to format 2, then the now unread per-snapshot trees are
        removed. Interrupted at any point, running it again finishes the job: format 2
        ignores leftover tree files, and objects already present are skipped."""
        head = self.head()
        snapshots = [snap_id(n) for n in range(1, snap_number(head) + 1)]
        result: dict[str, Any] = {
            "repository": str(self.root),
            "format": REPO_FORMAT if self.layout == 2 else REPO_FORMAT_TREES,
            "snapshots": len(snapshots),
        }
        if self.layout == 2:
            trees = [s for s in snapshots if _tree_leftovers(self.snapshot_root(s))]
            if not trees:
                return {**result, "upgraded": False, "reason": "already format 2"}
        distinct: dict[str, tuple[str, str, int]] = {}
        for s in snapshots:
            for e in self.manifest(s).entries:
                if e.hash is not None:
                    distinct.setdefault(e.hash.hex(), (s, e.path, e.size))
        result.update(objects=len(distinct), bytes=sum(size for _, _, size in distinct.values()))
        if dry_run:
            return {**result, "upgraded": False, "dry_run": True}
        with self.lock(owner, timeout):
            if self.head() != head:
                raise HeadMoved(f"repository head moved to {self.head()} during the upgrade")
            (self.root / "objects").mkdir(exist_ok=True)
            for digest_hex, (s, path, _) in distinct.items():
                dest = self.object_path(digest_hex)
                if os.path.exists(dest):
                    continue
                src = str(self.snapshot_root(s) / path)
                got = _hash_path(src)
                if got != digest_hex:
                    raise IntegrityError(
                        f"{show(path)} in {s} hashes to {got}, its manifest says {digest_hex}; "
                        "nothing was converted",
                        hint="run 'dsg validate-snapshot --snapshot " + s + "' and repair the "
                        "file from a backup first",
                    )
                os.makedirs(dest[: dest.rfind("/")], exist_ok=True)
                _link_or_copy(src, dest)
            sync_filesystem(self.root)
            meta = orjson.loads((self.root / "repo.json").read_bytes())
            meta.update(format=REPO_FORMAT, upgraded_at=utc_now())
            atomic_write(self.root / "repo.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2))
            self._layout = 2
            for s in snapshots:
                for child in _tree_leftovers(self.snapshot_root(s)):
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        return {**result, "format": REPO_FORMAT, "upgraded": True}

    # --- writes
    def _recover(self) -> list[str]:
        """Remove what an interrupted writer left (under the lock)."""
        removed: list[str] = []
        txn = self.root / "txn"
        if txn.is_dir():
            for d in txn.iterdir():
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"txn/{d.name}")
        txn.mkdir(exist_ok=True)
        head_n = snap_number(self.head())
        for d in self.snapshots_dir.iterdir():
            n = snap_number(d.name)
            if n > head_n or (n == 0 and d.name.startswith(".")):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"snapshots/{d.name}")
        views = self.root / "views"
        if views.is_dir():
            for d in views.iterdir():
                stale = time.time() - d.lstat().st_mtime > STALE_VIEW_SECONDS
                if (d.name.startswith(".") and stale) or snap_number(d.name) > head_n:
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(f"views/{d.name}")
        return removed

    def _transaction(self, parent: str | None, tx: str) -> Transaction:
        return PosixTransaction(self, parent, tx)


class PosixTransaction(StagedTransaction):
    crash_after_put = "posix.after_put"

    def __init__(self, repo: PosixRepository, parent: str | None, tx: str) -> None:
        self.dir = repo.root / "txn" / tx
        super().__init__(repo, parent, tx, self.dir / ".dsg" / "objects")
        self.repo: PosixRepository = repo
        self._parent_manifest: Manifest | StoredManifest | None = None
        self._parent_error: BaseException | None = None
        # The commit needs the parent's manifest (parsing it is O(files)); load it while the
        # uploads arrive, which mostly wait on the network.
        self._prefetch = threading.Thread(target=self._load_parent, daemon=True)
        self._prefetch.start()
        # Format 2: the first upload of a content whose prefix directory (objects/<ab>) the
        # repository lacks is staged under its object name, in <ab> of the transaction, and
        # commit moves such a directory in whole: an initial upload of n files makes at most
        # 256 renames, not n. Other uploads are numbered and stored one by one.
        self._by_name = repo.layout == 2
        self._repo_has: dict[str, bool] = {}  # prefix -> objects/<prefix> exists
        # Digests staged under their object name: the entry's own bytes, not a hex copy (81
        # bytes a file: 81 MB of an initial upload of a million files).
        self._named: set[bytes] = set()
        self._whole: dict[str, set[str]] = {}  # prefix -> its named uploads staged so far
        self.replaced: list[str] = []  # see Transaction.replaced

    def _load_parent(self) -> None:
        try:
            if not self.parent:
                self._parent_manifest = (
                    Manifest.empty() if self.repo.layout == 1 else StoredManifest.empty()
                )
            elif self.repo.layout == 1:  # its commit builds the whole tree from the manifest
                self._parent_manifest = self.repo.manifest(self.parent)
            else:
                self._parent_manifest = self.repo.stored_manifest(self.parent)
        except BaseException as e:  # re-raised in the committing thread
            self._parent_error = e

    def parent_manifest(self) -> Manifest | StoredManifest:
        self._prefetch.join()
        if self._parent_error is not None:
            raise self._parent_error
        assert self._parent_manifest is not None
        return self._parent_manifest

    def _upload_name(self, digest: bytes) -> str:
        if not self._by_name:
            return super()._upload_name(digest)
        hx = digest.hex()
        prefix = hx[:2]
        has = self._repo_has.get(prefix)
        if has is None:
            has = self._repo_has[prefix] = os.path.lexists(f"{self.repo.root}/objects/{prefix}")
        if has or digest in self._named:
            return super()._upload_name(digest)
        if prefix not in self._whole:
            os.mkdir(f"{self._objects_s}/{prefix}")  # two hex digits: never a numbered one
            self._whole[prefix] = set()
        self._named.add(digest)
        return f"{self._objects_s}/{prefix}/{hx[2:]}"

    def _staged(self, path: str, obj: str, entry: Entry) -> None:
        super()._staged(path, obj, entry)
        if self._by_name and entry.hash is not None:
            hx = entry.hash.hex()
            if obj == f"{self._objects_s}/{hx[:2]}/{hx[2:]}":
                self._whole[hx[:2]].add(obj)

    def restore(self, path: str, snapshot: str) -> None:
        entry = self._restored_entry(path, snapshot)
        self.sources.pop(path, None)
        if entry.is_link:
            return
        if self.repo.layout == 1:
            self.sources[path] = f"{self.repo.snapshot_root(snapshot)}/{path}"
            return
        assert entry.hash is not None
        if not os.path.isfile(self.repo.object_path(entry.hash.hex())):
            raise RepositoryError(
                f"cannot restore {show(path)} from {snapshot}: its content object is missing",
                hint="run 'dsg validate-snapshot --snapshot " + snapshot + "' and ask your admin",
            )

    def commit(
        self,
        message: str,
        author: str,
        author_name: str,
        *,
        login: str = "",
        original_at: str = "",
    ) -> SnapshotRecord:
        self.settle()
        repo = self.repo
        head = repo.head()
        if head != self.parent:  # compare-and-swap, checked again under the lock
            raise HeadMoved(f"repository head moved to {head} (expected {self.parent})")
        n = snap_number(self.parent) + 1
        new_id = snap_id(n)
        parent = self.parent_manifest()
        if isinstance(parent, Manifest):  # format 1
            manifest = apply_changes(parent, self.changes.values(), n, author)
            self._build_tree(manifest)
            blob = manifest.to_bytes()  # first: the record then reuses its digest
            digest, count, total = manifest.digest(), len(manifest), manifest.total_bytes()
        else:
            edited, total = self.edited_parent(parent, n, author)
            stored, dirs = self._store_objects()
            blob = edited.to_bytes()
            digest, count = edited.digest, len(edited)
        crash_point("posix.after_tree")
        record = self.new_record(
            new_id,
            digest,
            count,
            total,
            message,
            author,
            author_name,
            utc_now(),
            login,
            original_at,
        )
        meta = self.dir / ".dsg"
        shutil.rmtree(self.objects)
        atomic_write(meta / "manifest.gz", blob)
        atomic_write(meta / "snapshot.json", record.to_bytes())
        # The snapshot is published only once everything it needs is durable: the new
        # objects and their directories (format 2), or the whole tree (format 1).
        if repo.layout == 1:
            sync_filesystem(self.dir)
        else:
            flush_written(stored, [*dirs, str(self.dir)], self.dir)
        crash_point("posix.before_publish")
        os.rename(self.dir, repo.snapshots_dir / new_id)
        fsync_dir(repo.snapshots_dir)
        crash_point("posix.after_snapshot_rename")
        atomic_write(repo.root / "HEAD", new_id.encode() + b"\n")
        crash_point("posix.after_head")
        if not isinstance(parent, Manifest):
            self.committed = edited
        return record

    def _store_objects(self) -> tuple[list[str], set[str]]:
        """Move this transaction's uploads into objects/, by content (O(changed files);
        O(prefix directories) for an initial upload). Returns the objects they became and
        the directories whose entries changed."""
        made: set[str] = set()
        stored: list[str] = []
        objects = f"{self.repo.root}/objects"
        moved: set[str] = set()
        cut = len(self._objects_s)
        referenced = set(self.sources.values()) if self._whole else set()
        for prefix, names in self._whole.items():
            src_dir, dest_dir = f"{self._objects_s}/{prefix}", f"{objects}/{prefix}"
            # Whole only if it holds exactly these uploads, each still wanted (a path put
            # twice leaves its first upload behind) and the repository still lacks it.
            if (
                not names
                or not names <= referenced
                or len(os.listdir(src_dir)) != len(names)
                or os.path.lexists(dest_dir)
            ):
                continue
            os.rename(src_dir, dest_dir)
            made.add(dest_dir)
            moved |= names
            stored.extend(objects + name[cut:] for name in names)
        for path, src in self.sources.items():
            if src in moved:
                continue
            entry = self.changes[path].entry
            assert entry is not None and entry.hash is not None
            dest = self.repo.object_path(entry.hash.hex())
            if os.path.exists(dest):
                # Equal hashes must mean equal bytes: compare before sharing the object.
                if not filecmp.cmp(src, dest, shallow=False):
                    if _hash_path(dest) == entry.hash.hex():  # a sound object: a collision
                        raise IntegrityError(
                            f"{show(path)} has the same xxh3-128 as an object already in "
                            "the repository but different bytes; refusing to store it",
                            hint="nothing was committed; report this to the dsg maintainers",
                        )
                    # The object no longer hashes to its name (a crash before its flush,
                    # a failing disk): the verified upload replaces it, which also mends
                    # every snapshot that uses it. The agent reports it.
                    os.replace(src, dest)
                    self.replaced.append(dest)
                    stored.append(dest)
                    continue
                os.unlink(src)
                # Flushed too: a writer that died after storing it may not have.
                stored.append(dest)
                continue
            d = dest[: dest.rfind("/")]
            if d not in made:
                os.makedirs(d, exist_ok=True)
                made.add(d)
            os.rename(src, dest)
            stored.append(dest)
        if made:
            made.add(objects)  # it may have gained a directory
        return stored, made

    def _build_tree(self, manifest: Manifest) -> None:
        # Plain strings, not Path objects: this loop runs once per file of the snapshot.
        parent_root = str(self.repo.snapshot_root(self.parent)) if self.parent else None
        root = str(self.dir)
        objects = str(self.objects) + "/"
        made: set[str] = set()
        for e in manifest.entries:
            path = e.path
            slash = path.rfind("/")
            if slash > 0:
                d = path[:slash]
                if d not in made:
                    os.makedirs(f"{root}/{d}", exist_ok=True)
                    made.add(d)
            dest = f"{root}/{path}"
            if e.target is not None:
                os.symlink(e.target, dest)
                continue
            src = self.sources.get(path)
            if src is not None and src.startswith(objects):  # an upload: move it
                os.rename(src, dest)
                continue
            if src is None:
                assert parent_root is not None
                _link_or_copy(f"{parent_root}/{path}", dest)
            else:
                _link_or_copy(src, dest)

    def abort(self) -> None:
        self.settle_quietly()
        shutil.rmtree(self.dir, ignore_errors=True)


def _tree_leftovers(snapshot_dir: Path) -> list[Path]:
    """What a format-1 snapshot directory holds besides its metadata (.dsg)."""
    return [p for p in snapshot_dir.iterdir() if p.name != ".dsg"]


def _hash_path(path: str) -> str:
    from dsg.fs.files import hash_file

    return hash_file(path).hex()


def _link_or_copy(src: str, dest: str) -> None:
    """Hardlink an unchanged file into the new snapshot; copy it where the kernel refuses
    (fs.protected_hardlinks forbids linking another user's read-only file in a shared
    repository)."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except PermissionError:
        shutil.copy2(src, dest, follow_symlinks=False)
        os.chmod(dest, 0o444)
