"""make_plan's shortcut when the repository's head is the base (remote is base): the plan
is the one the three-way walk gives with a copy of the base as the remote side."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dsg.core.manifest import Entry, Manifest
from dsg.core.plan import Resolution, make_plan

PATHS = sorted([f"t/input/{c}.csv" for c in "abcdefgh"] + ["t/input/d/x.csv", "t/output/l"])
CONTENTS = [b"1" * 32, b"2" * 32, b"3" * 32]


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    entries = []
    for p in PATHS:
        kind = draw(st.sampled_from(["absent", "file", "file", "link"]))
        if kind == "file":
            h = draw(st.sampled_from(CONTENTS))
            entries.append(Entry(p, 3, 1, h))
        elif kind == "link":
            entries.append(Entry(p, 0, 0, None, draw(st.sampled_from(["a.csv", "b.csv"]))))
    return Manifest(entries, "s3")


def as_rows(plan) -> list[tuple]:
    return [(it.path, it.state, it.action, it.choice) for it in plan.items]


@settings(max_examples=300, deadline=None)
@given(manifests(), manifests(), st.sets(st.sampled_from(PATHS), max_size=3))
def test_the_shortcut_is_the_three_way_plan(local: Manifest, base: Manifest, untracked) -> None:
    copy = Manifest(list(base.entries), base.snapshot)

    def tracked(p: str) -> bool:
        return p not in untracked

    resolutions = {
        p: Resolution(p, "local", "-", "-", "-") for p in PATHS[:2]
    }  # stale ones: reported alike
    fast = make_plan(local, base, base, resolutions, tracked=tracked)
    slow = make_plan(local, base, copy, resolutions, tracked=tracked)
    assert as_rows(fast) == as_rows(slow)
    assert fast.unchanged == slow.unchanged
    assert fast.untracked == slow.untracked
    assert fast.stale_resolutions == slow.stale_resolutions
