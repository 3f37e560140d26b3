"""The production gate (role dsg_preflight, playbooks/preflight.yml, first in every playbook).

The real ansible-playbook runs site.yml --check against a minimal inventory (two hosts on
this machine, connection local): in production without a backup target, an alert channel or
retention it stops in the gate, naming each, before any other play runs; with them set it
passes the gate and goes on. The checks themselves are unit-tested on the filter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.ansible._load import load
from tests.ansible.conftest import REPO

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
    assert problems(backup_target="")[0].startswith("backup: no backup target")
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


# --- every target, push or pull -----------------------------------------------------------

SERVER = "srv1"
PULL_RETENTION = [{"name": "backup/dsg", "template": "dsg_backup", "recursive": "yes"}]


def backup_host(*pulls: dict, extra=PULL_RETENTION) -> dict:
    return {"groups": ["dsg_backup_hosts", "dsg_zfs_hosts"], "extra": extra, "pulls": list(pulls)}


def pull(name: str, to: str = "backup/dsg", source: str = SERVER) -> dict:
    return {"name": name, "from": "10.0.0.1", "from_inventory_host": source, "to": to}


def pulled(**kw):
    """A server backed up only by pulls: onsite (bk1) and offsite (bk2)."""
    args = {
        "backup_target": "",
        "backup_target_host": "",
        "remote": None,
        "host": SERVER,
        "pull_keys": [
            {"name": "onsite", "from_host": "bk1"},
            {"name": "offsite", "from_host": "bk2"},
        ],
        "inventory": {
            SERVER: {"groups": ["dsg_servers"], "extra": [], "pulls": []},
            "bk1": backup_host(pull("onsite")),
            "bk2": backup_host(pull("offsite")),
        },
    }
    args.update(kw)
    return problems(**args)


def test_gate_checks_every_pull():
    assert pulled() == []
    # no target of either kind
    assert pulled(pull_keys=[], inventory={})[0].startswith("backup: no backup target")
    # a key whose backup host has no such pull: nothing would pull
    base = {
        SERVER: {"groups": ["dsg_servers"], "extra": [], "pulls": []},
        "bk1": backup_host(pull("onsite")),
        "bk2": backup_host(),
    }
    assert pulled(inventory=base) == [
        "backup: the backup host bk2 has no pull offsite from srv1 (dsg_backup_host_pulls with "
        "name and from_inventory_host): nothing would pull"
    ]
    # a key naming a host outside the inventory's backup hosts
    base2 = {**base, "bk2": {"groups": ["dsg_zfs_hosts"], "extra": [], "pulls": []}}
    assert "not a host of this inventory's dsg_backup_hosts" in pulled(inventory=base2)[0]
    del base2["bk2"]
    assert "not a host of this inventory's dsg_backup_hosts" in pulled(inventory=base2)[0]
    # a bare key: its backup host (and the retention there) is unknown
    bare = [{"name": "onsite", "from_host": "bk1"}, {"name": "x", "key": "ssh-ed25519 AAAA"}]
    assert any("given as a bare key" in p for p in pulled(pull_keys=bare))
    # the off-site copies are not pruned there
    unpruned = {**base, "bk2": backup_host(pull("offsite"), extra=[])}
    (why,) = pulled(inventory=unpruned)
    assert why.startswith("retention: no dsg_retention_extra_datasets entry on bk2 covers")
    # a pull into another dataset than the retention covers
    elsewhere = {**base, "bk2": backup_host(pull("offsite", to="tank2/copies"))}
    assert "covers the backup copies in tank2/copies" in pulled(inventory=elsewhere)[0]
    # the other way: a backup host pulls from here with no key here
    extra_pull = {**base, "bk2": backup_host(pull("offsite")), "bk3": backup_host(pull("third"))}
    (why,) = pulled(inventory=extra_pull)
    assert why.startswith("backup: bk3 pulls third from here, but dsg_backup_pull_keys has no")
    # a pull from another server does not concern this one
    other = {
        **base,
        "bk2": backup_host(pull("offsite")),
        "bk3": backup_host(pull("t", source="s2")),
    }
    assert pulled(inventory=other) == []


def test_gate_checks_every_push_target_and_pulls_beside_them():
    """dsg_backup_targets: each one's copies pruned where they are kept; a local unnamed
    target plus a pull: both checked."""
    inv = {"bk1": backup_host()}
    targets = [{"name": "offsite", "target": "backup/dsg", "host": "dsg-backup@bk1"}]
    assert pulled(pull_keys=[], targets=targets, inventory=inv) == []
    far = [{"name": "far", "target": "backup/dsg", "host": "root@[2001:db8::1]"}]
    assert "2001:db8::1 of dsg_backup_targets far is not a host of this inventory" in pulled(
        pull_keys=[], targets=far, inventory=inv)[0]  # fmt: skip
    unpruned = {"bk1": backup_host(extra=[])}
    assert "on bk1 covers the backup copies in backup/dsg" in pulled(
        pull_keys=[], targets=targets, inventory=unpruned)[0]  # fmt: skip
    local = [{"name": "second", "target": "tank/copies", "host": ""}]
    assert "on this host covers the backup copies in tank/copies" in pulled(
        pull_keys=[], targets=local, inventory=inv)[0]  # fmt: skip
    nameless = [{"name": "t", "target": ""}]
    assert "dsg_backup_targets t has no target dataset" in pulled(targets=nameless)[0]
    # the unnamed local target and a pull: both must be kept under pruning retention
    both = pulled(
        backup_target="backup/dsg", own_extra=[],
        pull_keys=[{"name": "onsite", "from_host": "bk2"}],
        inventory={**inv, "bk2": backup_host(pull("onsite"))},
    )  # fmt: skip
    assert both == [
        "retention: no dsg_retention_extra_datasets entry on this host covers the backup "
        "copies in backup/dsg (e.g. {name: backup/dsg, template: dsg_backup, recursive: 'yes'})"
    ]


def test_gate_on_a_backup_host_checks_each_pulls_copies():
    def bk(pulls, extra):
        return gate.dsg_preflight_problems(
            ["dsg_backup_hosts"], templates=TEMPLATES, own_extra=extra, pulls=pulls, host="bk1"
        )

    assert bk([pull("onsite")], PULL_RETENTION) == []
    (why,) = bk([pull("onsite", to="other/copies")], PULL_RETENTION)
    assert why.startswith("pull onsite: retention: no dsg_retention_extra_datasets entry on "
                          "this host covers the backup copies in other/copies")  # fmt: skip
    assert bk([pull("onsite")], [])[0].startswith("retention: this backup host has no")


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
        "backup: no backup target",
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


VAULT_STAND_INS = (
    "-e", "vault_dsg_alert_webhook_url=https://alert-sink.example/dsg",
    "-e", "vault_dsg_alert_webhook_token=stand-in",
)  # fmt: skip


def resolved(ansible_tools, inventory: str, pattern: str, var: str) -> dict[str, object]:
    """A variable of each host of `pattern`, templated as the plays see it."""
    run = ansible_tools.run(
        "ansible", "-i", inventory, pattern, "-m", "ansible.builtin.debug",
        "-a", f"msg={{{{ {var} | to_json }}}}", "-o",
    )  # fmt: skip
    assert run.returncode == 0, run.explain()
    out: dict[str, object] = {}
    for line in run.stdout.splitlines():
        host, sep, rest = line.partition(" | SUCCESS => ")
        if sep:
            msg = json.loads(rest)["msg"]
            out[host.strip()] = json.loads(msg) if isinstance(msg, str) else msg
    return out


def test_staging_and_production_are_backed_up_by_pulls_and_pass_the_gate(ansible_tools):
    """The real inventories, through the shared layer: every backup host pulls the server
    under its own name, the server's pull account takes exactly those keys, it pushes
    nothing; the gate (which checks each pull both ways and the retention of its copies)
    lets the run through with the vault's values stood in."""
    want = {
        "staging": {"dsgbackup1.staging.hrdag.example": "onsite"},
        "production": {"dsgbackup1.prod.hrdag.example": "onsite",
                       "dsgbackup2.offsite.hrdag.example": "offsite"},
    }  # fmt: skip
    for env, pullers in want.items():
        inv = f"inventories/{env}"
        server = f"dsg1.{'prod' if env == 'production' else env}.hrdag.example"
        keys = resolved(ansible_tools, inv, "dsg_servers", "dsg_backup_pull_keys")[server]
        assert keys == [{"name": n, "from_host": h} for h, n in pullers.items()], (env, keys)
        assert resolved(ansible_tools, inv, "dsg_servers", "dsg_backup_target")[server] == ""
        pulls = resolved(ansible_tools, inv, "dsg_backup_hosts", "dsg_backup_host_pulls")
        assert pulls == {
            h: [{"name": n, "from": server, "from_inventory_host": server, "to": "backup/dsg"}]
            for h, n in pullers.items()
        }, (env, pulls)
        run = ansible_tools.run("ansible-playbook", "-i", inv, "playbooks/preflight.yml",
                                *VAULT_STAND_INS)  # fmt: skip
        assert run.returncode == 0, run.explain()
        assert "PRODUCTION GATE" not in run.stdout, run.explain()
        assert set(run.recap()) == {server, *pullers}, run.explain()
    # development: one host pulling from itself, over the loopback
    pulls = resolved(ansible_tools, "inventories/development", "all", "dsg_backup_host_pulls")
    assert pulls["dsg-dev.local"][0]["from"] == "127.0.0.1", pulls


def test_a_production_pull_without_its_other_half_stops_in_the_gate(ansible_tools, tmp_path):
    """A copy of production whose off-site backup host lost its pull (the server still has
    its key), and one whose off-site copies are not pruned: the gate names each."""
    import shutil

    copy = tmp_path / "production"
    shutil.copytree(REPO / "inventories" / "production", copy, symlinks=False)
    offsite = copy / "host_vars" / "dsgbackup2.offsite.hrdag.example.yml"
    offsite.write_text(offsite.read_text() + "dsg_backup_host_pulls: []\n")
    run = ansible_tools.run("ansible-playbook", "-i", str(copy), "playbooks/preflight.yml",
                            *VAULT_STAND_INS)  # fmt: skip
    text = " ".join(run.stdout.split())
    assert run.returncode != 0, run.explain()
    assert "PRODUCTION GATE: refusing to run in production on dsg1.prod.hrdag.example" in text
    assert (
        "backup: the backup host dsgbackup2.offsite.hrdag.example has no pull offsite from "
        "dsg1.prod.hrdag.example"
    ) in text, run.explain()

    offsite.write_text(offsite.read_text().replace("dsg_backup_host_pulls: []\n", "")
                       + "dsg_retention_extra_datasets: []\n")  # fmt: skip
    run = ansible_tools.run("ansible-playbook", "-i", str(copy), "playbooks/preflight.yml",
                            *VAULT_STAND_INS)  # fmt: skip
    text = " ".join(run.stdout.split())
    assert run.returncode != 0, run.explain()
    assert (
        "retention: no dsg_retention_extra_datasets entry on dsgbackup2.offsite.hrdag.example "
        "covers the backup copies in backup/dsg"
    ) in text, run.explain()
