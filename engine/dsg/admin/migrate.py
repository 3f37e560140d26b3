"""Import an existing repository into a new dsg repository, keeping its history.

Two sources:

- the original dsg: a repository directory with `.dsg/last-sync.json`,
  `.dsg/sync-messages.json`, `.dsg/archive/sN-sync.json.{lz4,gz,json}`, and one data tree per
  snapshot (`<repo>/.zfs/snapshot/sN/`, or plain `<dir>/sN/` named by the caller), plus the
  live tree for the head when it has no snapshot directory;
- snap: `<root>/<PROJECT>/sN/` full trees, a `HEAD` symlink, `push.log`
  (`sN | user | date UTC | message`) and tag symlinks (`v1.0 -> s36`).

Each old snapshot becomes one new dsg snapshot, in order, with the same number. Only the
configured data directories are imported; every file is hashed with xxh3-128; only files
whose content changed since the previous snapshot are uploaded; mtimes and relative links
are kept. Names that are not NFC are normalised and every such repair is reported.

`plan_import` reads the source and changes nothing (the dry run); `apply_import` plans
again, refuses on any blocking problem, then writes the new repository and verifies each
snapshot's manifest against the source tree. The source is only ever read.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import re
import stat as stat_mod
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import xxhash
import yaml

from dsg.backends.base import LockOwner, Repository
from dsg.core.errors import DsgError, RepositoryExists, UsageError
from dsg.core.manifest import Entry, snap_number
from dsg.core.paths import case_twins, link_problems, link_target_problem, name_problem, show
from dsg.fs.files import CHUNK
from dsg.fs.log import new_tx
from dsg.workcopy.config import ProjectConfig
from dsg.workcopy.rules import ScanRules

SNAP_DIR = re.compile(r"^s([1-9][0-9]*)$")
ISO_Z = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
ARCHIVE = re.compile(r"^s([1-9][0-9]*)-sync\.json(\.lz4|\.gz)?$")


class MigrationError(DsgError):
    kind = "import"


class SourceError(MigrationError):
    kind = "import_source"


class ImportBlocked(MigrationError):
    kind = "import_blocked"


# --- the source -----------------------------------------------------------------------------


@dataclass
class SourceSnapshot:
    """One old snapshot: where its tree is and what history says about it."""

    id: str
    tree: Path
    message: str | None = None
    user: str | None = None
    date: str | None = None  # as recorded
    old_manifest: dict[str, Any] | None = None  # original dsg: path -> entry (xxh3_64)
    # original dsg: where message, author and date came from: "tree" (the snapshot tree's
    # own .dsg/last-sync.json), "archive", "sync-messages.json", or None (nowhere)
    metadata_from: str | None = None

    @property
    def number(self) -> int:
        return snap_number(self.id)


@dataclass
class Problem:
    message: str
    snapshot: str | None = None
    path: str | None = None
    blocking: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "path": self.path,
            "message": self.message,
            "blocking": self.blocking,
        }

    def __str__(self) -> str:
        where = " ".join(x for x in (self.snapshot, show(self.path) if self.path else None) if x)
        return f"{where}: {self.message}" if where else self.message


@dataclass
class Source:
    kind: str  # "dsg" | "snap"
    root: Path
    snapshots: list[SourceSnapshot]
    head: str | None
    tags: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    snapshots_dir: Path | None = None
    # original dsg: every field where sync-messages.json or an archived manifest says
    # something else than the snapshot tree's own .dsg/last-sync.json
    disagreements: list[dict[str, Any]] = field(default_factory=list)


def _readable_dir(path: Path, what: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise SourceError(f"cannot read {what} {path}: {e.strerror}") from e
    if not stat_mod.S_ISDIR(st.st_mode):
        raise SourceError(f"{what} {path} is not a directory")
    try:
        with os.scandir(path) as it:
            next(it, None)
    except OSError as e:
        raise SourceError(
            f"cannot read {what} {path}: {e.strerror}",
            hint="run the import as a user who can read the whole source (nothing was written)",
        ) from e


def _numbered_dirs(parent: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    try:
        with os.scandir(parent) as it:
            for de in it:
                m = SNAP_DIR.match(de.name)
                if m and de.is_dir(follow_symlinks=False):
                    out[int(m.group(1))] = Path(de.path)
    except OSError as e:
        raise SourceError(f"cannot list snapshots in {parent}: {e.strerror}") from e
    return out


def detect_kind(root: Path) -> str:
    if (root / ".dsg" / "last-sync.json").is_file():
        return "dsg"
    if (root / "HEAD").is_symlink():
        return "snap"
    raise SourceError(
        f"{root} is neither an original dsg repository (.dsg/last-sync.json) "
        "nor a snap project (HEAD symlink)",
        hint="pass --from dsg or --from snap, and the right directory",
    )


def read_snap(root: Path) -> Source:
    """A snap project directory: sN trees, HEAD -> sN, push.log, tag symlinks."""
    _readable_dir(root, "snap project")
    problems: list[Problem] = []
    head_link = root / "HEAD"
    if not head_link.is_symlink():
        raise SourceError(f"{root} has no HEAD symlink; is it a snap project directory?")
    head = os.readlink(head_link).rstrip("/").rsplit("/", 1)[-1]
    if not SNAP_DIR.match(head) or not (root / head).is_dir():
        raise SourceError(f"{root}/HEAD points at {head!r}, not at a snapshot directory sN")
    dirs = _numbered_dirs(root)
    head_n = snap_number(head)
    for n in sorted(k for k in dirs if k > head_n):
        problems.append(
            Problem(
                f"s{n} is above HEAD ({head}): an unfinished push; not imported", blocking=False
            )
        )
    log: dict[str, tuple[str, str, str]] = {}
    log_path = root / "push.log"
    if not log_path.is_file():
        log_path = root / head / ".snap" / "push.log"
    if log_path.is_file():
        try:
            text = log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise SourceError(f"cannot read {log_path}: {e.strerror}") from e
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split("|", 3)]
            if len(parts) < 3 or not SNAP_DIR.match(parts[0]):
                problems.append(
                    Problem(f"push.log line {i} not understood: {line[:80]!r}", blocking=False)
                )
                continue
            user, date = parts[1], parts[2]
            message = parts[3] if len(parts) > 3 else ""
            log[parts[0]] = (user, _snap_date(date), message)
    else:
        problems.append(Problem("no push.log: messages and authors unknown", blocking=False))
    snaps = []
    for n in sorted(k for k in dirs if k <= head_n):
        sid = f"s{n}"
        user, date, message = log.get(sid, (None, None, None))
        if sid not in log and log:
            problems.append(Problem("no push.log entry", snapshot=sid, blocking=False))
        snaps.append(SourceSnapshot(sid, dirs[n], message, user, date))
    tags: dict[str, str] = {}
    with os.scandir(root) as it:
        for de in it:
            if de.name == "HEAD" or not de.is_symlink():
                continue
            target = os.readlink(de.path).rstrip("/").rsplit("/", 1)[-1]
            if SNAP_DIR.match(target) and snap_number(target) in dirs:
                tags[de.name] = target
            else:
                msg = f"link {de.name} -> {target} is not a tag of a snapshot"
                problems.append(Problem(msg, blocking=False))
    return Source("snap", root, snaps, head, dict(sorted(tags.items())), problems)


def _snap_date(raw: str) -> str:
    """'2023-10-15 10:00:00 UTC' -> '2023-10-15T10:00:00Z' (unparseable: kept as given)."""
    s = raw.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M UTC"):
        try:
            return datetime.strptime(s, fmt).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            continue
    return s


def _iso_utc(raw: str | None) -> str | None:
    """An ISO time with offset (the original dsg wrote Los Angeles time) as UTC 'Z'."""
    if not raw:
        return None
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        return raw
    if dt.tzinfo is None:
        return raw
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _load_json(path: Path, what: str) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as e:
        raise SourceError(f"cannot read {what} {path}: {e.strerror}") from e
    except orjson.JSONDecodeError as e:
        raise SourceError(f"{what} {path} is not valid JSON: {e}") from e


def lz4_available() -> bool:
    return importlib.util.find_spec("lz4") is not None


def _read_archive(path: Path) -> Any:
    data = path.read_bytes()
    if path.name.endswith(".lz4"):
        import lz4.frame  # type: ignore[import-not-found]

        data = lz4.frame.decompress(data)
    elif path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return orjson.loads(data)


MAX_MANIFEST = 1 << 30  # a snapshot tree's .dsg/last-sync.json; larger is not a manifest
META_FIELDS = (
    "created_by",
    "snapshot_message",
    "created_at",
    "snapshot_previous",
    "entry_count",
    "entries_hash",
)


def _text(v: Any) -> str | None:
    """A metadata value as text (old files are input from others: anything else is absent)."""
    return v[:4000] if isinstance(v, str) else None


def _tree_manifest(tree: Path, sid: str, problems: list[Problem]) -> dict[str, Any] | None:
    """The `.dsg/last-sync.json` inside one snapshot tree, if it is that snapshot's."""
    path = tree / ".dsg" / "last-sync.json"
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        problems.append(Problem(f"cannot read {path}: {e.strerror}", sid, blocking=False))
        return None
    if not stat_mod.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST:
        problems.append(Problem(f"{path} is not a manifest file; not used", sid, blocking=False))
        return None
    try:
        doc = _load_json(path, "manifest")
    except SourceError as e:
        problems.append(Problem(f"{e.message}; not used", sid, blocking=False))
        return None
    md = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(md, dict):
        problems.append(Problem(f"{path} has no metadata section; not used", sid, blocking=False))
        return None
    if md.get("snapshot_id") != sid:
        problems.append(
            Problem(
                f"{path} describes snapshot {str(md.get('snapshot_id'))[:20]!r}, not {sid}; "
                "not used",
                sid,
                blocking=False,
            )
        )
        return None
    return doc


def _compare_metadata(
    sid: str,
    used: str,
    md: dict[str, Any],
    other: str,
    omd: dict[str, Any],
    out: list[dict[str, Any]],
    problems: list[Problem],
) -> None:
    """Record every field where `other` disagrees with the metadata `used` for `sid`."""
    differ = []
    for f in META_FIELDS:
        a, b = md.get(f), omd.get(f)
        if f == "created_at":  # the same instant written with another offset is no conflict
            a, b = _iso_utc(_text(a)) or a, _iso_utc(_text(b)) or b
        if a != b:
            out.append(
                {"snapshot": sid, "field": f, "used": used, "value": a, "source": other,
                 "other_value": b}
            )  # fmt: skip
            differ.append(f"{f} {str(b)[:60]!r} ({used}: {str(a)[:60]!r})")
    if differ:
        where = "the snapshot tree's own .dsg/last-sync.json" if used == "tree" else used
        problems.append(
            Problem(
                f"{other} disagrees with {where}: "
                + "; ".join(differ)
                + f"; the {used}'s values are imported",
                sid,
                blocking=False,
            )
        )


def read_dsg(root: Path, snapshots_dir: Path | None = None) -> Source:
    """An original dsg repository: its metadata, archive and per-snapshot data trees."""
    _readable_dir(root, "dsg repository")
    meta_dir = root / ".dsg"
    last = _load_json(meta_dir / "last-sync.json", "manifest")
    if not isinstance(last, dict) or not isinstance(last.get("metadata"), dict):
        raise SourceError(f"{meta_dir / 'last-sync.json'} has no metadata section")
    problems: list[Problem] = []
    head = last["metadata"].get("snapshot_id")
    if not isinstance(head, str) or not SNAP_DIR.match(head):
        raise SourceError(f"last-sync.json names snapshot {head!r}, expected s1, s2, ...")
    msgs_meta: dict[str, dict[str, Any]] = {}
    msgs_path = meta_dir / "sync-messages.json"
    if msgs_path.is_file():
        msgs = _load_json(msgs_path, "history")
        snaps_meta = msgs.get("snapshots") if isinstance(msgs, dict) else None
        if isinstance(snaps_meta, dict):
            msgs_meta.update({k: v for k, v in snaps_meta.items() if isinstance(v, dict)})
        else:
            problems.append(Problem("sync-messages.json has no 'snapshots' map", blocking=False))
    else:
        problems.append(Problem("no .dsg/sync-messages.json", blocking=False))
    arch_meta: dict[str, dict[str, Any]] = {}
    old_manifests: dict[str, dict[str, Any]] = {}
    archive = meta_dir / "archive"
    if archive.is_dir():
        unread = []
        for p in sorted(archive.iterdir()):
            m = ARCHIVE.match(p.name)
            if not m:
                continue
            sid = f"s{m.group(1)}"
            if p.name.endswith(".lz4") and not lz4_available():
                unread.append(p.name)
                continue
            try:
                doc = _read_archive(p)
            except Exception as e:  # any damage: report it; the trees still count
                problems.append(
                    Problem(f"archived manifest {p.name} unreadable: {e}", sid, blocking=False)
                )
                continue
            if isinstance(doc, dict):
                old_manifests[sid] = doc.get("entries") or {}
                if isinstance(doc.get("metadata"), dict):
                    arch_meta[sid] = doc["metadata"]
        if unread:
            problems.append(
                Problem(
                    f"the lz4 module is not installed, so {len(unread)} archived manifest(s) "
                    f"({', '.join(unread[:5])}{', ...' if len(unread) > 5 else ''}) cannot be "
                    "read: messages come from sync-messages.json only and those snapshots are "
                    "not cross-checked against their old manifests (install lz4 to read them)",
                    blocking=False,
                )
            )
    sdir = snapshots_dir if snapshots_dir is not None else root / ".zfs" / "snapshot"
    if snapshots_dir is not None:
        _readable_dir(sdir, "snapshots directory")
    dirs = _numbered_dirs(sdir) if sdir.is_dir() else {}
    head_n = snap_number(head)
    numbers = {n for n in dirs if n <= head_n} | {snap_number(k) for k in msgs_meta}
    numbers |= {snap_number(k) for k in arch_meta} | {head_n}
    numbers.discard(0)
    for n in sorted(k for k in dirs if k > head_n):
        problems.append(
            Problem(f"s{n} is newer than last-sync.json's {head}; not imported", blocking=False)
        )
    disagreements: list[dict[str, Any]] = []
    snaps = []
    for n in sorted(k for k in numbers if k <= head_n):
        sid = f"s{n}"
        tree = dirs.get(n)
        if tree is None and n == head_n:
            tree = root  # the live tree holds the head
        if tree is None:
            problems.append(Problem(f"no data tree for {sid} in {sdir}", sid))
            tree = sdir / sid
        # The tree's own last-sync.json was written with the snapshot: the truth about it.
        # sync-messages.json is rewritten by every client and 0.4.4 corrupts it when two
        # people sync (an "s2" by the wrong author with the next snapshot's entries).
        own = last if tree == root else _tree_manifest(tree, sid, problems)
        sources: list[tuple[str, dict[str, Any]]] = []
        if own is not None:
            sources.append(("tree", own["metadata"]))
            old_manifests[sid] = own.get("entries") or {}
        if sid in arch_meta:
            sources.append(("archive", arch_meta[sid]))
        if sid in msgs_meta:
            sources.append(("sync-messages.json", msgs_meta[sid]))
        if not sources:
            problems.append(Problem("no message recorded", sid, blocking=False))
        used, md = sources[0] if sources else (None, {})
        for other, omd in sources[1:]:
            _compare_metadata(sid, used, md, other, omd, disagreements, problems)
        snaps.append(
            SourceSnapshot(
                sid,
                tree,
                _text(md.get("snapshot_message")),
                _text(md.get("created_by")),
                _iso_utc(_text(md.get("created_at"))),
                old_manifests.get(sid),
                used,
            )
        )
    return Source("dsg", root, snaps, head, {}, problems, sdir, disagreements)


# --- reading one tree --------------------------------------------------------------------------


@dataclass
class Item:
    entry: Entry
    source: str  # absolute path of the file in the source tree (original name)
    h64: str | None = None  # xxh3_64 hex when the original dsg manifest is cross-checked


@dataclass
class Tree:
    items: dict[str, Item]
    repairs: list[tuple[str, str, str]]  # (kind, original, nfc)
    outside: int = 0  # regular files not under a data directory (not imported)


HashKey = tuple[int, int, int, int, int]


class Hasher:
    """xxh3-128 (and xxh3_64 on demand) of source files, cached by (dev, inode, size, mtime,
    ctime) so hardlinked snapshot trees (snap's rsync --link-dest) are read once."""

    def __init__(self) -> None:
        self.cache: dict[HashKey, tuple[bytes, str | None]] = {}
        self.files = 0
        self.bytes = 0

    def __call__(self, path: str, st: os.stat_result, want64: bool) -> tuple[bytes, str | None]:
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = self.cache.get(key)
        if hit is not None and (hit[1] is not None or not want64):
            return hit
        h = xxhash.xxh3_128()
        h64 = xxhash.xxh3_64() if want64 else None
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
                if h64 is not None:
                    h64.update(view[:n])
        got = (h.digest(), h64.hexdigest() if h64 is not None else None)
        self.cache[key] = got
        self.files += 1
        self.bytes += st.st_size
        return got


def read_tree(
    root: Path,
    config: ProjectConfig,
    hasher: Hasher,
    problems: list[Problem],
    snapshot: str,
    *,
    want64: bool = False,
    skip_bad_links: bool = False,
) -> Tree:
    """The data-directory content of one snapshot tree, with NFC-normalised paths."""
    rules = ScanRules.of(config)
    tree = Tree({}, [])

    def problem(msg: str, path: str | None, blocking: bool = True) -> None:
        problems.append(Problem(msg, snapshot, path, blocking))

    def walk(dir_abs: str, prefix: str, orig_prefix: str, in_data: bool) -> None:
        try:
            with os.scandir(dir_abs) as it:
                listing = sorted(it, key=lambda d: d.name)
        except OSError as e:
            problem(f"cannot read directory: {e.strerror}", prefix.rstrip("/") or ".")
            return
        seen: dict[str, str] = {}
        for de in listing:
            name = de.name
            if name.startswith("."):
                continue
            orig_rel = orig_prefix + name
            nfc = unicodedata.normalize("NFC", name)
            rel = prefix + nfc
            if nfc in seen:
                problem(
                    f"{show(orig_prefix + seen[nfc])!r} and {show(orig_rel)!r} are the same "
                    "name once NFC-normalised; they would collide in dsg (rename one)",
                    rel,
                )
                continue
            seen[nfc] = name
            if rules.ignored(nfc, rel):
                continue
            data_here = in_data or rules.all_dirs
            try:
                is_dir = de.is_dir(follow_symlinks=False)
            except OSError as e:
                problem(f"cannot stat: {e.strerror}", rel)
                continue
            bad = name_problem(nfc)
            if bad:
                if data_here or is_dir:
                    problem(f"{bad}; rename it in the source to import it", orig_rel)
                continue
            if nfc != name and (data_here or is_dir):
                tree.repairs.append(("name", orig_rel, rel))
            if is_dir:
                walk(de.path, rel + "/", orig_rel + "/", data_here or nfc in rules.data_dirs)
                continue
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as e:
                problem(f"cannot stat: {e.strerror}", rel)
                continue
            if not data_here:
                if stat_mod.S_ISREG(st.st_mode):
                    tree.outside += 1
                continue
            if stat_mod.S_ISLNK(st.st_mode):
                target = os.readlink(de.path)
                ntarget = unicodedata.normalize("NFC", target)
                bad = link_target_problem(rel, ntarget)
                if bad:
                    if skip_bad_links:
                        problem(f"{bad}; link not imported (--skip-bad-links)", rel, False)
                    else:
                        problem(
                            f"{bad}; dsg stores only relative links inside the project "
                            "(fix it in the source, or pass --skip-bad-links to leave it out)",
                            rel,
                        )
                    continue
                if ntarget != target:
                    tree.repairs.append(("link target", f"{orig_rel} -> {target}", ntarget))
                tree.items[rel] = Item(Entry(rel, target=ntarget), de.path)
            elif stat_mod.S_ISREG(st.st_mode):
                try:
                    digest, h64 = hasher(de.path, st, want64)
                except OSError as e:
                    problem(f"cannot read: {e.strerror}", rel)
                    continue
                entry = Entry(rel, st.st_size, st.st_mtime_ns, digest)
                tree.items[rel] = Item(entry, de.path, h64)
            else:
                problem("not a regular file or symlink; not imported", rel, blocking=False)

    walk(str(root), "", "", False)
    # Links resolved through the tree's other links: text checks alone pass
    # `x/l1 -> ..` with `esc -> x/l1/x/l1/../../../../etc/passwd`.
    links = {rel: it.entry.target for rel, it in tree.items.items() if it.entry.is_link}
    for rel, bad in link_problems(links, None, rules.data_dirs):  # type: ignore[arg-type]
        if skip_bad_links:
            problem(f"{bad}; link not imported (--skip-bad-links)", rel, False)
            del tree.items[rel]
        else:
            problem(f"{bad} (fix it in the source, or pass --skip-bad-links)", rel)
    for group in case_twins(tree.items):
        problem(
            "paths differ only by letter case: "
            + ", ".join(show(p) for p in group)
            + " (they collide on macOS/Windows, and dsg refuses a manifest holding them: "
            "rename all but one in the source)",
            group[0],
        )
    return tree


def content_digest(entries: list[Entry]) -> str:
    """SHA-256 over sorted (path, content) pairs: what verification compares."""
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.path):
        h.update(orjson.dumps([e.path, e.target if e.is_link else e.hash_hex]) + b"\n")
    return h.hexdigest()


def _cross_check(
    src: SourceSnapshot, tree: Tree, config: ProjectConfig, problems: list[Problem]
) -> None:
    """Compare a snapshot tree with the original dsg's manifest of it (xxh3_64). Old entries
    outside the data directories are not a defect (the original init scanned everything)."""
    old = src.old_manifest
    if old is None:
        return
    rules = ScanRules.of(config)
    differ, missing = [], []
    for path, e in old.items():
        if not isinstance(e, dict) or not isinstance(path, str):
            continue
        nfc = unicodedata.normalize("NFC", path)
        parts = nfc.split("/")
        if not (rules.all_dirs or any(p in rules.data_dirs for p in parts[:-1])):
            continue
        item = tree.items.get(nfc)
        if item is None:
            missing.append(nfc)
        elif e.get("type") == "link":
            if item.entry.target != unicodedata.normalize("NFC", e.get("reference") or ""):
                differ.append(nfc)
        elif e.get("hash") and item.h64 is not None and e["hash"] != item.h64:
            differ.append(nfc)
    if differ or missing:
        sample = ", ".join(show(p) for p in (differ + missing)[:5])
        problems.append(
            Problem(
                f"the original dsg manifest of {src.id} disagrees with its data tree: "
                f"{len(differ)} differ, {len(missing)} missing from the tree ({sample}); "
                "the tree is what gets imported",
                src.id,
                blocking=False,
            )
        )


# --- the plan -----------------------------------------------------------------------------


@dataclass
class UserMap:
    emails: dict[str, tuple[str, str]] = field(default_factory=dict)  # old -> (email, name)
    given: bool = False

    @classmethod
    def load(cls, path: Path | None) -> UserMap:
        if path is None:
            return cls()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise UsageError(f"cannot read --user-map {path}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise UsageError(f"--user-map {path} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise UsageError(f"--user-map {path}: expected 'oldname: email' lines")
        out: dict[str, tuple[str, str]] = {}
        for k, v in data.items():
            if isinstance(v, str):
                out[str(k)] = (v, str(k))
            elif isinstance(v, dict) and isinstance(v.get("email"), str):
                out[str(k)] = (v["email"], str(v.get("name") or k))
            else:
                raise UsageError(
                    f"--user-map {path}: entry {k!r} must be an email or {{email:, name:}}"
                )
        return cls(out, True)

    def __call__(self, user: str | None) -> tuple[str, str]:
        if not user:
            return "unknown", "unknown"
        return self.emails.get(user, (user, user))


@dataclass
class SnapshotPlan:
    id: str
    source_tree: str
    original_message: str | None
    original_user: str | None
    original_date: str | None
    message: str
    author: str
    author_name: str
    files: int = 0
    links: int = 0
    bytes: int = 0
    upload_files: int = 0
    upload_bytes: int = 0
    links_changed: int = 0
    deletions: int = 0
    outside_data_dirs: int = 0
    content_digest: str = ""
    tags: list[str] = field(default_factory=list)
    metadata_from: str | None = None  # original dsg: tree, archive or sync-messages.json
    created_at: str = ""  # the original date the new record keeps ("" = the import's time)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ImportReport:
    source: Source
    target: str
    repo_name: str
    data_dirs: list[str]
    snapshots: list[SnapshotPlan] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    dry_run: bool = True
    applied: bool = False
    verified: list[str] = field(default_factory=list)
    hashed_files: int = 0
    hashed_bytes: int = 0
    config_yaml: str | None = None

    @property
    def blocking(self) -> list[Problem]:
        return [p for p in self.problems if p.blocking]

    def to_dict(self) -> dict[str, Any]:
        s = self.snapshots
        return {
            "source": {
                "kind": self.source.kind,
                "path": str(self.source.root),
                "snapshots_dir": str(self.source.snapshots_dir)
                if self.source.snapshots_dir
                else None,
                "head": self.source.head,
            },
            "target": {"repository": self.target, "name": self.repo_name},
            "data_dirs": self.data_dirs,
            "dry_run": self.dry_run,
            "applied": self.applied,
            "snapshots": [p.to_dict() for p in s],
            "totals": {
                "snapshots": len(s),
                "upload_files": sum(p.upload_files for p in s),
                "upload_bytes": sum(p.upload_bytes for p in s),
                "head_files": s[-1].files if s else 0,
                "head_bytes": s[-1].bytes if s else 0,
                "hashed_files": self.hashed_files,
                "hashed_bytes": self.hashed_bytes,
            },
            "nfc_repairs": self.repairs,
            "metadata_disagreements": self.source.disagreements,
            "tags": [{"name": k, "snapshot": v} for k, v in self.source.tags.items()],
            "problems": [p.to_dict() for p in self.problems],
            "blocking": len(self.blocking),
            "verified": self.verified,
            "config_yaml": self.config_yaml,
        }


def _message(src: SourceSnapshot, kind: str) -> str:
    stamp = f"imported from {kind} {src.id}" + (f", {src.date}" if src.date else "")
    return f"[{stamp}] {src.message or '(no message)'}"


Step = Callable[[SnapshotPlan, Tree, dict[str, Item]], None]


def _walk_history(
    source: Source,
    config: ProjectConfig,
    users: UserMap,
    report: ImportReport,
    *,
    skip_bad_links: bool,
    hasher: Hasher,
    step: Step | None = None,
    keep_dates: bool = True,
) -> None:
    """Read every snapshot tree in order, diffing each against the previous one; `step`
    (apply) is called per snapshot with its plan, tree and the previous tree's items."""
    prev: dict[str, Item] = {}
    seen_repairs: dict[tuple[str, str, str], dict[str, Any]] = {}
    tags_by_snap: dict[str, list[str]] = {}
    for name, sid in source.tags.items():
        tags_by_snap.setdefault(sid, []).append(name)
    expected = 1
    unmapped: set[str] = set()
    for src in source.snapshots:
        if src.number != expected:
            missing = ", ".join(f"s{n}" for n in range(expected, src.number))
            report.problems.append(
                Problem(
                    f"snapshot(s) {missing} missing in the source; dsg numbers snapshots "
                    "s1, s2, ... without gaps, so the numbering cannot be kept",
                    src.id,
                )
            )
            expected = src.number
        expected += 1
        author, author_name = users(src.user)
        if users.given and src.user and src.user not in users.emails:
            unmapped.add(src.user)
        sp = SnapshotPlan(
            id=src.id,
            source_tree=str(src.tree),
            original_message=src.message,
            original_user=src.user,
            original_date=src.date,
            message=_message(src, source.kind),
            author=author,
            author_name=author_name,
            tags=tags_by_snap.get(src.id, []),
            metadata_from=src.metadata_from,
            created_at=src.date if keep_dates and src.date and ISO_Z.match(src.date) else "",
        )
        if keep_dates and src.date and not sp.created_at:
            report.problems.append(
                Problem(
                    f"original date {src.date[:40]!r} not understood: dated at the import "
                    "(the date stays in the message)",
                    src.id,
                    blocking=False,
                )
            )
        if not src.tree.is_dir():
            report.snapshots.append(sp)
            continue
        tree = read_tree(
            src.tree,
            config,
            hasher,
            report.problems,
            src.id,
            want64=src.old_manifest is not None,
            skip_bad_links=skip_bad_links,
        )
        _cross_check(src, tree, config, report.problems)
        for kind, orig, nfc in tree.repairs:
            key = (kind, orig, nfc)
            if key in seen_repairs:
                seen_repairs[key]["last_snapshot"] = src.id
            else:
                seen_repairs[key] = {
                    "kind": kind,
                    "original": orig,
                    "nfc": nfc,
                    "first_snapshot": src.id,
                    "last_snapshot": src.id,
                }
        sp.outside_data_dirs = tree.outside
        for rel, it in tree.items.items():
            e = it.entry
            if e.is_link:
                sp.links += 1
            else:
                sp.files += 1
                sp.bytes += e.size
            if not e.same_content(prev[rel].entry if rel in prev else None):
                if e.is_link:
                    sp.links_changed += 1
                else:
                    sp.upload_files += 1
                    sp.upload_bytes += e.size
        sp.deletions = sum(1 for p in prev if p not in tree.items)
        sp.content_digest = content_digest([it.entry for it in tree.items.values()])
        report.snapshots.append(sp)
        if step is not None:
            step(sp, tree, prev)
        prev = tree.items
    if unmapped:
        report.problems.append(
            Problem(
                f"not in --user-map (kept as given): {', '.join(sorted(unmapped))}",
                blocking=False,
            )
        )
    report.repairs = list(seen_repairs.values())
    report.hashed_files = hasher.files
    report.hashed_bytes = hasher.bytes


def plan_import(
    source: Source,
    config: ProjectConfig,
    repo: Repository,
    users: UserMap,
    *,
    skip_bad_links: bool = False,
    hasher: Hasher | None = None,
) -> ImportReport:
    """The dry run: read everything, write nothing."""
    report = ImportReport(source, repo.location, config.name, list(config.data_dirs))
    report.problems.extend(source.problems)
    if not source.snapshots:
        report.problems.append(Problem("the source has no snapshots"))
    if not keeps_dates(config):
        report.problems.append(Problem(DATES_OVER_SSH, blocking=False))
    _walk_history(
        source,
        config,
        users,
        report,
        skip_bad_links=skip_bad_links,
        hasher=hasher or Hasher(),
        keep_dates=keeps_dates(config),
    )
    return report


DATES_OVER_SSH = (
    "the target is reached over SSH, where the agent dates every commit itself: the "
    "original dates are kept only in the messages (run the import on the repository host "
    "to keep them as the snapshots' dates)"
)


def keeps_dates(config: ProjectConfig) -> bool:
    """Original dates become the records' `created_at` only where this process commits."""
    return config.repository.transport == "local"


def check_target(repo: Repository, config: ProjectConfig) -> None:
    if repo.exists():
        raise RepositoryExists(
            f"a dsg repository named {config.name} already exists at {repo.location}",
            hint="import only into a new repository: pick another --repo-name "
            "(nothing was written)",
        )


def blocked_error(report: ImportReport) -> ImportBlocked:
    b = report.blocking
    listing = "\n".join(f"  {p}" for p in b[:50])
    more = f"\n  ... and {len(b) - 50} more" if len(b) > 50 else ""
    return ImportBlocked(
        f"{len(b)} problem(s) prevent the import:\n{listing}{more}",
        hint="fix them in a copy of the source (or use the options named above) and run "
        "the dry run again; nothing was written",
        details=report.to_dict(),
    )


def _import_tags(source: Source, repo: Repository, owner: str, report: ImportReport) -> None:
    """snap's tag symlinks become dsg tags (names lowercased; invalid ones reported)."""
    from dsg.backends.base import TAG_NAME

    imported = set(report.verified)
    for name, sid in source.tags.items():
        tag = name.lower()
        if sid not in imported or not TAG_NAME.match(tag):
            report.problems.append(
                Problem(f"tag {name!r} -> {sid} not imported (invalid name or snapshot)",
                        snapshot=sid, blocking=False)
            )  # fmt: skip
            continue
        repo.add_tag(tag, sid, f"imported from {source.kind} tag {name}", owner)


def apply_import(
    source: Source,
    config: ProjectConfig,
    repo: Repository,
    users: UserMap,
    owner: str,
    *,
    skip_bad_links: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    """Plan (refusing on any blocking problem), then write the new repository snapshot by
    snapshot, then verify every snapshot's manifest against its source tree. On any
    failure the new repository is removed again."""
    check_target(repo, config)
    hasher = Hasher()  # shared: the write pass reuses the plan's hashes of unchanged files
    report = plan_import(source, config, repo, users, skip_bad_links=skip_bad_links, hasher=hasher)
    if report.blocking:
        raise blocked_error(report)
    planned = {p.id: p.content_digest for p in report.snapshots}
    final = ImportReport(source, repo.location, config.name, list(config.data_dirs))
    final.problems.extend(source.problems)
    if not keeps_dates(config):
        final.problems.append(Problem(DATES_OVER_SSH, blocking=False))
    final.dry_run = False
    repo.create(ScanRules.of(config))
    try:
        with repo.lock(LockOwner(user=owner, tx=new_tx(), operation="import"), 30):

            def commit(sp: SnapshotPlan, tree: Tree, prev: dict[str, Item]) -> None:
                if sp.content_digest != planned.get(sp.id):
                    raise SourceError(
                        f"the source changed during the import ({sp.id} differs from the plan)",
                        hint="stop writers to the source and run the import again",
                    )
                txn = repo.begin(repo.head(), new_tx())
                try:
                    for rel in sorted(p for p in prev if p not in tree.items):
                        txn.delete(rel)
                    for rel, it in sorted(tree.items.items()):
                        e = it.entry
                        old = prev.get(rel)
                        if e.same_content(old.entry if old else None):
                            continue
                        if e.is_link:
                            txn.put_link(rel, e.target or "")
                        else:
                            fd = os.open(it.source, os.O_RDONLY | os.O_NOFOLLOW)
                            with os.fdopen(fd, "rb") as f:
                                assert e.hash is not None
                                txn.put_file(rel, f, e.size, e.mtime, e.hash)
                    rec = txn.commit(
                        sp.message, sp.author, sp.author_name, original_at=sp.created_at
                    )
                except BaseException:
                    txn.abort()
                    raise
                if rec.id != sp.id:
                    raise MigrationError(f"internal error: committed {rec.id}, expected {sp.id}")
                if progress:
                    progress(sp.id)

            _walk_history(
                source,
                config,
                users,
                final,
                skip_bad_links=skip_bad_links,
                hasher=hasher,
                step=commit,
                keep_dates=keeps_dates(config),
            )
        if final.blocking:  # the source changed between the plan and the write
            raise blocked_error(final)
        for sp in final.snapshots:
            got = content_digest(list(repo.manifest(sp.id)))
            if got != sp.content_digest:
                raise MigrationError(
                    f"verification failed: the imported {sp.id} does not hold the source's content",
                    hint="the new repository was removed; report this as a bug",
                )
            final.verified.append(sp.id)
        _import_tags(source, repo, owner, final)
    except BaseException:
        repo.destroy_new()
        raise
    final.applied = True
    return final
