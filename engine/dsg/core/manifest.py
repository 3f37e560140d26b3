"""Manifests (what a snapshot holds) and snapshot records (the history chain).

A manifest is a sorted list of entries, one per file or symlink, paths NFC and unique.
On disk it is gzip-compressed text: a JSON header line, then one compact JSON array per
entry, in path order:

    {"format": "dsg-manifest/1", "snapshot": "s3", "count": 2, "digest": "<sha256>"}
    ["task/input/a.csv", "f", 1200, 1732900000000000000, "<xxh3-128 hex>", 3, "alice@x.org"]
    ["task/output/l", "l", "../input/a.csv", 1, "bob@x.org"]

The digest is the SHA-256 of the entry lines exactly as stored, so a manifest is checked
on every load and its identity does not depend on the machine that wrote it. Each entry
records the snapshot number and user that last changed it (blame is a lookup).
"""

from __future__ import annotations

import hashlib
import operator
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice, pairwise
from typing import Any

import orjson

from dsg.core.bulk import without_gc
from dsg.core.compression import COMPRESSED, compress, decompress
from dsg.core.errors import ManifestError
from dsg.core.paths import (
    all_common,
    case_twins,
    link_problems,
    link_target_problem,
    path_problem,
    show,
    unsafe_path_problem,
)

FORMAT = "dsg-manifest/1"
_PATH = operator.attrgetter("path")
RECORD_FORMAT = "dsg-snapshot/1"
# A manifest line is ~120 bytes: 4 GiB of lines is tens of millions of files. The bound keeps
# a hostile file in a shared repository (a gzip bomb) from taking all of a reader's memory.
MAX_MANIFEST_BYTES = 1 << 32


class Entry:
    """One file (`target is None`) or symlink. `snap`/`user`: who last changed it."""

    __slots__ = ("hash", "mtime", "path", "size", "snap", "target", "user")

    def __init__(
        self,
        path: str,
        size: int = 0,
        mtime: int = 0,
        hash: bytes | None = None,
        target: str | None = None,
        snap: int = 0,
        user: str = "",
    ) -> None:
        self.path = path
        self.size = size
        self.mtime = mtime
        self.hash = hash
        self.target = target
        self.snap = snap
        self.user = user

    @property
    def is_link(self) -> bool:
        return self.target is not None

    @property
    def hash_hex(self) -> str | None:
        return self.hash.hex() if self.hash is not None else None

    def same_content(self, other: Entry | None) -> bool:
        """Equal content: files by hash, links by target. mtime and attribution don't count."""
        if other is None:
            return False
        if self.target is not None or other.target is not None:
            return self.target == other.target
        return self.hash == other.hash and self.hash is not None

    def with_attribution(self, snap: int, user: str) -> Entry:
        return Entry(self.path, self.size, self.mtime, self.hash, self.target, snap, user)

    def row(self) -> list[Any]:
        if self.target is not None:
            return [self.path, "l", self.target, self.snap, self.user]
        return [self.path, "f", self.size, self.mtime, self.hash_hex, self.snap, self.user]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "type": "link" if self.is_link else "file"}
        if self.is_link:
            d["target"] = self.target
        else:
            d.update(size=self.size, mtime_ns=self.mtime, hash=self.hash_hex)
        if self.snap:
            d.update(snapshot=f"s{self.snap}", user=self.user)
        return d

    def __repr__(self) -> str:
        kind = f"->{self.target}" if self.is_link else f"{self.size}B {self.hash_hex}"
        return f"Entry({self.path!r} {kind} s{self.snap} {self.user})"


def entry_problem(e: Entry) -> str | None:
    problem = path_problem(e.path)
    if problem:
        return problem
    if e.target is not None:
        return link_target_problem(e.path, e.target)
    if e.hash is None or len(e.hash) != 16:
        return "file entry without a 128-bit hash"
    if e.size < 0:
        return "negative size"
    return None


@dataclass
class Manifest:
    """Entries sorted by path. `snapshot` is the snapshot id this manifest belongs to."""

    entries: list[Entry]
    snapshot: str | None = None
    _paths: list[str] | None = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)  # known when read from bytes
    _body: bytes | None = field(default=None, repr=False)  # built by digest(), for to_bytes()
    # Paths this manifest holds that today's rules refuse (hidden or look-alike names, case
    # twins, links resolved through links), committed before the rules: path -> why. Loaded
    # so an old repository keeps working; never applied to a working copy (plan leaves them
    # alone), reported by validate-snapshot.
    suspect: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def empty(cls) -> Manifest:
        return cls([])

    @classmethod
    def from_entries(cls, entries: Iterable[Entry], snapshot: str | None = None) -> Manifest:
        items = sorted(entries, key=lambda e: e.path)
        for a, b in pairwise(items):
            if a.path == b.path:
                raise ManifestError(f"duplicate path {show(a.path)!r} in manifest")
        clash = path_clash(items)
        if clash:
            raise ManifestError(clash)
        return cls(items, snapshot)

    @classmethod
    def with_added(
        cls, kept: list[Entry], added: list[Entry], snapshot: str | None = None
    ) -> Manifest:
        """A valid manifest's entries `kept` in their order (some dropped, some replaced by an
        entry of the same path), plus `added` entries at new paths: checked as
        `from_entries` checks, in one pass over `kept` and a lookup per added path (a sync
        changes a few paths of a large manifest)."""
        items = kept
        if added:
            items = kept + added
            items.sort(key=_PATH)  # two sorted runs: one merge
        paths = list(map(_PATH, items))
        if not all(map(operator.lt, paths, islice(paths, 1, None))):
            dup = next(a for a, b in pairwise(paths) if not a < b)
            raise ManifestError(f"duplicate or unsorted path {show(dup)!r} in manifest")
        if len(added) > len(items) // 8:  # many new paths (an upload of a tree): one pass
            clash = path_clash(items)
            if clash:
                raise ManifestError(clash)
        else:
            for e in added:
                clash = _clash_at(paths, e.path)
                if clash:
                    raise ManifestError(clash)
        return cls(items, snapshot, _paths=paths)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths = [e.path for e in self.entries]
        return self._paths

    def get(self, path: str) -> Entry | None:
        paths = self.paths
        i = bisect_left(paths, path)
        if i < len(paths) and paths[i] == path:
            return self.entries[i]
        return None

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    # --- serialization --------------------------------------------------------------

    def body(self) -> bytes:
        dumps = orjson.dumps
        return b"".join(dumps(e.row()) + b"\n" for e in self.entries)

    def digest(self) -> str:
        """SHA-256 of the canonical entry lines (manifests are never mutated in place)."""
        if self._digest is None:
            self._body = self.body()  # a sync writes the manifest next (its new base)
            self._digest = hashlib.sha256(self._body).hexdigest()
        return self._digest

    def with_digest(self, digest: str) -> Manifest:
        """This manifest, known to be the content of a file whose digest is `digest` (a file
        spliced from its parent's, whose kept lines need not be serialized again)."""
        return Manifest(self.entries, self.snapshot, self._paths, digest, None, self.suspect)

    def to_bytes(self, level: int = COMPRESSED) -> bytes:
        """The file form; also remembers the digest, so a writer that serializes first does
        not build the entry lines a second time for `digest()`."""
        body, self._body = self._body or self.body(), None  # the file form holds it now
        self._digest = hashlib.sha256(body).hexdigest()
        return file_bytes(body, self.snapshot, len(self.entries), self._digest, level)

    @staticmethod
    def verified_digest(
        data: bytes, *, origin: str = "manifest"
    ) -> tuple[bytes, dict[str, Any], str | None]:
        """Check a stored manifest's integrity without parsing its entries.
        Returns (body, header, snapshot id); raises ManifestError on any defect."""
        raw = decompress(data, origin, MAX_MANIFEST_BYTES)
        nl = raw.find(b"\n")
        if nl < 0:
            raise ManifestError(f"{origin} is corrupt (no header line)")
        try:
            header = orjson.loads(raw[:nl])
        except orjson.JSONDecodeError as e:
            raise ManifestError(f"{origin} is corrupt (header is not JSON)") from e
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ManifestError(f"{origin}: unknown manifest format {header!r:.80}")
        body = raw[nl + 1 :]
        if hashlib.sha256(body).hexdigest() != header.get("digest"):
            raise ManifestError(f"{origin} is corrupt (content does not match its digest)")
        snap = header.get("snapshot")
        return body, header, snap if isinstance(snap, str) else None

    @classmethod
    @without_gc
    def from_bytes(cls, data: bytes, *, origin: str = "manifest") -> Manifest:
        """Parse and fully validate. Any defect raises ManifestError; never returns empty
        for unreadable input."""
        body, header, snap = cls.verified_digest(data, origin=origin)
        return cls.from_body(body, header.get("count"), header["digest"], snap, origin=origin)

    @classmethod
    @without_gc
    def from_body(
        cls, body: bytes, count: Any, digest: str, snap: str | None, *, origin: str = "manifest"
    ) -> Manifest:
        """Parse and fully validate entry lines whose digest was checked."""
        try:
            rows = orjson.loads(b"[" + body.rstrip(b"\n").replace(b"\n", b",") + b"]")
        except orjson.JSONDecodeError as e:
            raise ManifestError(f"{origin} is corrupt (entry is not JSON: {e})") from e
        if len(rows) != count:
            raise ManifestError(f"{origin} is corrupt (entry count mismatch)")
        suspect: dict[str, str] = {}
        entries = [_entry_from_row(r, origin, suspect) for r in rows]
        paths = _check_sorted(entries, origin)
        m = cls(entries, snap, _paths=paths, _digest=digest)
        _check_tree(m, suspect)
        m.suspect = suspect
        return m


def file_bytes(
    body: bytes, snapshot: str | None, count: int, digest: str, level: int = COMPRESSED
) -> bytes:
    """A manifest's file form: its header line and entry lines, gzip-compressed."""
    header = {"format": FORMAT, "snapshot": snapshot, "count": count, "digest": digest}
    return compress((orjson.dumps(header) + b"\n", body), level)


_interned: dict[str, str] = {}
_intern = _interned.setdefault


def entry_from_row(row: Any, origin: str = "manifest") -> Entry:
    """One stored entry line's entry, checked as a manifest's load checks it."""
    return _entry_from_row(row, origin, {})


def _entry_from_row(r: Any, origin: str, suspect: dict[str, str]) -> Entry:
    try:
        kind = r[1]
        if kind == "f":
            path, _, size, mtime, hx, snap, user = r
            e = Entry(path, size, mtime, bytes.fromhex(hx), None, snap, _intern(user, user))
            ok = type(size) is int and type(mtime) is int and len(e.hash) == 16  # type: ignore[arg-type]
        elif kind == "l":
            path, _, target, snap, user = r
            e = Entry(path, 0, 0, None, target, snap, _intern(user, user))
            ok = type(target) is str
        else:
            ok = False
        ok = ok and type(path) is str and type(snap) is int and type(user) is str
    except (TypeError, ValueError, IndexError):
        ok = False
    if not ok:
        raise ManifestError(f"{origin} is corrupt (malformed entry {str(r)[:120]})")
    problem = path_problem(e.path)
    if problem is not None and unsafe_path_problem(e.path) is None:
        suspect[e.path] = problem  # refused today, harmless to name: set aside, not fatal
        problem = None
    if problem is None and (e.size < 0 or e.snap < 0):
        problem = "negative size or snapshot number"
    if problem is None and e.target is not None:
        problem = link_target_problem(e.path, e.target)
    if problem:
        raise ManifestError(f"{origin} holds an invalid entry {show(e.path)!r}: {problem}")
    return e


def _check_sorted(entries: list[Entry], origin: str) -> list[str]:
    """The entries' paths, checked strictly sorted and free of file/directory clashes."""
    paths = list(map(_PATH, entries))
    if not all(map(operator.lt, paths, islice(paths, 1, None))):
        at = next(b for a, b in pairwise(paths) if not a < b)
        raise ManifestError(f"{origin} is corrupt (paths not strictly sorted at {show(at)!r})")
    clash = path_clash(entries)
    if clash:
        raise ManifestError(f"{origin} is corrupt ({clash})")
    return paths


def set_aside(m: Manifest) -> dict[str, str] | None:
    """What loading `m`'s file would set aside as suspect (path -> why), or None when the
    load would refuse the file: the same checks as `from_body`, without the parse."""
    paths, entries = m.paths, m.entries
    if not all(map(operator.lt, paths, islice(paths, 1, None))) or path_clash(entries):
        return None
    if entries and (min(e.size for e in entries) < 0 or min(e.snap for e in entries) < 0):
        return None
    if any(e.hash is None or len(e.hash) != 16 for e in entries if e.target is None):
        return None
    if any(link_target_problem(e.path, e.target) for e in entries if e.target is not None):
        return None
    suspect: dict[str, str] = {}
    if not all_common(paths):
        for p in paths:
            problem = path_problem(p)
            if problem is not None:
                if unsafe_path_problem(p) is not None:
                    return None
                suspect[p] = problem
    _check_tree(m, suspect)
    return suspect


def _check_tree(m: Manifest, suspect: dict[str, str]) -> None:
    """What no single entry shows: paths that differ only by letter case (they collide on
    macOS and Windows and block every colleague there), and links whose target, resolved
    through the tree's other links, leaves the project. Both are set aside as suspect."""
    for group in case_twins(m.paths):
        for p in group:
            suspect.setdefault(p, "differs only by letter case from " + ", ".join(
                repr(show(o)) for o in group if o != p))  # fmt: skip
    links = {e.path: e.target for e in m.entries if e.target is not None}
    for path, problem in link_problems(links):  # type: ignore[arg-type]
        suspect.setdefault(path, problem)


def _clash_at(paths: list[str], path: str) -> str | None:
    """A clash of `path` with the sorted `paths` (which hold it): one of its directories is
    a file or link, or it is a file or link with entries inside."""
    i = path.find("/")
    while i > 0:
        d = path[:i]
        j = bisect_left(paths, d)
        if j < len(paths) and paths[j] == d:
            return f"{show(d)!r} is a file or link but {show(path)!r} is inside it"
        i = path.find("/", i + 1)
    j = bisect_left(paths, path + "/")
    if j < len(paths) and paths[j].startswith(path + "/"):
        return f"{show(path)!r} is a file or link but {show(paths[j])!r} is inside it"
    return None


def path_clash(entries: list[Entry]) -> str | None:
    """A file or link that is also used as a directory by another entry, if any."""
    leaves = {e.path for e in entries}
    dirs: set[str] = set()
    for e in entries:
        p = e.path
        i = p.rfind("/")
        while i > 0:
            p = p[:i]
            if p in dirs:
                break
            if p in leaves:
                return f"{show(p)!r} is a file or link but {show(e.path)!r} is inside it"
            dirs.add(p)
            i = p.rfind("/")
    return None


# --- snapshot records ------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotRecord:
    """One link of the history chain."""

    id: str
    parent: str | None
    author: str
    author_name: str
    message: str
    created_at: str
    manifest_digest: str
    entry_count: int
    total_bytes: int
    tx: str
    chain: str
    # The login the repository host authenticated (SSH) for the commit; "" for records made
    # before it was recorded. `author` is what the client claimed.
    login: str = ""
    # When the snapshot was written into this repository, for one imported from another
    # system (`dsg import`); `created_at` then keeps the original commit time. "" otherwise.
    imported_at: str = ""

    @staticmethod
    def compute_chain(
        parent_chain: str | None,
        id: str,
        parent: str | None,
        author: str,
        message: str,
        created_at: str,
        manifest_digest: str,
        login: str = "",
        imported_at: str = "",
    ) -> str:
        fields: list[Any] = [
            parent_chain or "",
            id,
            parent,
            author,
            message,
            created_at,
            manifest_digest,
        ]
        if login:  # chained where recorded; records without it keep their chain
            fields.append(login)
        if imported_at:  # likewise; labelled so it cannot pass for a login
            fields.append(["imported_at", imported_at])
        return hashlib.sha256(orjson.dumps(fields)).hexdigest()

    @property
    def login_differs(self) -> bool:
        """The authenticated login is known and is not the claimed author (nor its local
        part): history shows both."""
        return bool(self.login) and self.login not in (self.author, self.author.split("@")[0])

    def expected_chain(self, parent_chain: str | None) -> str:
        return self.compute_chain(
            parent_chain,
            self.id,
            self.parent,
            self.author,
            self.message,
            self.created_at,
            self.manifest_digest,
            self.login,
            self.imported_at,
        )

    def to_dict(self) -> dict[str, Any]:
        d = {"format": RECORD_FORMAT, **self.__dict__}
        if not self.imported_at:  # records of ordinary commits stay as older readers know them
            del d["imported_at"]
        return d

    @classmethod
    def from_dict(cls, d: Any, *, origin: str = "snapshot record") -> SnapshotRecord:
        if not isinstance(d, dict) or d.get("format") != RECORD_FORMAT:
            raise ManifestError(f"{origin} is not a dsg snapshot record")
        try:
            rec = cls(**{k: v for k, v in d.items() if k != "format"})
        except TypeError as e:
            raise ManifestError(f"{origin} is malformed: {e}") from e
        if snap_number(rec.id) < 1:
            raise ManifestError(f"{origin} has an invalid id {rec.id!r}")
        return rec

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str = "snapshot record") -> SnapshotRecord:
        try:
            d = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ManifestError(f"{origin} is corrupt (not JSON)") from e
        return cls.from_dict(d, origin=origin)

    @property
    def number(self) -> int:
        return snap_number(self.id)


def snap_number(snap_id: str | None) -> int:
    """'s12' -> 12; anything else -> 0."""
    if not snap_id or not snap_id.startswith("s") or not snap_id[1:].isdigit():
        return 0
    return int(snap_id[1:])


def snap_id(n: int) -> str:
    return f"s{n}"
