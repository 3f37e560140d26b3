"""History over manifests and records: blame and the snapshot chain check.

Pure functions: they take records and a way to get a snapshot's manifest (or digest), so
they work the same on every backend and over SSH, and are unit-tested on in-memory data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from dsg.core.manifest import Entry, Manifest, SnapshotRecord, snap_id, snap_number

Event = Literal["add", "modify", "delete", "restore"]


@dataclass(frozen=True)
class Version:
    """One change of a path: the snapshot that made it and what the path held after."""

    snapshot: str
    user: str
    time: str
    message: str
    event: Event
    entry: Entry | None  # None for a deletion

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        d: dict[str, Any] = {
            "snapshot": self.snapshot,
            "user": self.user,
            "time": self.time,
            "message": self.message,
            "event": self.event,
            "type": None if e is None else ("link" if e.is_link else "file"),
            "hash": None if e is None else e.hash_hex,
            "size": None if e is None or e.is_link else e.size,
        }
        if e is not None and e.is_link:
            d["target"] = e.target
        return d


@dataclass
class _Raw:
    """A change found while walking back: at `number`, the path became `entry` (or gone)."""

    number: int
    entry: Entry | None
    user: str


def path_changes(
    path: str, head: int, manifest_at: Callable[[int], Manifest]
) -> tuple[list[_Raw], int]:
    """Every change of `path` from s1 to s`head`, oldest first; also how many manifests
    were read.

    Walks back from the head. While the path is present, its entry says which snapshot
    last changed it (`snap`), so the walk jumps straight to the snapshot before that one;
    only a span where the path is absent is walked one manifest at a time (nothing records
    when a path was deleted or whether it existed before)."""
    changes: list[_Raw] = []
    reads = 0
    n = head
    absent_from: int | None = None  # the path is absent from here up to the next change
    while n >= 1:
        e = manifest_at(n).get(path)
        reads += 1
        if e is None:
            absent_from = n
            n -= 1
            continue
        if absent_from is not None:
            changes.append(_Raw(absent_from, None, ""))  # present at n, gone at n+1
            absent_from = None
        changed_at = e.snap if 1 <= e.snap <= n else n  # a bad attribution: step by one
        changes.append(_Raw(changed_at, e, e.user))
        n = changed_at - 1
    changes.reverse()
    return changes, reads


def classify(changes: list[_Raw]) -> list[Event]:
    """add / modify / delete / restore for changes in chronological order. A restore is
    content equal to an earlier version that was later changed or deleted."""
    events: list[Event] = []
    seen: list[Entry] = []
    prev: Entry | None = None
    for c in changes:
        e = c.entry
        if e is None:
            events.append("delete")
        elif any(e.same_content(s) for s in seen if s is not prev):
            events.append("restore")
        elif prev is None:
            events.append("add")
        else:
            events.append("modify")
        if e is not None:
            seen.append(e)
        prev = e
    return events


def blame(
    path: str,
    records: Iterable[SnapshotRecord],
    manifest_at: Callable[[str], Manifest],
) -> tuple[list[Version], int]:
    """Every version of `path`, newest first, and how many manifests were read.

    `records` are the repository's history (any order); the newest is the head. Who and
    which snapshot come from the entries (`snap`, `user`: who last changed the path), so a
    later sync of other files does not take the credit. A deletion is attributed to the
    author of the snapshot that no longer holds the path. Time and message come from the
    record of the snapshot that made the change."""
    by_number = {r.number: r for r in records}
    if not by_number:
        return [], 0
    head = max(by_number)
    raw, reads = path_changes(path, head, lambda n: manifest_at(snap_id(n)))
    events = classify(raw)
    out: list[Version] = []
    for c, ev in zip(raw, events, strict=True):
        rec = by_number.get(c.number)
        user = c.user if c.entry is not None else (rec.author if rec else "")
        out.append(
            Version(
                snapshot=snap_id(c.number),
                user=user,
                time=rec.created_at if rec else "",
                message=rec.message if rec else "",
                event=ev,
                entry=c.entry,
            )
        )
    out.reverse()
    return out, reads


# --- the chain ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainProblem:
    snapshot: str
    check: str  # id, parent, chain, digest, record, base
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"snapshot": self.snapshot, "check": self.check, "message": self.message}

    def __str__(self) -> str:
        return f"{self.snapshot}: {self.message}"


def check_link(
    expected_id: str,
    rec: SnapshotRecord,
    parent: SnapshotRecord | None,
    stored_digest: str | None,
) -> list[ChainProblem]:
    """The problems of one link: `rec` read as `expected_id`, with its parent's record
    (None for s1) and the digest of its stored manifest (None: not checked)."""
    problems: list[ChainProblem] = []

    def bad(check: str, msg: str) -> None:
        problems.append(ChainProblem(expected_id, check, msg))

    if rec.id != expected_id:
        bad("id", f"record claims to be {rec.id}")
    want_parent = snap_id(snap_number(expected_id) - 1) if snap_number(expected_id) > 1 else None
    if rec.parent != want_parent:
        bad("parent", f"parent is {rec.parent or 'none'}, expected {want_parent or 'none'}")
    want_chain = rec.expected_chain(parent.chain if parent is not None else None)
    if rec.chain != want_chain:
        bad(
            "chain",
            f"chain hash is {rec.chain}, recomputed {want_chain} "
            "(the record or an earlier one was edited)",
        )
    if stored_digest is not None and stored_digest != rec.manifest_digest:
        bad(
            "digest",
            f"manifest digest is {stored_digest}, the record says {rec.manifest_digest} "
            "(the manifest was changed after commit)",
        )
    return problems
