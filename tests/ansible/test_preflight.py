"""The production gate (role dsg_preflight, playbooks/preflight.yml, first in every playbook).

The real ansible-playbook runs site.yml --check against a minimal inventory (two hosts on
this machine, connection local): in production without a backup target, an alert channel or
retention it stops in the gate, naming each, before any other play runs; with them set it
passes the gate and goes on. The checks themselves are unit-tested on the filter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.ansible._load import load

pytestmark = pytest.mark.ansible

gate = load("dsg_preflight/filter_plugins/dsg_preflight.py")

TEMPLATES = {
    "dsg_none": {"autosnap": False, "autoprune": False},
    "dsg_backup": {"autosnap": False, "autoprune": True, "daily": 90},
}
ALERTS = {"webhook": {"url": "https://hooks.example/x", "headers": {"Authorization": "t"}}}
BACKUP_RETENTION = [{"name": "backup/dsg", "template": "dsg_backup", "recursive": "yes"}]


def problems(**kw):
    args = {
        "groups": ["dsg_servers", "dsg_zfs_hosts"],
        "backup_target": "backup/dsg",
        "backup_target_host": "dsg-backup@bk1",
        "alerts": ALERTS,
        "projects": [{"name": "p1"}],
        "templates": TEMPLATES,
        "default_template": "dsg_none",
        "own_extra": [],
        "remote": {"name": "bk1", "groups": ["dsg_backup_hosts"], "extra": BACKUP_RETENTION},
    }
    args.update(kw)
    groups = args.pop("groups")
    return gate.dsg_preflight_problems(groups, **args)


def test_gate_checks():
    assert problems() == []
    assert problems(backup_target="")[0].startswith("backup: dsg_backup_target is empty")
    assert problems(alerts={})[0].startswith("alerts: dsg_monitoring_alerts has no channel")
    assert problems(alerts={"email": {"to": []}, "webhook": {"url": " "}})
    assert problems(alerts={"email": {"to": ["ops@example.org"]}}) == []
    # retention of the copies: on the backup host, which must be in the inventory's group
    assert "covers the backup copies in backup/dsg" in problems(remote={
        "name": "bk1", "groups": ["dsg_backup_hosts"], "extra": []})[0]  # fmt: skip
    assert "not in dsg_backup_hosts" in problems(remote={"name": "bk1", "groups": []})[0]
    assert "not a host of this inventory" in problems(remote={})[0]
    # a template that never prunes does not bound how long copies are kept
    keep_all = [{"name": "backup", "template": "dsg_none", "recursive": "yes"}]
    assert "does not prune" in problems(remote={
        "name": "bk1", "groups": ["dsg_backup_hosts"], "extra": keep_all})[0]  # fmt: skip
    # a local target: this host's own retention covers it (a recursive parent counts)
    local = {"backup_target_host": "", "remote": None}
    assert "on this host" in problems(**local)[0]
    parent = [{"name": "backup", "template": "dsg_backup", "recursive": "yes"}]
    assert problems(own_extra=parent, **local) == []
    not_recursive = [{"name": "backup", "template": "dsg_backup"}]
    assert problems(own_extra=not_recursive, **local)
    # projects' templates must exist
    assert "template 'dsg_gone'" in problems(projects=[{"name": "p", "retention": "dsg_gone"}])[0]
    assert problems(projects=[{"name": "p", "retention": "dsg_gone", "state": "absent"}]) == []
    # a backup host alone: retention of what it receives
    backup_host = {"groups": ["dsg_backup_hosts"], "own_extra": []}
    assert problems(**backup_host)[0].startswith("retention: this backup host")
    assert problems(groups=["dsg_backup_hosts"], own_extra=BACKUP_RETENTION) == []
    # never a value in a message (alerts carry secrets)
    secret = {"webhook": {"url": "", "headers": {"Authorization": "Bearer SECRET-1"}}}
    assert "SECRET-1" not in " ".join(problems(alerts=secret, backup_target=""))


def minimal_inventory(path: Path, complete: bool) -> Path:
    """Two hosts on this machine: a dsg server and its backup host, in production."""
    server: dict = {"ansible_host": "localhost"}
    backup: dict = {"ansible_host": "localhost"}
    if complete:
        server.update(
            dsg_backup_target="backup/dsg",
            dsg_backup_target_host="dsg-backup@gate-backup",
            dsg_monitoring_alerts={"email": {"to": ["ops@example.org"]}},
        )
        backup["dsg_retention_extra_datasets"] = BACKUP_RETENTION
    inv = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_become": False,
                "ansible_python_interpreter": "/usr/bin/python3",
                "dsg_environment": "production",
                "dsg_pool": "tank",
                "dsg_dataset_parent": "tank/dsg",
                "dsg_mountpoint_root": "/var/repos/dsg",
                "dsg_users": [{"name": "alice", "ssh_keys": []}],
                "dsg_projects": [{"name": "p1", "group": "dsg-p1", "users": {"alice": "admin"}}],
            }
        },
        "dsg_zfs_hosts": {
            "children": {
                "dsg_servers": {"hosts": {"gate-server": server}},
                "dsg_backup_hosts": {"hosts": {"gate-backup": backup}},
            }
        },
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "hosts.yml").write_text(yaml.safe_dump(inv))
    return path


def test_production_run_without_backups_alerts_retention_stops_in_the_gate(ansible_tools, tmp_path):
    inv = minimal_inventory(tmp_path / "incomplete", complete=False)
    run = ansible_tools.run("ansible-playbook", "-i", str(inv), "playbooks/site.yml", "--check")
    assert run.returncode != 0, run.explain()
    text = " ".join(run.stdout.split())
    assert "PRODUCTION GATE: refusing to run in production on gate-server" in text, run.explain()
    assert "nothing has been changed on any host" in text
    for why in (
        "backup: dsg_backup_target is empty",
        "alerts: dsg_monitoring_alerts has no channel",
        "retention: this backup host has no dsg_retention_extra_datasets entry",
    ):
        assert why in text, f"{why!r} missing:\n{run.explain()}"
    # stopped before any other play: no fact gathering, no role task, nothing changed
    assert "PLAY [Provision ZFS hosts]" not in run.stdout, run.explain()
    assert "TASK [dsg_zfs_host" not in run.stdout and "Gathering Facts" not in run.stdout
    assert all(r["changed"] == 0 for r in run.recap().values()), run.explain()


def test_production_run_with_them_set_passes_the_gate(ansible_tools, tmp_path):
    inv = minimal_inventory(tmp_path / "complete", complete=True)
    # --tags matching no task: the gate (tagged always) runs, then every play starts (facts
    # of this machine, role argument checks) and no role task runs.
    run = ansible_tools.run(
        "ansible-playbook", "-i", str(inv), "playbooks/site.yml", "--check",
        "--tags", "dsg-gate-test-no-such-tag",
    )  # fmt: skip
    assert run.returncode == 0, run.explain()
    assert "PRODUCTION GATE" not in run.stdout, run.explain()
    assert "PLAY [Provision ZFS hosts]" in run.stdout and "PLAY [Deploy dsg servers]" in run.stdout
    recap = run.recap()
    assert set(recap) == {"gate-server", "gate-backup"}, run.explain()
    assert all(r["failed"] == 0 and r["changed"] == 0 for r in recap.values()), run.explain()


def test_real_inventories_are_gated(ansible_tools):
    """Production and staging declare the environment the gate enforces; the others not."""
    for env, gated in (("production", True), ("staging", True), ("development", False)):
        run = ansible_tools.run(
            "ansible", "-i", f"inventories/{env}", "dsg_servers", "-m", "ansible.builtin.debug",
            "-a", "var=dsg_environment",
        )  # fmt: skip
        assert run.returncode == 0, run.explain()
        assert f'"{env}"' in run.stdout or f": {env}" in run.stdout, run.explain()
        assert (env in ("production", "staging")) == gated
