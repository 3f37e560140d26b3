"""Every backup target in `dsg admin health` and `dsg admin metrics`, seen from the primary's
holds (pure parts): the `replication_targets` configuration, the hold tag of each kind of
target, and the evaluation of what a target confirmed. The real `zfs holds` path runs on
OpenZFS in tests/vm/test_site_playbook_backup_pull.py (zfs-fuse cannot list holds: the
UNKNOWN it reports there is checked in tests/lab_ssh/test_backup_pull_ssh.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dsg.admin import backup
from dsg.admin.health import (
    HOLD_PREFIX,
    HealthConfig,
    HeldState,
    ReplicationTarget,
    Status,
    evaluate_held_replication,
    load_health_config,
)
from dsg.admin.metrics import Family, render
from dsg.core.errors import ConfigError

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CFG = HealthConfig(replication_lag_warn_hours=26, replication_lag_crit_hours=72)


def ago(hours: float) -> int:
    return int((NOW - timedelta(hours=hours)).timestamp())


def test_each_kind_of_target_has_the_hold_tag_its_backups_move() -> None:
    """The tags are the ones `dsg admin backup` / `pull` hold under (backup.hold_tag)."""
    assert HOLD_PREFIX == backup.HOLD_PREFIX
    pulled = ReplicationTarget(name="offsite")
    assert pulled.tag == backup.hold_tag("backup/dsg", "offsite") == "dsg-backup-offsite"
    assert (pulled.label, pulled.mode) == ("offsite", "pull")
    unnamed = ReplicationTarget(target="backup/dsg", mode="push")
    assert unnamed.tag == backup.hold_tag("backup/dsg") == "dsg-backup-backup"
    assert unnamed.label == "backup/dsg"
    some = ReplicationTarget(name="onsite", projects=["a"])
    assert some.covers("a") and not some.covers("b") and pulled.covers("b")


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({}, "give the target's name"),
        ({"name": "a", "target": "backup/dsg"}, "give the target's name"),
        ({"name": "Off site"}, "1-32 of a-z"),
        ({"name": "x" * 33}, "1-32 of a-z"),
        ({"target": "-oops"}, "target"),
        ({"name": "a", "mode": "both"}, "mode"),
        ({"name": "a", "projects": ["../etc"]}, "not a project name"),
        ({"name": "a", "host": "b"}, "host"),
    ],
)
def test_a_bad_target_is_refused(entry: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ReplicationTarget.model_validate(entry)


def test_targets_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "health.yml"
    path.write_text(
        "replication_targets:\n  - {name: onsite}\n  - {name: offsite, projects: [p1]}\n"
        "  - {target: backup/dsg, mode: push}\n"
    )
    cfg = load_health_config(path)
    assert [t.tag for t in cfg.replication_targets] == [
        "dsg-backup-onsite", "dsg-backup-offsite", "dsg-backup-backup",
    ]  # fmt: skip
    # two targets with one tag would read each other's holds
    path.write_text("replication_targets:\n  - {name: onsite}\n  - {name: onsite}\n")
    with pytest.raises(ConfigError, match="share a hold tag"):
        load_health_config(path)
    assert HealthConfig().replication_targets == []


def test_a_target_in_sync_behind_or_never_confirmed() -> None:
    t = ReplicationTarget(name="offsite")
    snaps = (("s1", ago(100)), ("s2", ago(30)), ("s3", ago(2)))

    c = evaluate_held_replication("p", t, HeldState(snaps, "s3"), NOW, CFG)
    assert (c.check, c.target, c.status, c.value) == ("replication", "p@offsite", Status.OK, 0)
    assert c.message.startswith("in sync (confirmed s3)"), c.message

    # behind by s3 only: its age (2 h) is the lag
    c = evaluate_held_replication("p", t, HeldState(snaps, "s2"), NOW, CFG)
    assert c.status is Status.OK and c.value == pytest.approx(2)
    assert "confirmed up to s2; 1 snapshot(s) behind" in c.message

    # behind by s2 and s3: the oldest unconfirmed (30 h) is the lag -> WARNING
    c = evaluate_held_replication("p", t, HeldState(snaps, "s1"), NOW, CFG)
    assert c.status is Status.WARNING and c.value == pytest.approx(30)
    assert "2 snapshot(s) behind" in c.message and "(warn 26 h, crit 72 h)" in c.message

    # never confirmed: CRITICAL whatever the age, naming the tag and the kind of target
    c = evaluate_held_replication("p", t, HeldState(snaps[2:], None), NOW, CFG)
    assert c.status is Status.CRITICAL and c.value == pytest.approx(2)
    assert "no dsg-backup-offsite hold" in c.message and "pull target offsite" in c.message

    # nothing to back up yet is not a failure
    c = evaluate_held_replication("p", t, HeldState((), None), NOW, CFG)
    assert c.status is Status.OK and "no snapshot" in c.message


def test_lag_thresholds_apply_per_target() -> None:
    push = ReplicationTarget(target="backup/dsg", mode="push")
    state = HeldState((("s1", ago(200)), ("s2", ago(80))), "s1")
    c = evaluate_held_replication("p", push, state, NOW, CFG)
    assert (c.target, c.status) == ("p@backup/dsg", Status.CRITICAL)
    loose = HealthConfig(replication_lag_warn_hours=None, replication_lag_crit_hours=100)
    assert evaluate_held_replication("p", push, state, NOW, loose).status is Status.OK


def test_held_state_missing_and_lag() -> None:
    state = HeldState((("s1", ago(5)), ("s2", ago(3)), ("s3", ago(1))), "s1")
    assert [n for n, _ in state.missing()] == ["s2", "s3"]
    assert state.lag_seconds(NOW) == pytest.approx(3 * 3600)
    assert HeldState((("s1", ago(5)),), None).lag_seconds(NOW) == pytest.approx(5 * 3600)
    # a clock behind the snapshots never gives a negative lag
    assert HeldState((("s1", ago(-1)),), None).lag_seconds(NOW) == 0


def test_the_per_target_families_render() -> None:
    fam = Family("dsg_backup_confirmed_snapshot", "newest confirmed", "gauge")
    fam.add(3, project="p", name="offsite", mode="pull")
    text = render([fam])
    assert 'dsg_backup_confirmed_snapshot{project="p",name="offsite",mode="pull"} 3' in text
