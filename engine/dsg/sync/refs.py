"""Snapshot references: what every command that takes a snapshot accepts.

REF is `sN` (or just `N`), a tag name, `head`, or `head~N` (N snapshots before the head).
An unknown one is an error naming it and what exists: "no snapshot s9 (head is s4)",
"no tag v2 (tags: v1, v1.1)"; text that cannot be any of them is a usage error.
"""

from __future__ import annotations

import re

from dsg.backends.base import TAG_NAME, Repository
from dsg.core.errors import UnknownRef, UsageError
from dsg.core.manifest import snap_id, snap_number
from dsg.core.paths import show_text

_SNAP = re.compile(r"^s?([0-9]{1,12})$")
_HEAD = re.compile(r"^head(?:~([0-9]{1,12}))?$")
MAX_REF = 128


def resolve_ref(repo: Repository, ref: str) -> str:
    """The snapshot id `ref` names in `repo`; UnknownRef when it names none."""
    ref = ref.strip()
    if not ref or len(ref) > MAX_REF:
        raise UnknownRef("a snapshot reference must be sN, a tag name, head or head~N")
    m = _SNAP.match(ref)
    if m:
        n = int(m.group(1))
        head = repo.head()
        if n < 1 or n > snap_number(head):
            raise UnknownRef(
                f"no snapshot s{n} ({_head_is(head)})",
                hint="'dsg log' lists the snapshots, 'dsg tags' the tags",
            )
        return snap_id(n)
    m = _HEAD.match(ref)
    if m:
        head = repo.head()
        if head is None:
            raise UnknownRef("no snapshot: the repository is empty")
        back = int(m.group(1) or 0)
        if back >= snap_number(head):
            raise UnknownRef(
                f"no snapshot {ref} ({_head_is(head)})",
                hint="'dsg log' lists the snapshots",
            )
        return snap_id(snap_number(head) - back)
    if not TAG_NAME.match(ref):
        raise UsageError(
            f"{show_text(ref)!r} is not a snapshot reference",
            hint="use sN (or N), a tag name, head or head~N",
        )
    tags = repo.tags()
    tag = tags.get(ref)
    if tag is None:
        names = sorted(tags)
        known = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise UnknownRef(
            f"no tag {show_text(ref)} (" + (f"tags: {known})" if names else "no tags yet)"),
            hint="'dsg tags' lists the tags; a snapshot is sN (see 'dsg log')",
        )
    snap = str(tag.get("snapshot", ""))
    if not _SNAP.match(snap):
        raise UnknownRef(f"tag {show_text(ref)} names no snapshot ({show_text(snap)!r})")
    return snap


def _head_is(head: str | None) -> str:
    return f"head is {head}" if head else "the repository is empty"


def tags_by_snapshot(repo: Repository) -> dict[str, list[str]]:
    """snapshot id -> the names of its tags, sorted."""
    out: dict[str, list[str]] = {}
    for name, t in sorted(repo.tags().items()):
        out.setdefault(str(t.get("snapshot")), []).append(name)
    return out
