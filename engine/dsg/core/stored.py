"""A stored manifest's entry lines, searched and edited without parsing every entry.

A commit changes a few paths of a manifest that may hold a million. Parsing each line into
an entry and writing every entry back costs the project, not the change. Here the lines of
a checked manifest file are searched by path (a binary search over the bytes, decoding only
the lines it lands on) and a commit's manifest is the parent's lines with the changed ones
spliced in. Kept lines are carried byte for byte, so for a manifest this engine wrote the
result is exactly what `apply_changes` serializes (tests/unit/test_stored_manifest.py).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import orjson

from dsg.core.changes import Change, apply_changes
from dsg.core.compression import COMPRESSED
from dsg.core.errors import ManifestError
from dsg.core.manifest import Entry, Manifest, entry_from_row, file_bytes
from dsg.core.paths import show

EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
# More changes than this, and more than an eighth of the entries: parse and rebuild instead.
SPLICE_AT_MOST = 4096


class StoredManifest:
    """A manifest as its entry lines (`body`), with the header's count and digest."""

    __slots__ = ("body", "count", "digest", "origin", "snapshot")

    def __init__(
        self, body: bytes, count: int, digest: str, snapshot: str | None, origin: str = "manifest"
    ) -> None:
        self.body = body
        self.count = count
        self.digest = digest
        self.snapshot = snapshot
        self.origin = origin

    @classmethod
    def empty(cls) -> StoredManifest:
        return cls(b"", 0, EMPTY_DIGEST, None)

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str = "manifest") -> StoredManifest:
        """A manifest file, its digest and line count checked; its entries are decoded only
        where `get` or `edit` look."""
        body, header, snap = Manifest.verified_digest(data, origin=origin)
        count = header.get("count")
        if (
            type(count) is not int
            or (body and not body.endswith(b"\n"))
            or body.count(b"\n") != count
        ):
            raise ManifestError(f"{origin} is corrupt (entry count mismatch)")
        return cls(body, count, header["digest"], snap, origin)

    def to_bytes(self, level: int = COMPRESSED) -> bytes:
        return file_bytes(self.body, self.snapshot, self.count, self.digest, level)

    def __len__(self) -> int:
        return self.count

    # --- search ---------------------------------------------------------------------------

    def _row(self, start: int) -> tuple[list[Any], int]:
        """The decoded line starting at byte `start`, and the offset of its newline."""
        end = self.body.find(b"\n", start)
        try:
            row = orjson.loads(self.body[start:end])
        except orjson.JSONDecodeError:
            row = None
        if not isinstance(row, list) or not row or type(row[0]) is not str:
            raise ManifestError(f"{self.origin} is corrupt (malformed entry at byte {start})")
        return row, end

    def seek(self, path: str, lo: int = 0) -> int:
        """The offset of the first line at or after the line starting at `lo` whose path is
        not before `path` (len(body) if none): a binary search over byte offsets."""
        body = self.body
        hi = len(body)
        while lo < hi:
            mid = (lo + hi) // 2
            start = body.rfind(b"\n", lo, mid) + 1 or lo  # the line holding byte mid
            row, end = self._row(start)
            if row[0] < path:
                lo = end + 1
            else:
                hi = start
        return lo

    def _path_at(self, pos: int) -> tuple[str | None, list[Any] | None, int]:
        if pos >= len(self.body):
            return None, None, pos
        row, end = self._row(pos)
        return row[0], row, end

    def get(self, path: str) -> Entry | None:
        found, row, _ = self._path_at(self.seek(path))
        if found != path or row is None:
            return None
        return entry_from_row(row, self.origin)

    # --- edit -----------------------------------------------------------------------------

    def edit(self, changes: Iterable[Change], snap: int, user: str) -> tuple[StoredManifest, int]:
        """The manifest after `changes`, as `apply_changes` makes it (changed entries
        attributed to (snap, user), a file or link never also a directory), and how many
        bytes its files hold more than this one's."""
        last = {c.path: c for c in changes}  # the last change of a path counts
        if len(last) > max(SPLICE_AT_MOST, self.count // 8):
            return self._rebuilt(last.values(), snap, user)
        return self._spliced(last, snap, user)

    def _rebuilt(
        self, changes: Iterable[Change], snap: int, user: str
    ) -> tuple[StoredManifest, int]:
        """`edit` for changes to much of the manifest (an initial upload): parsed, changed
        and written whole, which then costs less than a search per change."""
        parent = Manifest.from_body(
            self.body, self.count, self.digest, self.snapshot, origin=self.origin
        )
        m = apply_changes(parent, changes, snap, user)
        body = m.body()
        digest = hashlib.sha256(body).hexdigest()
        edited = StoredManifest(body, len(m), digest, m.snapshot, self.origin)
        return edited, m.total_bytes() - parent.total_bytes()

    def _spliced(self, last: dict[str, Change], snap: int, user: str) -> tuple[StoredManifest, int]:
        """`edit` by splicing the changed lines into this one's."""
        order = sorted(last)
        found: dict[str, Entry | None] = {}  # path -> its entry here, for changed paths
        pos_of: dict[str, tuple[int, int]] = {}  # path -> (line start, newline) if here
        lo = 0
        for p in order:
            pos = self.seek(p, lo)
            at, row, end = self._path_at(pos)
            if at == p and row is not None:
                found[p] = entry_from_row(row, self.origin)
                pos_of[p] = (pos, end)
                lo = end + 1
            else:
                found[p] = None
                lo = pos
        dropped = {p for p in order if last[p].entry is None and found[p] is not None}
        added = [p for p in order if last[p].entry is not None and found[p] is None]
        self._check_shapes(added, set(added), dropped)

        body = memoryview(self.body)
        out: list[bytes | memoryview] = []
        copied = 0  # body is copied up to here
        lo = 0
        delta = 0
        count = self.count
        dumps = orjson.dumps
        for p in order:
            entry, old = last[p].entry, found[p]
            if old is None and entry is None:
                continue  # deleting what is not there changes nothing
            if old is not None:
                start, end = pos_of[p]
                out.append(body[copied:start])
                copied = end + 1
                delta -= old.size
                count -= 1
            else:
                start = self.seek(p, lo)
                out.append(body[copied:start])
                copied = start
            lo = copied
            if entry is not None:
                new = entry.with_attribution(snap, user)
                out.append(dumps(new.row()) + b"\n")
                delta += new.size
                count += 1
        out.append(body[copied:])
        new_body = b"".join(out)
        digest = hashlib.sha256(new_body).hexdigest()
        return StoredManifest(new_body, count, digest, f"s{snap}", self.origin), delta

    def _check_shapes(self, added: list[str], added_set: set[str], dropped: set[str]) -> None:
        """Refuse a result where an added path is inside a file or link, or a file or link
        is added where entries are inside it (the parent's, less those dropped, or other
        added ones). `added` is sorted."""
        is_leaf: dict[str, bool] = {}

        def leaf(d: str) -> bool:  # `d` is a file or link of the result
            if d not in is_leaf:
                at, _, _ = self._path_at(self.seek(d))
                is_leaf[d] = d in added_set or (at == d and d not in dropped)
            return is_leaf[d]

        for p in added:
            i = p.find("/")
            while i > 0:
                if leaf(p[:i]):
                    raise ManifestError(
                        f"{show(p[:i])!r} is a file or link but {show(p)!r} is inside it"
                    )
                i = p.find("/", i + 1)
            inside = p + "/"
            j = bisect_left(added, inside)
            if j < len(added) and added[j].startswith(inside):
                raise ManifestError(
                    f"{show(p)!r} is a file or link but {show(added[j])!r} is inside it"
                )
            pos = self.seek(inside)
            while True:
                at, _, end = self._path_at(pos)
                if at is None or not at.startswith(inside):
                    break
                if at not in dropped:
                    raise ManifestError(
                        f"{show(p)!r} is a file or link but {show(at)!r} is inside it"
                    )
                pos = end + 1
