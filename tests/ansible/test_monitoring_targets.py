"""Role dsg_monitoring's replication targets: every backup target of a server (the unnamed
push target, each named push target, each pull by a backup host) reaches the health
configuration, in the form the engine's HealthConfig accepts."""

from __future__ import annotations

import pytest

from dsg.admin.health import HealthConfig
from tests.ansible._load import load

pytestmark = pytest.mark.ansible

f = load("dsg_monitoring/filter_plugins/dsg_monitoring.py")


def test_every_target_is_listed_once_in_the_engines_form():
    targets = f.dsg_monitoring_replication_targets(
        "backup/dsg",
        "dsg-backup@bk1",
        [{"name": "second", "target": "tank2/copies", "host": "", "projects": ["p1"]}],
        [{"name": "onsite", "from_host": "bk1"}, {"name": "offsite", "key": "ssh-ed25519 AAAA"}],
    )
    assert targets == [
        {"target": "backup/dsg", "mode": "push"},
        {"name": "second", "mode": "push", "projects": ["p1"]},
        {"name": "onsite", "mode": "pull"},
        {"name": "offsite", "mode": "pull"},
    ]
    cfg = HealthConfig.model_validate({"replication_targets": targets})
    assert [t.tag for t in cfg.replication_targets] == [
        "dsg-backup-backup", "dsg-backup-second", "dsg-backup-onsite", "dsg-backup-offsite",
    ]  # fmt: skip


def test_a_local_unnamed_target_is_compared_directly_not_by_holds():
    # (the role's dsg_monitoring_backup_target carries it: the copies are on this host)
    assert f.dsg_monitoring_replication_targets("backup/dsg", "", [], []) == []
    assert f.dsg_monitoring_replication_targets("", "", None, None) == []
    # the projects a pull key may send bound the check
    assert f.dsg_monitoring_replication_targets(
        "", "", [], [{"name": "onsite", "from_host": "b"}], ["a", "b"]
    ) == [{"name": "onsite", "mode": "pull", "projects": ["a", "b"]}]
