"""The 15 sync states as a pure function, one test per state, plus plan actions."""

from __future__ import annotations

import pytest

from dsg.core.compare import CONFLICT_STATES, SyncState, classify, merge3
from dsg.core.manifest import Entry, Manifest
from dsg.core.plan import Action, Resolution, fingerprint, make_plan, resolve_action


def f(content: str, path: str = "t/input/x") -> Entry:
    from dsg.fs.files import hash_bytes

    return Entry(path, len(content), 1, hash_bytes(content.encode()))


A, B, C = f("a"), f("b"), f("c")

CASES = [
    # (L, C, R, state, action)
    (A, A, A, "sLCR__all_eq", "none"),
    (A, A, B, "sLCR__L_eq_C_ne_R", "download"),
    (B, A, B, "sLCR__L_eq_R_ne_C", "none"),
    (B, A, A, "sLCR__C_eq_R_ne_L", "upload"),
    (A, B, C, "sLCR__all_ne", "conflict"),
    (None, A, A, "sxLCR__C_eq_R", "delete_remote"),
    (None, A, B, "sxLCR__C_ne_R", "conflict"),
    (A, None, A, "sLxCR__L_eq_R", "none"),
    (A, None, B, "sLxCR__L_ne_R", "conflict"),
    (A, A, None, "sLCxR__L_eq_C", "delete_local"),
    (B, A, None, "sLCxR__L_ne_C", "conflict"),
    (None, None, A, "sxLCxR__only_R", "download"),
    (None, A, None, "sxLCRx__only_C", "none"),
    (A, None, None, "sLxCxR__only_L", "upload"),
    (None, None, None, "sxLxCxR__none", "none"),
]


def test_every_state_has_a_case() -> None:
    assert {c[3] for c in CASES} == {s.value for s in SyncState}
    assert len(SyncState) == 15


@pytest.mark.parametrize(
    ("local", "base", "remote", "state", "action"), CASES, ids=[c[3] for c in CASES]
)
def test_state(local, base, remote, state, action) -> None:
    got = classify(local, base, remote)
    assert got.value == state
    assert (got in CONFLICT_STATES) == (action == "conflict")
    plan = make_plan(
        Manifest([local] if local else []),
        Manifest([base] if base else []),
        Manifest([remote] if remote else []),
        keep_unchanged=True,
    )
    if state == "sxLxCxR__none":
        assert plan.items == []
    else:
        assert [(it.state.value, it.action.value) for it in plan.items] == [(state, action)]


def test_mtime_only_change_is_not_a_change() -> None:
    a2 = Entry(A.path, A.size, 999, A.hash)
    assert classify(a2, A, A) is SyncState.sLCR__all_eq


def test_link_versus_file_differs() -> None:
    link = Entry("t/input/x", target="y")
    assert classify(link, A, A) is SyncState.sLCR__C_eq_R_ne_L
    assert classify(link, link, Entry("t/input/x", target="z")) is SyncState.sLCR__L_eq_C_ne_R


def test_merge3_walks_union_in_order() -> None:
    m = lambda *ps: Manifest([f("x", p) for p in ps])  # noqa: E731
    got = [p for p, *_ in merge3(m("a", "c"), m("b", "c"), m("a", "d"))]
    assert got == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("local", "base", "remote", "choice", "action", "backup"),
    [
        (A, B, C, "local", Action.upload, False),
        (A, B, C, "remote", Action.download, True),
        (A, B, C, "base", Action.restore, True),
        (None, A, B, "local", Action.delete_remote, False),
        (None, A, B, "remote", Action.download, False),
        (A, None, B, "remote", Action.download, True),
        (B, A, None, "remote", Action.delete_local, True),
        (B, A, None, "local", Action.upload, False),
        (B, A, None, "base", Action.restore, True),
    ],
)
def test_resolution_actions(local, base, remote, choice, action, backup) -> None:
    assert resolve_action(choice, local, base, remote) == (action, backup)


def test_resolution_applies_only_to_the_triple_it_was_made_on() -> None:
    res = {A.path: Resolution(A.path, "local", fingerprint(A), fingerprint(B), fingerprint(C))}
    plan = make_plan(Manifest([A]), Manifest([B]), Manifest([C]), res)
    assert plan.items[0].action is Action.upload
    # the remote changed again since the choice: the conflict is back, and the stale choice says so
    d = f("d")
    plan = make_plan(Manifest([A]), Manifest([B]), Manifest([d]), res)
    assert plan.items[0].action is Action.conflict
    assert plan.stale_resolutions == [A.path]
