"""Changes to a repository's manifest: what a transaction puts or deletes, and the manifest
that results (the client and the agent compute it alike)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

from dsg.core.manifest import Entry, Manifest
from dsg.core.paths import all_common


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


def set_aside_after(parent: Manifest, changes: list[Change], snap: int) -> dict[str, str] | None:
    """What `set_aside` finds in `apply_changes(parent, changes, snap, ...)`, when the
    changes alone tell: files edited or deleted, none added and no link, in a checked
    manifest with nothing set aside and no links, every changed path in the common case.
    Then nothing: no path problem, case twin or link problem can appear, and the paths stay
    sorted and free of clashes. None when they do not tell: check the result whole."""
    if parent.suspect or snap < 0 or not all_common([c.path for c in changes]):
        return None
    for c in changes:
        e = c.entry
        if e is None:
            continue
        if e.target is not None or e.hash is None or len(e.hash) != 16 or e.size < 0:
            return None
        if parent.get(c.path) is None:
            return None  # added: it may have a case twin here
    if any(e.target is not None for e in parent.entries):
        return None  # a link resolved through another may change with what it points at
    return {}
