"""The zfs backend: one dataset per project, every sync a ZFS snapshot `@sN`.

The dataset is the one mounted at `<mountpoint>/<name>`; the admin creates it (Ansible,
`playbooks/add-project.yml`), `dsg init` fills it. Its live tree holds the data of the head
plus `.dsg/`:

    .dsg/repo.json        format marker
    .dsg/manifest.gz      the head's manifest   } part of every @sN, so each snapshot
    .dsg/snapshot.json    the head's record     } carries its own manifest and record
    .dsg/txn/<tx>/        staged uploads of a transaction in progress (the "dirty" marker)

A commit applies the staged changes to the live tree under the lock, writes the new
manifest and record, removes the marker and takes `zfs snapshot -o dsg:...=... ds@sN+1`:
that snapshot *is* the commit. A writer that dies before it leaves the marker or a record
newer than the head; the next writer rolls the live tree back to `@sN` (`zfs rollback`).
Readers use the committed snapshot: `.zfs/snapshot/sN` where the platform has it, a
read-only clone where it does not (zfs-fuse). The sync path needs only what `zfs allow` can
delegate: snapshot, rollback, hold, userprop (clones only on zfs-fuse, in the lab).

The lock lives outside the dataset (`<mountpoint>/.dsg-locks/<name>.lock`) so that a
rollback never touches the file a writer holds locked.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

import orjson

from dsg.backends.base import LockOwner, Transaction, new_tag, write_verified
from dsg.backends.local import LocalRepository
from dsg.backends.posix import check_snapshot_id, utc_now
from dsg.backends.staging import StagedTransaction
from dsg.core.errors import (
    HeadMoved,
    ManifestError,
    RepositoryError,
    RepositoryExists,
    RepositoryNotFound,
)
from dsg.core.faults import crash_point, register
from dsg.core.manifest import Manifest, SnapshotRecord, snap_id, snap_number
from dsg.core.stored import StoredManifest
from dsg.fs.durable import atomic_write, read_manifest, sync_filesystem
from dsg.workcopy.rules import ScanRules
from dsg.zfs.ops import Snapshot, Zfs

REPO_FORMAT = "dsg-zfs-repo/1"
HOLD_TAG = "dsg"
MAX_MESSAGE = 4000  # a record must fit in one ZFS user property (8191 bytes)

register("zfs.after_put", "zfs.after_apply", "zfs.before_snapshot", "zfs.after_snapshot")


def _record_props(rec: SnapshotRecord) -> dict[str, str]:
    return {
        "dsg:id": rec.id,
        "dsg:author": rec.author,
        "dsg:tx": rec.tx,
        "dsg:record": orjson.dumps(rec.to_dict()).decode(),
    }


class ZfsRepository(LocalRepository):
    def __init__(self, root: Path, name: str, pool: str, zfs: Zfs | None = None) -> None:
        self.root = Path(root)
        self.name = name
        self.pool = pool
        self.zfs = zfs or Zfs.from_env()
        self.location = str(self.root)
        self._dataset: str | None = None
        self._snaps: list[Snapshot] | None = None
        self._clones: dict[str, tuple[str, Path]] = {}
        self._manifests: dict[str, Manifest] = {}
        self.locked = False
        self.recovered: list[str] = []
        self.stale_holder: str | None = None

    # --- dataset discovery
    @property
    def dataset(self) -> str:
        if self._dataset is None:
            rows = self.zfs.get_rows(["mountpoint"], [self.pool], recursive=True)
            found = [r.name for r in rows if "@" not in r.name and r.value == str(self.root)]
            if not found:
                raise RepositoryNotFound(
                    f"no ZFS dataset of pool {self.pool} is mounted at {self.root}",
                    hint=f"an admin creates it: 'ansible-playbook -i inventories/<env> "
                    f"playbooks/add-project.yml -e project={self.name}', or by hand "
                    f"'zfs create -o mountpoint={self.root} {self.pool}/<parent>/{self.name}' "
                    "with the project group as owner",
                )
            self._dataset = found[0]
        return self._dataset

    @property
    def meta(self) -> Path:
        return self.root / ".dsg"

    @property
    def lock_path(self) -> Path:
        return self.root.parent / ".dsg-locks" / f"{self.name}.lock"

    # --- lifecycle
    def exists(self) -> bool:
        try:
            self.dataset  # noqa: B018 - raises when missing
        except RepositoryNotFound:
            return False
        return (self.meta / "repo.json").is_file()

    def create(self, shape: ScanRules | None = None) -> None:
        self.dataset  # noqa: B018 - a clear error when the admin has not created it
        if (self.meta / "repo.json").exists():
            raise RepositoryExists(f"a dsg repository already exists at {self.root}")
        if self._dsg_snapshots():
            raise RepositoryExists(f"dataset {self.dataset} already has dsg snapshots")
        leftovers = [p.name for p in self.root.iterdir() if p.name not in (".dsg", "lost+found")]
        if leftovers:
            raise RepositoryExists(
                f"dataset {self.dataset} ({self.root}) is not empty: {', '.join(leftovers[:5])}"
            )
        self.meta.mkdir(exist_ok=True)
        (self.meta / "txn").mkdir(exist_ok=True)
        self.lock_path.parent.mkdir(exist_ok=True)
        if shape is not None:
            self.set_shape(shape)
        meta = {"format": REPO_FORMAT, "name": self.name, "created_at": utc_now()}
        atomic_write(self.meta / "repo.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2))

    # --- the project's shape: one user property on the dataset (survives rollback, travels
    # with zfs send -p)
    def shape(self) -> ScanRules | None:
        raw = self.zfs.user_properties(self.dataset).get("dsg:shape")
        if not raw:
            return None
        return ScanRules.from_json(raw.encode(), origin=f"dsg:shape on {self.dataset}")

    def set_shape(self, shape: ScanRules) -> None:
        value = shape.to_json().decode()
        if len(value.encode()) > 8000:
            raise RepositoryError("the project's data dirs and ignore rules exceed 8 KB")
        self.zfs.set_property(self.dataset, "dsg:shape", value)

    def destroy_new(self) -> None:
        """Empty the dataset again after a failed init (the dataset itself stays)."""
        for snap in self._dsg_snapshots():
            with contextlib.suppress(RepositoryError):
                self.zfs.release(snap.name, HOLD_TAG)
            with contextlib.suppress(RepositoryError):
                self.zfs.destroy_snapshot(snap.name)
        for p in self.root.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    # --- snapshots
    def _dsg_snapshots(self, refresh: bool = False) -> list[Snapshot]:
        if self._snaps is None or refresh:
            snaps = self.zfs.list_snapshots(self.dataset)
            self._snaps = sorted(
                (s for s in snaps if snap_number(s.snapname) > 0 and s.snapname[1:].isdigit()),
                key=lambda s: snap_number(s.snapname),
            )
        return self._snaps

    def _require(self) -> None:
        if not (self.meta / "repo.json").is_file():
            raise RepositoryNotFound(
                f"no dsg repository at {self.root} (dataset {self.dataset})",
                hint="create it with 'dsg init' in the project",
            )

    def head(self) -> str | None:
        self._require()
        snaps = self._dsg_snapshots(refresh=True)
        if not snaps:
            if (self.meta / "snapshot.json").exists():
                raise RepositoryError(
                    f"dataset {self.dataset} has a committed record but no @sN snapshots; "
                    "refusing to guess its state",
                    hint="an admin must restore the snapshots (see docs/troubleshooting.md)",
                )
            return None
        numbers = [snap_number(s.snapname) for s in snaps]
        if numbers != list(range(1, len(numbers) + 1)):
            missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
            raise RepositoryError(
                f"dataset {self.dataset} is missing snapshots {missing[:5]}: history is broken",
                hint="restore them from the backup host before syncing",
            )
        return snaps[-1].snapname

    def record(self, snapshot: str) -> SnapshotRecord:
        self._require()
        check_snapshot_id(snapshot)
        for s in self._dsg_snapshots():
            if s.snapname == snapshot:
                raw = s.user_props.get("dsg:record")
                if raw is None:
                    break
                return SnapshotRecord.from_bytes(raw.encode(), origin=f"{s.name} dsg:record")
        else:
            self._dsg_snapshots(refresh=True)
            if not any(s.snapname == snapshot for s in self._snaps or []):
                raise self.no_such_snapshot(snapshot)
        path = self._snapshot_dir(snapshot) / ".dsg" / "snapshot.json"
        return SnapshotRecord.from_bytes(path.read_bytes(), origin=str(path))

    def history(self) -> Iterator[SnapshotRecord]:
        self.head()  # refresh and check the chain of names
        for s in reversed(self._dsg_snapshots()):
            yield self.record(s.snapname)

    def _live_matches(self, snapshot: str) -> bool:
        """Is the live .dsg/ the committed state of `snapshot` (no writer mid-way)?"""
        try:
            live = SnapshotRecord.from_bytes((self.meta / "snapshot.json").read_bytes())
        except (OSError, ManifestError):
            return False
        return live.id == snapshot and not self._dirty()

    def manifest(self, snapshot: str) -> Manifest:
        cached = self._manifests.get(snapshot)  # committed snapshots never change
        if cached is None:
            cached = self._read_manifest(snapshot)
            if len(self._manifests) >= 2:
                self._manifests.pop(next(iter(self._manifests)))
            self._manifests[snapshot] = cached
        return cached

    def _read_manifest(self, snapshot: str) -> Manifest:
        self._require()
        rec = self.record(snapshot)
        if self._live_matches(snapshot):
            with contextlib.suppress(ManifestError):
                m = read_manifest(self.meta / "manifest.gz")
                if m.snapshot == snapshot and m.digest() == rec.manifest_digest:
                    return m
        m = read_manifest(self._snapshot_dir(snapshot) / ".dsg" / "manifest.gz")
        if m.snapshot != snapshot or m.digest() != rec.manifest_digest:
            raise ManifestError(f"manifest of {self.dataset}@{snapshot} does not match its record")
        return m

    def stored_manifest(self, snapshot: str) -> StoredManifest:
        """The manifest's lines, checked against the record without parsing each entry."""
        self._require()
        rec = self.record(snapshot)
        if self._live_matches(snapshot):
            with contextlib.suppress(ManifestError, OSError):
                s = StoredManifest.from_bytes((self.meta / "manifest.gz").read_bytes())
                if s.snapshot == snapshot and s.digest == rec.manifest_digest:
                    return s
        p = self._snapshot_dir(snapshot) / ".dsg" / "manifest.gz"
        try:
            data = p.read_bytes()
        except OSError as e:
            raise ManifestError(f"cannot read manifest {p}: {e.strerror}") from e
        s = StoredManifest.from_bytes(data, origin=f"manifest of {self.dataset}@{snapshot}")
        if s.snapshot != snapshot or s.digest != rec.manifest_digest:
            raise ManifestError(f"manifest of {self.dataset}@{snapshot} does not match its record")
        return s

    def manifest_digest(self, snapshot: str) -> str:
        cached = self._manifests.get(snapshot)
        return cached.digest() if cached is not None else self.stored_manifest(snapshot).digest

    def _snapshot_dir(self, snapshot: str) -> Path:
        """A read-only directory with the committed tree of `snapshot`."""
        check_snapshot_id(snapshot)
        if self.zfs.platform.snapshot_dir:
            return self.root / ".zfs" / "snapshot" / snapshot
        if snapshot in self._clones:
            return self._clones[snapshot][1]
        # zfs-fuse has no .zfs/snapshot: a read-only clone, destroyed by close().
        parent, _, leaf = self.dataset.rpartition("/")
        tag = uuid.uuid4().int % 10**9
        clone = f"{parent}/{leaf}_dsgread_{snapshot}_p{os.getpid()}_{tag}"
        where = self.root.parent / ".dsg-read" / clone.rpartition("/")[2]
        self.zfs.clone(f"{self.dataset}@{snapshot}", clone, readonly=True, mountpoint=where)
        if not self._clones:  # clean up even if the caller forgets close()
            weakref.finalize(self, _destroy_clones, self.zfs, self._clones)
        self._clones[snapshot] = (clone, where)
        return where

    def snapshot_path(self, snapshot: str) -> Path:
        return self._snapshot_dir(snapshot)

    def mount_snapshot(self, snapshot: str, mountpoint: Path) -> Path:
        if self.zfs.platform.snapshot_dir:
            return super().mount_snapshot(snapshot, mountpoint)
        # zfs-fuse: a read-only clone mounted there, kept until snapumount.
        self.record(snapshot)
        parent, _, leaf = self.dataset.rpartition("/")
        clone = f"{parent}/{leaf}_dsgmount_{snapshot}_{uuid.uuid4().hex[:8]}"
        self.zfs.clone(f"{self.dataset}@{snapshot}", clone, readonly=True, mountpoint=mountpoint)
        return mountpoint

    def unmount_snapshot(self, mountpoint: Path) -> None:
        if mountpoint.is_symlink():
            return super().unmount_snapshot(mountpoint)
        rows = self.zfs.get_rows(["mountpoint"], [self.pool], recursive=True)
        clones = [r.name for r in rows if r.value == str(mountpoint) and "_dsgmount_" in r.name]
        if not clones:
            raise RepositoryError(f"{mountpoint} is not a dsg snapshot mount")
        self.zfs.destroy_clone(clones[0])
        with contextlib.suppress(OSError):
            mountpoint.rmdir()

    def close(self) -> None:
        _destroy_clones(self.zfs, self._clones)
        if not self.zfs.platform.snapshot_dir and self._dataset is not None:
            self._reap_stale_clones()

    def _destroy_clone(self, clone: str, where: Path) -> None:
        _destroy_clones(self.zfs, {"": (clone, where)})

    def _reap_stale_clones(self) -> list[str]:
        """Destroy read clones whose process died (killed before its close())."""
        parent, _, leaf = self.dataset.rpartition("/")
        pattern = re.compile(re.escape(leaf) + r"_dsgread_s\d+_p(\d+)_\d+$")
        reaped = []
        with contextlib.suppress(RepositoryError):
            for name in self.zfs.list_datasets(parent, depth=1):
                m = pattern.match(name.rpartition("/")[2])
                if m and not _pid_alive(int(m.group(1))):
                    where = self.root.parent / ".dsg-read" / name.rpartition("/")[2]
                    self._destroy_clone(name, where)
                    reaped.append(name)
        return reaped

    # --- tags: one user property on the dataset (travels with zfs send -p)
    def tags(self) -> dict[str, dict[str, str]]:
        self._require()
        raw = self.zfs.user_properties(self.dataset).get("dsg:tags")
        if not raw:
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise RepositoryError(f"dsg:tags on {self.dataset} is unreadable") from e

    def add_tag(self, name: str, snapshot: str, message: str, author: str) -> dict[str, str]:
        with self.lock(LockOwner(user=author, tx="tag", operation="tag"), 60):
            self.record(snapshot)
            tags = self.tags()
            tag = new_tag(tags, name, snapshot, message, author)
            tags[name] = tag
            value = orjson.dumps(dict(sorted(tags.items()))).decode()
            if len(value.encode()) > 8000:
                raise RepositoryError("too many tags for one ZFS property (8 KB)")
            self.zfs.set_property(self.dataset, "dsg:tags", value)
            return tag

    # --- writes
    def _dirty(self) -> bool:
        txn = self.meta / "txn"
        return txn.is_dir() and any(txn.iterdir())

    def _recover(self) -> list[str]:
        """Roll back what a writer that died before its snapshot left in the live tree."""
        head = self.head()
        live_ok = True
        if head is None:
            live_ok = not self._dirty() and not (self.meta / "snapshot.json").exists()
        else:
            live_ok = self._live_matches(head)
        recovered: list[str] = []
        if not live_ok:
            if head is None:
                recovered.append("emptied an interrupted first commit")
                keep = {"repo.json"}
                for p in self.root.iterdir():
                    if p.name == ".dsg":
                        for q in p.iterdir():
                            if q.name not in keep:
                                _remove(q)
                    else:
                        _remove(p)
            else:
                destroyed = self.zfs.rollback(f"{self.dataset}@{head}", destroy_later=True)
                recovered.append(f"rolled back to @{head}")
                recovered += [f"destroyed {d}" for d in destroyed]
        (self.meta / "txn").mkdir(exist_ok=True)
        if not self.zfs.platform.snapshot_dir:
            recovered += [f"destroyed stale clone {c}" for c in self._reap_stale_clones()]
        return recovered

    def _transaction(self, parent: str | None, tx: str) -> Transaction:
        return ZfsTransaction(self, parent, tx)


def _destroy_clones(zfs: Zfs, clones: dict[str, tuple[str, Path]]) -> None:
    for clone, where in clones.values():
        with contextlib.suppress(RepositoryError, ValueError):
            zfs.destroy_clone(clone)
        with contextlib.suppress(OSError):
            where.rmdir()
    clones.clear()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


class ZfsTransaction(StagedTransaction):
    crash_after_put = "zfs.after_put"

    def __init__(self, repo: ZfsRepository, parent: str | None, tx: str) -> None:
        self.dir = repo.meta / "txn" / tx
        super().__init__(repo, parent, tx, self.dir)
        self.repo: ZfsRepository = repo

    def restore(self, path: str, snapshot: str) -> None:
        entry = self._restored_entry(path, snapshot)
        if not entry.is_link:  # copied: a snapshot's blocks cannot be linked into the live tree
            obj = self._new_object()
            with self.repo.open_file(snapshot, path) as src:
                write_verified(src, obj, path, entry.size, entry.mtime, entry.hash)  # type: ignore[arg-type]
            self.sources[path] = obj

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
        if len(message.encode()) > MAX_MESSAGE:
            raise RepositoryError(f"snapshot message longer than {MAX_MESSAGE} bytes")
        head = repo.head()
        if head != self.parent:
            raise HeadMoved(f"repository head moved to {head} (expected {self.parent})")
        n = snap_number(self.parent) + 1
        new_id = snap_id(n)
        parent = repo.stored_manifest(self.parent) if self.parent else StoredManifest.empty()
        manifest, total = self.edited_parent(parent, n, author)
        self._apply(parent)
        crash_point("zfs.after_apply")
        record = self.new_record(
            new_id,
            manifest.digest,
            len(manifest),
            total,
            message,
            author,
            author_name,
            utc_now(),
            login,
            original_at,
        )
        atomic_write(repo.meta / "manifest.gz", manifest.to_bytes())
        atomic_write(repo.meta / "snapshot.json", record.to_bytes())
        shutil.rmtree(self.dir)
        sync_filesystem(repo.root)
        crash_point("zfs.before_snapshot")
        name = repo.zfs.snapshot(repo.dataset, new_id, _record_props(record))
        crash_point("zfs.after_snapshot")
        with contextlib.suppress(RepositoryError):  # history protection; not essential
            repo.zfs.hold(name, HOLD_TAG)
        repo._snaps = None
        self.committed = manifest
        return record

    def _apply(self, parent: StoredManifest) -> None:
        """Make the live tree the new snapshot's tree: deletions first, then puts."""
        root = self.repo.root
        for ch in self.changes.values():
            old = parent.get(ch.path)
            if old is not None and (ch.entry is None or ch.entry.is_link or old.is_link):
                p = root / ch.path
                if p.is_symlink() or p.is_file():
                    p.unlink()
                _prune_empty(root, ch.path)
        for ch in self.changes.values():
            if ch.entry is None:
                continue
            dest = root / ch.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if ch.entry.is_link:
                tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.dsg-tmp")
                os.symlink(ch.entry.target, tmp)  # type: ignore[arg-type]
                os.replace(tmp, dest)
            else:
                os.replace(self.sources[ch.path], dest)

    def abort(self) -> None:
        """Undo everything: the next lock holder rolls back; do it now if we can."""
        self.settle_quietly()
        with contextlib.suppress(RepositoryError, OSError):
            head = self.repo.head()
            if head is not None:
                self.repo.zfs.rollback(f"{self.repo.dataset}@{head}", destroy_later=True)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)


def _prune_empty(root: Path, path: str) -> None:
    parts = path.split("/")[:-1]
    while parts:
        d = root.joinpath(*parts)
        try:
            d.rmdir()
        except OSError:
            return
        parts.pop()
