"""Compare: the pure three-way classification of every path into one of 15 sync states.

L is the local scan, C the base (the snapshot this working copy last synced to), R the
remote head. Equality is content equality (hash for files, target for links). The state
names are the original dsg's, so its documentation and users' habits carry over.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

from dsg.core.manifest import Entry, Manifest


class SyncState(StrEnum):
    sLCR__all_eq = "sLCR__all_eq"
    sLCR__L_eq_C_ne_R = "sLCR__L_eq_C_ne_R"
    sLCR__L_eq_R_ne_C = "sLCR__L_eq_R_ne_C"
    sLCR__C_eq_R_ne_L = "sLCR__C_eq_R_ne_L"
    sLCR__all_ne = "sLCR__all_ne"
    sxLCR__C_eq_R = "sxLCR__C_eq_R"
    sxLCR__C_ne_R = "sxLCR__C_ne_R"
    sLxCR__L_eq_R = "sLxCR__L_eq_R"
    sLxCR__L_ne_R = "sLxCR__L_ne_R"
    sLCxR__L_eq_C = "sLCxR__L_eq_C"
    sLCxR__L_ne_C = "sLCxR__L_ne_C"
    sxLCxR__only_R = "sxLCxR__only_R"
    sxLCRx__only_C = "sxLCRx__only_C"
    sLxCxR__only_L = "sLxCxR__only_L"
    sxLxCxR__none = "sxLxCxR__none"


S = SyncState

# Each state in plain words, for people ("here": this working copy; "on the server": the
# repository). The codes themselves are shown only in --json and with -v.
DESCRIPTIONS: dict[SyncState, str] = {
    S.sLCR__all_eq: "unchanged",
    S.sLCR__L_eq_C_ne_R: "changed on the server",
    S.sLCR__L_eq_R_ne_C: "same change here and on the server",
    S.sLCR__C_eq_R_ne_L: "changed here",
    S.sLCR__all_ne: "changed here and on the server",
    S.sxLCR__C_eq_R: "deleted here",
    S.sxLCR__C_ne_R: "deleted here, changed on the server",
    S.sLxCR__L_eq_R: "new here and on the server, identical",
    S.sLxCR__L_ne_R: "new here and on the server, different",
    S.sLCxR__L_eq_C: "deleted on the server",
    S.sLCxR__L_ne_C: "changed here, deleted on the server",
    S.sxLCxR__only_R: "new on the server",
    S.sxLCRx__only_C: "deleted here and on the server",
    S.sLxCxR__only_L: "new here",
    S.sxLxCxR__none: "not tracked",
}

CONFLICT_STATES = frozenset({S.sLCR__all_ne, S.sxLCR__C_ne_R, S.sLxCR__L_ne_R, S.sLCxR__L_ne_C})


def classify(l: Entry | None, c: Entry | None, r: Entry | None) -> SyncState:  # noqa: E741
    """The sync state of one path given its local, base and remote entries (or None)."""
    if l is not None and c is not None and r is not None:
        lc, lr, cr = l.same_content(c), l.same_content(r), c.same_content(r)
        if lc and lr:
            return S.sLCR__all_eq
        if lc:
            return S.sLCR__L_eq_C_ne_R
        if lr:
            return S.sLCR__L_eq_R_ne_C
        if cr:
            return S.sLCR__C_eq_R_ne_L
        return S.sLCR__all_ne
    if c is not None and r is not None:
        return S.sxLCR__C_eq_R if c.same_content(r) else S.sxLCR__C_ne_R
    if l is not None and r is not None:
        return S.sLxCR__L_eq_R if l.same_content(r) else S.sLxCR__L_ne_R
    if l is not None and c is not None:
        return S.sLCxR__L_eq_C if l.same_content(c) else S.sLCxR__L_ne_C
    if r is not None:
        return S.sxLCxR__only_R
    if c is not None:
        return S.sxLCRx__only_C
    if l is not None:
        return S.sLxCxR__only_L
    return S.sxLxCxR__none


Triple = tuple[str, Entry | None, Entry | None, Entry | None]


def merge3(local: Manifest, base: Manifest, remote: Manifest) -> Iterator[Triple]:
    """Walk three sorted manifests together, yielding (path, L, C, R) for every path."""
    ls, cs, rs = local.entries, base.entries, remote.entries
    i = j = k = 0
    nl, nc, nr = len(ls), len(cs), len(rs)
    while True:
        cands = []
        if i < nl:
            cands.append(ls[i].path)
        if j < nc:
            cands.append(cs[j].path)
        if k < nr:
            cands.append(rs[k].path)
        if not cands:
            return
        p = min(cands)
        le = ce = re_ = None
        if i < nl and ls[i].path == p:
            le = ls[i]
            i += 1
        if j < nc and cs[j].path == p:
            ce = cs[j]
            j += 1
        if k < nr and rs[k].path == p:
            re_ = rs[k]
            k += 1
        yield p, le, ce, re_
