"""Several backup targets and pull mode in the roles, the pure parts: dsg_backup's targets
(the single-target variables unchanged, named targets beside them), their jobs, the pull
account's forced-command lines; dsg_backup_host's pulls and jobs; dsg_access's extra
delegations."""

from __future__ import annotations

import shlex

import pytest

from tests.ansible._load import load

bk = load("dsg_backup/filter_plugins/dsg_backup.py")
bh = load("dsg_backup_host/filter_plugins/dsg_backup_host.py")
acc = load("dsg_access/filter_plugins/dsg_access.py")

DSG = "/usr/local/bin/dsg"
LEGACY = {
    "name": "", "target": "backup/dsg", "host": "", "prefix": "", "ssh_command": "",
    "projects": [], "schedule": "17 * * * *", "local": True, "create": True,
    "properties": {}, "drill": True, "drill_projects": ["a", "b"],
    "drill_schedule": "43 4 * * 0", "drill_schedules": {"b": "1 2 * * 3"},
    "scratch": "backup/dsg-drill",
}  # fmt: skip
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk2 dsg-pull-offsite@bk1"


def jobs(targets: list[dict]) -> list[dict]:
    return bk.dsg_backup_target_jobs(
        targets, "/run/lock", "/var/log/dsg", DSG, "/etc/dsg/access.yml", "/tf"
    )


def test_the_single_target_keeps_its_jobs() -> None:
    """What dsg_backup wrote before dsg_backup_targets existed, job for job."""
    targets = bk.dsg_backup_targets([LEGACY], [], "17 * * * *", "43 4 * * 0", ["a", "b"])
    got = jobs(targets)
    assert got[0] == {
        "name": "backup",
        "schedule": "17 * * * *",
        "lock": "/run/lock/dsg-backup.lock",
        "log": "/var/log/dsg/backup.log",
        "argv": [DSG, "admin", "backup", "--to", "backup/dsg", "--access-file",
                 "/etc/dsg/access.yml", "--textfile-dir", "/tf"],
    }  # fmt: skip
    assert [(j["name"], j["schedule"], j["lock"]) for j in got[1:]] == [
        ("restore-drill a", "43 4 * * 0", "/run/lock/dsg-restore-drill-a.lock"),
        ("restore-drill b", "1 2 * * 3", "/run/lock/dsg-restore-drill-b.lock"),
    ]
    assert "--name" not in got[1]["argv"]


def test_named_targets_beside_it() -> None:
    named = [
        {"name": "onsite2", "target": "bk2/dsg", "schedule": "*/30 * * * *"},
        {"name": "offsite", "target": "backup/dsg", "host": "dsg-backup@bk9",
         "ssh_command": "ssh -i /root/.ssh/k", "projects": ["a"]},
    ]  # fmt: skip
    targets = bk.dsg_backup_targets([LEGACY], named, "17 * * * *", "43 4 * * 0", ["a", "b"])
    assert [t["name"] for t in targets] == ["", "onsite2", "offsite"]
    assert targets[1]["drill"] is True and targets[1]["scratch"] == "bk2/dsg-drill"
    assert targets[2]["drill"] is False and targets[2]["local"] is False
    by_name = {j["name"]: j for j in jobs(targets)}
    assert by_name["backup onsite2"]["lock"] == "/run/lock/dsg-backup-onsite2.lock"
    assert by_name["backup onsite2"]["schedule"] == "*/30 * * * *"
    assert by_name["backup onsite2"]["argv"][5:7] == ["--name", "onsite2"]
    off = by_name["backup offsite"]["argv"]
    assert off[:2] == ["env", "DSG_SSH_COMMAND=ssh -i /root/.ssh/k"]
    assert off[-1] == "a" and "--to-host" in off and "--name" in off
    drill = by_name["restore-drill onsite2 a"]
    assert drill["lock"] == "/run/lock/dsg-restore-drill-onsite2-a.lock"
    assert drill["argv"][-4:] == ["--name", "onsite2", "--textfile-dir", "/tf"]
    # every job has its own lock
    assert len({j["lock"] for j in jobs(targets)}) == len(jobs(targets))


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "Off", "target": "b/d"},
        {"name": "off", "target": "/b/d"},
        {"name": "off", "target": "b/d", "hots": "x"},
        {"name": "off", "target": "b/d", "host": "a b"},
        {"name": "off", "target": "b/d", "host": "h", "drill": True},
        {"name": "off", "target": "b/d", "scratch": "b/d/x"},
        {"name": "off", "target": "b/d", "projects": ["../x"]},
    ],
)
def test_bad_named_targets_are_refused(bad: dict) -> None:
    with pytest.raises(bk.TargetError):
        bk.dsg_backup_targets([], [bad], "17 * * * *", "43 4 * * 0", [])


def test_two_targets_with_one_name_are_refused() -> None:
    with pytest.raises(bk.TargetError, match="twice"):
        bk.dsg_backup_targets(
            [], [{"name": "x", "target": "a/b"}, {"name": "x", "target": "c/d"}], "", "", []
        )


def test_pull_lines_force_the_command() -> None:
    lines = bk.dsg_backup_pull_lines(
        [{"name": "offsite", "key": KEY}, {"name": "vm", "from_host": "bk1"}],
        {"vm": KEY.replace("offsite", "vm")},
        ["b", "a"],
        "tank/dsg",
        DSG,
    )
    assert lines[0] == (
        f'restrict,command="{DSG} admin send-for-backup --name offsite --project a=tank/dsg/a '
        f'--project b=tank/dsg/b" {KEY}'
    )
    assert lines[1].endswith("dsg-pull-vm@bk1") and "--name vm" in lines[1]
    # the command the key forces parses back to exactly those words
    forced = lines[0].split('"')[1]
    assert shlex.split(forced)[3:5] == ["--name", "offsite"]
    # a key not made yet is left out (a check run); a key carrying options is refused
    assert (
        bk.dsg_backup_pull_lines([{"name": "later", "from_host": "h"}], {}, ["a"], "t/d", DSG) == []
    )
    for bad in (
        f'command="sh" {KEY}',
        f"no-pty {KEY}",
        KEY + '"',
        "ssh-ed25519 AAAA\nssh-ed25519 BBBB",
        "",
    ):
        with pytest.raises(bk.TargetError):
            bk.dsg_backup_pull_lines([{"name": "x", "key": bad or "x y"}], {}, ["a"], "t/d", DSG)
    with pytest.raises(bk.TargetError):
        bk.dsg_backup_pull_lines([{"name": "x", "key": KEY}], {}, ["a b"], "t/d", DSG)
    with pytest.raises(bk.TargetError):
        bk.dsg_backup_pull_lines([{"name": "x", "key": KEY}], {}, ["a"], "t/d", "dsg; sh")


def test_pull_public_keys_from_inventory_hosts() -> None:
    hostvars = {"bk1": {"dsg_backup_host_public_keys": {"offsite": KEY}}, "bk2": {}}
    keys = [{"name": "offsite", "from_host": "bk1"}, {"name": "other", "from_host": "bk2"},
            {"name": "given", "key": KEY}]  # fmt: skip
    assert bk.dsg_backup_pull_public_keys(keys, hostvars) == {"offsite": KEY}
    with pytest.raises(bk.TargetError, match="not a host"):
        bk.dsg_backup_pull_public_keys([{"name": "x", "from_host": "nosuch"}], hostvars)


def test_the_pull_account_is_delegated_on_present_projects_only() -> None:
    projects = [
        {"name": "a", "group": "g", "users": {"alice": "write"}},
        {"name": "b", "group": "h", "state": "absent", "users": {"alice": "write"}},
    ]
    perms = {"read": [], "write": ["snapshot"], "admin": ["snapshot"]}
    got = acc.dsg_access_delegations(projects, ["alice"], perms, "t/dsg",
                                     {"dsgpull": ["send", "hold", "release"]})  # fmt: skip
    assert got == {
        "t/dsg/a": {"alice": ["snapshot"], "dsgpull": ["hold", "release", "send"]},
        "t/dsg/b": {},
    }
    # without extra: as before
    assert acc.dsg_access_delegations(projects, ["alice"], perms, "t/dsg") == {
        "t/dsg/a": {"alice": ["snapshot"]},
        "t/dsg/b": {},
    }


PULL = {"name": "offsite", "from": "prim1.example", "to": "backup/pulled",
        "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"}  # fmt: skip


def test_backup_host_pulls_and_jobs() -> None:
    hostvars = {"prim": {"dsg_projects": [{"name": "a"}, {"name": "z", "state": "absent"}]}}
    pulls = bh.dsg_backup_host_pulls(
        [PULL, {"name": "vm", "from": "127.0.0.1", "port": 2222, "to": "backup/vm",
                "from_inventory_host": "prim", "drill": True}],
        "27 * * * *", "53 4 * * 0", hostvars,
    )  # fmt: skip
    assert pulls[0]["user"] == "dsgpull" and pulls[0]["known_host"] == "prim1.example"
    assert pulls[0]["drill_projects"] == []  # no projects named, no inventory host
    assert pulls[1]["known_host"] == "[127.0.0.1]:2222"
    assert pulls[1]["drill_projects"] == ["a"]  # the primary's present projects
    js = bh.dsg_backup_host_jobs(pulls, DSG, "dsg-backup", "/etc/dsg/backup-pull", "/run/lock",
                                 "/var/log/dsg", "/tf")  # fmt: skip
    assert [j["name"] for j in js] == ["pull offsite", "pull vm", "restore-drill vm a"]
    argv = js[0]["argv"]
    assert argv[0] == "env" and argv[1].startswith("DSG_SSH_COMMAND=ssh -i /etc/dsg/backup-pull/")
    ssh = shlex.split(argv[1].partition("=")[2])
    assert "UserKnownHostsFile=/etc/dsg/backup-pull/known_hosts" in ssh
    assert argv[2:] == [DSG, "admin", "pull", "--from-host", "dsgpull@prim1.example", "--to",
                        "backup/pulled", "--name", "offsite", "--to-prefix",
                        "runuser -u dsg-backup --", "--textfile-dir", "/tf"]  # fmt: skip
    assert js[2]["argv"] == [DSG, "admin", "restore-drill", "a", "--from", "backup/vm",
                             "--scratch", "backup/dsg-drill", "--name", "vm", "--textfile-dir",
                             "/tf"]  # fmt: skip
    assert js[1]["lock"] == "/run/lock/dsg-pull-vm.lock"


@pytest.mark.parametrize(
    "over",
    [
        {"name": "Off"},
        {"from": "-oProxyCommand=x"},
        {"from": "a b"},
        {"to": "backup"},
        {"to": "backup/x; rm"},
        {"user": "root;"},
        {"port": 70000},
        {"host_key": ""},  # neither host_key nor from_inventory_host
        {"from_inventory_host": "prim"},  # both
        {"host_key": "ssh-ed25519 AAAA junk words"},
        {"scratch": "backup/pulled/x"},
        {"projects": ["a b"]},
        {"destroy": True},
    ],
)
def test_bad_pulls_are_refused(over: dict) -> None:
    with pytest.raises(bh.PullError):
        bh.dsg_backup_host_pulls([{**PULL, **over}], "27 * * * *", "53 4 * * 0", {})


def test_two_pulls_into_one_dataset_are_refused() -> None:
    with pytest.raises(bh.PullError, match="already"):
        bh.dsg_backup_host_pulls([PULL, {**PULL, "name": "two"}], "", "", {})
