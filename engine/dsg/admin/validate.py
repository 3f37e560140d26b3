"""Integrity checks (validate-config, -file, -snapshot, -chain) and local cleanup (clean).

Everything reads the repository through the `Repository` interface only, so each check
works the same on posix, zfs and over SSH.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import xxhash

from dsg.backends.base import Repository
from dsg.core.errors import ConfigError, DsgError, RepositoryError
from dsg.core.manifest import Entry, Manifest, SnapshotRecord, snap_id, snap_number
from dsg.fs.durable import atomic_write
from dsg.fs.files import CHUNK, hash_file
from dsg.sync.history import ChainProblem, check_link
from dsg.workcopy.config import (
    PROJECT_CONFIG,
    USER_CONFIG,
    ProjectConfig,
    find_project_root,
    is_local_host,
    load_project_config,
    load_user_config,
    user_config_dirs,
)
from dsg.workcopy.rules import CONFLICT_COPY
from dsg.workcopy.workspace import Workspace

PROGRESS_FORMAT = "dsg-validate/1"
SAVE_EVERY = 5.0  # seconds between progress saves during a run
CHUNK_FILES = 256  # most files asked of the repository at once
CHUNK_BYTES = 64 << 20  # ... and about this many bytes (a time box overshoots by one chunk)


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def hash_stream(f: BinaryIO) -> tuple[int, bytes]:
    """(bytes read, xxh3-128 digest) of a stream, read to its end."""
    h = xxhash.xxh3_128()
    n = 0
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    return n, h.digest()


# --- validate-config ---------------------------------------------------------------------


@dataclass
class ConfigProblem:
    file: str
    severity: str  # error | warning
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "severity": self.severity, "message": self.message}

    def __str__(self) -> str:
        return f"{self.severity}: {self.file}: {self.message}"


@dataclass
class ConfigReport:
    project_file: str | None = None
    project: ProjectConfig | None = None
    user_files: list[str] = field(default_factory=list)
    user_id: str | None = None
    problems: list[ConfigProblem] = field(default_factory=list)

    @property
    def errors(self) -> list[ConfigProblem]:
        return [p for p in self.problems if p.severity == "error"]

    def to_dict(self) -> dict[str, Any]:
        p = self.project
        return {
            "project_config": self.project_file,
            "project": None
            if p is None
            else {
                "name": p.name,
                "repository": p.repository.model_dump(exclude_none=True),
                "transport": p.repository.transport,
                "repo_path": p.repo_path,
                "data_dirs": p.data_dirs,
            },
            "user_configs": self.user_files,
            "user_id": self.user_id,
            "problems": [x.to_dict() for x in self.problems],
            "valid": not self.errors,
        }


def validate_config(start: Path | None = None) -> ConfigReport:
    """Load and validate the project's .dsgconfig.yml and the user's dsg.yml files."""
    rep = ConfigReport()
    try:
        root = find_project_root(start)
    except ConfigError as e:
        rep.problems.append(ConfigProblem(PROJECT_CONFIG, "error", e.message))
        root = None
    if root is not None:
        path = root / PROJECT_CONFIG
        rep.project_file = str(path)
        try:
            rep.project = load_project_config(path)
        except ConfigError as e:
            details = e.details if isinstance(e.details, list) else None
            for msg in details or [e.message]:
                rep.problems.append(ConfigProblem(str(path), "error", str(msg)))
    if rep.project is not None:
        r = rep.project.repository
        if is_local_host(r.host) and not Path(r.mountpoint).is_dir():
            rep.problems.append(
                ConfigProblem(
                    rep.project_file or PROJECT_CONFIG,
                    "warning",
                    f"repository mountpoint {r.mountpoint} does not exist on this host",
                )
            )
    rep.user_files = [
        str(d / USER_CONFIG) for d in user_config_dirs() if (d / USER_CONFIG).is_file()
    ]
    try:
        rep.user_id = load_user_config().user_id
    except ConfigError as e:
        where = rep.user_files[-1] if rep.user_files else USER_CONFIG
        details = e.details if isinstance(e.details, list) else None
        for msg in details or [e.message]:
            rep.problems.append(ConfigProblem(where, "error", str(msg)))
    return rep


# --- validate-file -----------------------------------------------------------------------


def describe(e: Entry | None) -> dict[str, Any] | None:
    if e is None:
        return None
    if e.is_link:
        return {"type": "link", "target": e.target}
    return {"type": "file", "size": e.size, "hash": e.hash_hex}


def local_state(path: Path) -> dict[str, Any] | None:
    """What the working copy holds at `path`, hashed afresh (no hash cache)."""
    if path.is_symlink():
        return {"type": "link", "target": os.readlink(path)}
    if not path.exists():
        return None
    if not path.is_file():
        return {"type": "other"}
    size = path.stat().st_size
    return {"type": "file", "size": size, "hash": hash_file(path).hex()}


@dataclass
class FileCheck:
    path: str
    against: str  # "base sN" or "sN"
    expected: dict[str, Any] | None
    local: dict[str, Any] | None
    repository: dict[str, Any] | None = None  # the repository's copy, when read

    @property
    def match(self) -> bool:
        if self.expected is None or self.local != self.expected:
            return False
        return self.repository is None or self.repository == self.expected

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "against": self.against,
            "match": self.match,
            "expected": self.expected,
            "local": self.local,
            "repository": self.repository,
        }


def validate_file(
    ws: Workspace, rel: str, repo: Repository | None, snapshot: str | None
) -> FileCheck:
    """Compare the local file with the base manifest's entry, or (with `snapshot`) with
    that snapshot's entry, also re-reading the repository's copy."""
    local = local_state(ws.root / rel)
    if snapshot is None:
        base = ws.base()
        entry = base.get(rel)
        return FileCheck(rel, f"base {base.snapshot}", describe(entry), local)
    assert repo is not None
    entry = repo.manifest(snapshot).get(rel)
    check = FileCheck(rel, snapshot, describe(entry), local)
    if entry is not None and not entry.is_link:
        with repo.open_file(snapshot, rel) as f:
            n, digest = hash_stream(f)
        check.repository = {"type": "file", "size": n, "hash": digest.hex()}
    elif entry is not None:
        check.repository = check.expected  # links have no content to read over the interface
    return check


# --- validate-snapshot -------------------------------------------------------------------


@dataclass
class Mismatch:
    path: str
    problem: str
    expected: dict[str, Any] | None
    got: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "problem": self.problem,
            "expected": self.expected,
            "got": self.got,
        }

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}; expected {self.expected}, got {self.got}"


@dataclass
class SnapshotCheck:
    snapshot: str
    manifest_digest: str
    files_total: int
    bytes_total: int
    links: int
    files_verified: int = 0
    bytes_verified: int = 0
    verified_through: str | None = None  # every file path <= this one was verified
    mismatches: list[Mismatch] = field(default_factory=list)
    digest_problem: str | None = None
    started_at: str = field(default_factory=now_utc)
    resumed_from: int = 0  # files verified by earlier runs
    complete: bool = False
    elapsed: float = 0.0
    progress_file: str | None = None
    # paths a colleague's dsg will not apply: outside the repository's shape, or hidden names
    # (committed before the agent checked them); reported, never applied
    outside_shape: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.digest_problem is None

    @property
    def status(self) -> str:
        return "complete" if self.complete else "partial (resumable)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "status": self.status,
            "complete": self.complete,
            "valid": self.ok,
            "manifest_digest": self.manifest_digest,
            "digest_problem": self.digest_problem,
            "files_total": self.files_total,
            "bytes_total": self.bytes_total,
            "links_not_read": self.links,
            "files_verified": self.files_verified,
            "bytes_verified": self.bytes_verified,
            "resumed_from": self.resumed_from,
            "verified_through": self.verified_through,
            "mismatches": [m.to_dict() for m in self.mismatches],
            "outside_shape": self.outside_shape[:1000],
            "outside_shape_count": len(self.outside_shape),
            "elapsed_seconds": round(self.elapsed, 3),
            "progress_file": self.progress_file,
        }

    def progress_doc(self) -> dict[str, Any]:
        return {
            "format": PROGRESS_FORMAT,
            "snapshot": self.snapshot,
            "manifest_digest": self.manifest_digest,
            "verified_through": self.verified_through,
            "files_verified": self.files_verified,
            "bytes_verified": self.bytes_verified,
            "mismatches": [m.to_dict() for m in self.mismatches],
            "started_at": self.started_at,
            "updated_at": now_utc(),
        }


def progress_path(state_dir: Path, snapshot: str) -> Path:
    return state_dir / f"validate-{snapshot}.json"


def _load_progress(path: Path, check: SnapshotCheck) -> bool:
    """Resume from a progress file of the same snapshot and manifest; False if none
    (a damaged or foreign file is ignored and later overwritten)."""
    try:
        d = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    if not (
        isinstance(d, dict)
        and d.get("format") == PROGRESS_FORMAT
        and d.get("snapshot") == check.snapshot
        and d.get("manifest_digest") == check.manifest_digest
        and isinstance(d.get("verified_through"), str)
    ):
        return False
    try:
        check.verified_through = d["verified_through"]
        check.files_verified = int(d.get("files_verified", 0))
        check.bytes_verified = int(d.get("bytes_verified", 0))
        check.mismatches = [Mismatch(**m) for m in d.get("mismatches", [])]
        check.started_at = str(d.get("started_at", check.started_at))
    except (TypeError, ValueError):
        return False
    check.resumed_from = check.files_verified
    return True


def _chunks(entries: list[Entry]) -> Iterator[list[Entry]]:
    """Slow start: 1, 2, 4, ... files per request up to CHUNK_FILES / ~CHUNK_BYTES, so a
    short time box still ends after little work and a long run pays few round trips."""
    i, want = 0, 1
    while i < len(entries):
        chunk: list[Entry] = []
        size = 0
        while i < len(entries) and len(chunk) < want and (not chunk or size < CHUNK_BYTES):
            chunk.append(entries[i])
            size += entries[i].size
            i += 1
        yield chunk
        want = min(want * 2, CHUNK_FILES)


def _verify_chunk(
    repo: Repository, snapshot: str, chunk: list[Entry]
) -> Iterator[tuple[Entry, Mismatch | None, int]]:
    """(entry, mismatch or None, bytes read) per file of `chunk`, in order."""
    done = 0
    try:
        for (path, stream), e in zip(
            repo.read_files(snapshot, [e.path for e in chunk]), chunk, strict=False
        ):
            if path != e.path:
                raise RepositoryError(f"asked for {e.path!r}, the repository sent {path!r}")
            n, digest = hash_stream(stream)
            done += 1
            yield e, _compare(e, n, digest), n
    except RepositoryError:
        if done >= len(chunk):
            raise
        # Pin the failure on a file: read the rest one by one, each error a mismatch.
        for e in chunk[done:]:
            try:
                with repo.open_file(snapshot, e.path) as f:
                    n, digest = hash_stream(f)
            except RepositoryError as err:
                yield e, Mismatch(e.path, f"unreadable: {err.message}", describe(e), None), 0
                continue
            yield e, _compare(e, n, digest), n


def _compare(e: Entry, n: int, digest: bytes) -> Mismatch | None:
    if n == e.size and digest == e.hash:
        return None
    problem = "size and content differ" if n != e.size else "content differs"
    return Mismatch(e.path, problem, describe(e), {"type": "file", "size": n, "hash": digest.hex()})


def validate_snapshot(
    repo: Repository,
    snapshot: str,
    state_dir: Path | None,
    *,
    max_duration: float | None = None,
    restart: bool = False,
    on_start: Callable[[SnapshotCheck], None] | None = None,
    on_file: Callable[[int], None] | None = None,
) -> SnapshotCheck:
    """Re-read every file of `snapshot` and check its size and hash against the manifest;
    check the manifest's digest against the snapshot's record.

    With `max_duration`, stop after the chunk during which it ran out (at least one file is
    checked per run, so every run makes progress) and save the progress in `state_dir` so
    the next run resumes; a complete run removes the progress file."""
    record = repo.record(snapshot)
    manifest = repo.manifest(snapshot)
    files = [e for e in manifest if not e.is_link]
    check = SnapshotCheck(
        snapshot,
        manifest.digest(),
        len(files),
        sum(e.size for e in files),
        len(manifest) - len(files),
    )
    shape = repo.shape()
    check.outside_shape = [
        e.path
        for e in manifest
        if e.path in manifest.suspect
        or (not shape.tracks(e.path) if shape else ("/." in f"/{e.path}"))
    ]
    if record.manifest_digest != check.manifest_digest:
        check.digest_problem = (
            f"manifest digest {check.manifest_digest} differs from the record's "
            f"{record.manifest_digest}"
        )
    ppath = progress_path(state_dir, snapshot) if state_dir is not None else None
    if ppath is not None and not restart:
        _load_progress(ppath, check)
    todo = files
    if check.verified_through is not None:
        todo = [e for e in files if e.path > check.verified_through]
    if on_start is not None:
        on_start(check)
    t0 = time.monotonic()
    last_save = t0

    def save() -> None:
        if ppath is not None:
            ppath.parent.mkdir(exist_ok=True)
            atomic_write(ppath, orjson.dumps(check.progress_doc(), option=orjson.OPT_INDENT_2))
            check.progress_file = str(ppath)

    try:
        for chunk in _chunks(todo):
            for e, mismatch, n in _verify_chunk(repo, snapshot, chunk):
                if mismatch is not None:
                    check.mismatches.append(mismatch)
                check.files_verified += 1
                check.bytes_verified += n
                check.verified_through = e.path
                if on_file is not None:
                    on_file(n)
            now = time.monotonic()
            if check.files_verified < len(files) and (
                max_duration is not None and now - t0 >= max_duration
            ):
                check.elapsed = now - t0
                save()
                return check
            if now - last_save >= SAVE_EVERY:
                save()
                last_save = now
    except (KeyboardInterrupt, DsgError):
        save()  # keep what was verified; the next run resumes from here
        raise
    check.elapsed = time.monotonic() - t0
    check.complete = True
    if ppath is not None:
        ppath.unlink(missing_ok=True)
        check.progress_file = None
    return check


# --- validate-chain ----------------------------------------------------------------------


@dataclass
class ChainCheck:
    head: str | None
    checked: int = 0
    problems: list[ChainProblem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "snapshots_checked": self.checked,
            "valid": not self.problems,
            "first_broken": self.problems[0].snapshot if self.problems else None,
            "problems": [p.to_dict() for p in self.problems],
        }


def validate_chain(
    repo: Repository,
    base_record: SnapshotRecord | None = None,
    on_snapshot: Callable[[str], None] | None = None,
) -> ChainCheck:
    """Walk s1 .. head by number: each record is readable and is what it claims, links to
    the previous id, its chain hash recomputes, and its stored manifest's digest is the one
    it records. With `base_record` (the working copy's), the repository's record of that
    snapshot must be identical to it."""
    head = repo.head()
    check = ChainCheck(head)
    prev: SnapshotRecord | None = None
    prev_ok = True  # the parent's record was readable (its chain can be used)
    for n in range(1, snap_number(head) + 1):
        sid = snap_id(n)
        check.checked += 1
        if on_snapshot is not None:
            on_snapshot(sid)
        try:
            rec = repo.record(sid)
        except DsgError as e:
            check.problems.append(ChainProblem(sid, "record", f"record unreadable: {e.message}"))
            prev, prev_ok = None, False
            continue
        try:
            stored: str | None = repo.manifest_digest(sid)
        except DsgError as e:
            check.problems.append(ChainProblem(sid, "digest", f"manifest unreadable: {e.message}"))
            stored = None
        problems = check_link(sid, rec, prev, stored)
        if not prev_ok:
            problems = [p for p in problems if p.check != "chain"]
        check.problems.extend(problems)
        prev, prev_ok = rec, True
    if base_record is not None and snap_number(base_record.id) <= snap_number(head):
        try:
            theirs = repo.record(base_record.id)
        except DsgError:
            theirs = None
        if theirs is not None and theirs != base_record:
            check.problems.append(
                ChainProblem(
                    base_record.id,
                    "base",
                    "the repository's record differs from the one this working copy synced "
                    f"to (chain {theirs.chain} vs {base_record.chain}): history was rewritten",
                )
            )
    return check


# --- clean -------------------------------------------------------------------------------

TEMP_NAME = re.compile(r"^\..+\.dsg-tmp(-.*)?$")
STATE_TEMP = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")  # fs/durable.py temp_name, left by a crash


@dataclass
class CleanItem:
    path: str  # relative to the project root
    kind: str  # conflict-copy, temp, validate-progress, stale-mount
    bytes: int
    removed: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "kind": self.kind, "bytes": self.bytes}
        d["removed"] = self.removed
        if self.note:
            d["note"] = self.note
        return d


def _size(p: str) -> int:
    try:
        st = os.lstat(p)
    except OSError:
        return 0
    return st.st_size if not os.path.islink(p) else 0


def clean_candidates(ws: Workspace, tracked: Manifest | None) -> list[CleanItem]:
    """The working copy's removable local state, never a tracked path."""
    root = str(ws.root)
    cfg = ws.config
    all_dirs = "*" in cfg.data_dirs
    data_dirs = frozenset(cfg.data_dirs)
    items: list[CleanItem] = []

    def walk(dir_abs: str, prefix: str, in_data: bool) -> None:
        try:
            it = os.scandir(dir_abs)
        except OSError:
            return
        with it:
            for de in it:
                name, rel = de.name, prefix + de.name
                try:
                    is_dir = de.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    if not name.startswith("."):
                        walk(de.path, rel + "/", in_data or all_dirs or name in data_dirs)
                    continue
                if not (in_data or all_dirs):
                    continue
                if tracked is not None and tracked.get(rel) is not None:
                    continue
                if ".dsg-conflict-" in name and CONFLICT_COPY.search(name):
                    items.append(CleanItem(rel, "conflict-copy", _size(de.path)))
                elif TEMP_NAME.match(name):
                    items.append(CleanItem(rel, "temp", _size(de.path)))

    walk(root, "", False)
    if ws.dir.is_dir():
        for p in sorted(ws.dir.glob("validate-*.json")):
            items.append(CleanItem(f".dsg/{p.name}", "validate-progress", _size(str(p))))
        for d in (ws.dir, ws.dir / "log"):
            if d.is_dir() and not d.is_symlink():
                for p in sorted(d.iterdir()):
                    if STATE_TEMP.match(p.name) and p.is_file() and not p.is_symlink():
                        rel = str(p.relative_to(ws.root))
                        items.append(CleanItem(rel, "state-temp", _size(str(p))))
        mnt = ws.dir / "mnt"
        if mnt.is_dir() and not mnt.is_symlink():
            for p in sorted(mnt.iterdir()):
                rel = f".dsg/mnt/{p.name}"
                if p.is_symlink():
                    if not p.exists():  # its snapshot is gone: a dangling view
                        items.append(CleanItem(rel, "stale-mount", 0, note="dangling link"))
                elif p.is_dir() and not os.path.ismount(p):
                    if any(p.iterdir()):
                        continue  # not ours to judge: a non-empty plain directory
                    items.append(CleanItem(rel, "stale-mount", 0, note="empty, not mounted"))
    return items


def clean(ws: Workspace, dry_run: bool) -> list[CleanItem]:
    """List (and unless `dry_run`, remove) the working copy's removable local state."""
    tracked = ws.base() if ws.has_base else None
    if dry_run:
        return clean_candidates(ws, tracked)
    with ws.lock():
        items = clean_candidates(ws, tracked)
        for it in items:
            p = ws.root / it.path
            try:
                if it.kind == "stale-mount" and not p.is_symlink():
                    p.rmdir()
                else:
                    p.unlink()
                it.removed = True
            except OSError as e:
                it.note = f"not removed: {e.strerror}"
    return items
