"""Changes to a repository's manifest: what a transaction puts or deletes, and the manifest
that results (the client and the agent compute it alike)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

from dsg.core.manifest import Entry, Manifest


@dataclass(frozen=True)
class Change:
    """One change a transaction makes to the repository: put an entry, or delete a path."""

    path: str
    entry: Entry | None  # None = delete


def apply_changes(parent: Manifest, changes: Iterable[Change], snap: int, user: str) -> Manifest:
    """The manifest after `changes`: changed entries are attributed to (snap, user), the
    rest carried forward unchanged. Deterministic: client and server compute the same."""
    entries = list(parent.entries)
    paths = parent.paths
    dropped: set[int] = set()
    added: list[Entry] = []
    for c in {c.path: c for c in changes}.values():  # the last change of a path counts
        i = bisect_left(paths, c.path)
        if i < len(paths) and paths[i] == c.path:
            if c.entry is None:
                dropped.add(i)
            else:
                entries[i] = c.entry.with_attribution(snap, user)
        elif c.entry is not None:
            added.append(c.entry.with_attribution(snap, user))
    out = [e for i, e in enumerate(entries) if i not in dropped] if dropped else entries
    return Manifest.with_added(out, added, snapshot=f"s{snap}")
