"""The replication planner (pure): what to send, and what it must refuse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsg.admin.backup import BackupDiverged, SnapInfo, Step, plan_replication


def snaps(*names: str, guid_of=lambda n: f"g-{n}") -> list[SnapInfo]:
    return [SnapInfo(n, guid_of(n), i) for i, n in enumerate(names)]


def test_new_target_gets_a_full_send_then_one_step_per_snapshot() -> None:
    src = snaps("s1", "autosnap_2026-11-29_hourly", "s2", "s3")
    plan = plan_replication("p/dsg/x", "b/dsg/x", src, None)
    assert plan.steps == (Step("s1", None), Step("s2", "s1"), Step("s3", "s2"))
    assert plan.common is None and plan.source_head == "s3"


def test_incremental_from_the_newest_common_snapshot() -> None:
    plan = plan_replication("p", "b", snaps("s1", "s2", "s3", "s4"), snaps("s1", "s2"))
    assert plan.common == "s2"
    assert plan.steps == (Step("s3", "s2"), Step("s4", "s3"))


def test_up_to_date_sends_nothing_and_ignores_foreign_snapshots() -> None:
    dst = snaps("s1", "s2", "autosnap_x")
    plan = plan_replication("p", "b", snaps("s1", "s2"), dst)
    assert plan.up_to_date and plan.common == "s2"


def test_empty_source_plans_nothing() -> None:
    plan = plan_replication("p", "b", snaps("autosnap_x"), None)
    assert plan.up_to_date and plan.source_head is None


@pytest.mark.parametrize(
    ("dst", "message"),
    [
        (snaps("s1", "s2", guid_of=lambda n: "other" if n == "s2" else f"g-{n}"), "differs"),
        (snaps("s1", "s2", "s3"), "b@s3 is not on the primary"),
        (snaps("autosnap_x"), "none of dsg's"),
        ([], "has no snapshots"),
        (snaps("s2"), "skips snapshots"),
    ],
)
def test_a_backup_that_does_not_continue_the_primary_is_refused(dst, message) -> None:
    with pytest.raises(BackupDiverged, match=message):
        plan_replication("p", "b", snaps("s1", "s2"), dst)


names = st.integers(min_value=1, max_value=30).map(lambda n: [f"s{i}" for i in range(1, n + 1)])


@given(names, st.data())
def test_replaying_the_plan_makes_the_target_equal_the_source(src_names, data) -> None:
    k = data.draw(st.integers(min_value=0, max_value=len(src_names)))
    src = snaps(*src_names)
    dst = None if k == 0 else snaps(*src_names[:k])
    plan = plan_replication("p", "b", src, dst)
    have = [] if dst is None else [s.name for s in dst]
    for step in plan.steps:
        # every incremental starts from what the target has last; a full send only when empty
        assert step.base == (have[-1] if have else None)
        have.append(step.snapshot)
    assert have == src_names
