"""Pull backups out of the primary's reach, on the OpenZFS VM (inventories/lab-vm).

Runs after test_site_playbook (the name sorts after it: the tier runs in file order, and
the tests before it need a bare VM); converges the VM itself when run alone.

The VM is its own backup host: besides the unnamed push (dsglab/dsg -> dsgbackup/dsg, root),
inventories/lab-vm declares a pull named `offsite` into dsgbackup/offsite. The roles make
(and this test converges twice, the second run changing nothing):

- on the primary side (dsg_backup): the account dsgpull, its root-owned authorized_keys
  with the backup host's key forced to `dsg admin send-for-backup --name offsite --project
  P=dsglab/dsg/P ...`, and `zfs allow dsgpull hold,release,send` on every project (through
  dsg_access_extra_delegations);
- on the backup side (dsg_backup_host): the account dsg-backup with exactly `zfs allow
  create,hold,mount,readonly,receive,release,userprop` on dsgbackup/offsite (no destroy, no
  rollback), its ssh key, the primary's host key pinned, the pull and drill timers.

Then: alice commits to lab-alpha over SSH; a pull (the zfs side as dsg-backup) copies s1, s2
with the holds dsg-backup-offsite on both sides; the primary's accounts (the pull key, and
dsgpull, alice and dsg-backup at the zfs level) are refused when they try to destroy or roll
back the copy; a pull killed in the middle of a large step leaves a receive_resume_token and
the next run finishes it with `zfs send -t` (less than the whole step travels again); a
restore drill of the pulled copy verifies every file; the scheduled pull unit succeeds.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml

from dsg.workcopy.config import ProjectConfig, RepositoryConfig
from tests.ansible.conftest import AnsibleTools, ansible_tools  # noqa: F401 (fixture)
from tests.helpers import Researcher
from tests.vm.conftest import LabVM, users_ssh_config
from tests.vm.test_zfs_encryption import ensure_converged, tools_for

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.ansible]

PROJECT = "lab-alpha"
DATASET = f"dsglab/dsg/{PROJECT}"
PARENT = "dsgbackup/offsite"
COPY = f"{PARENT}/{PROJECT}"
PUSHED = f"dsgbackup/dsg/{PROJECT}"
TAG = "dsg-backup-offsite"
DSG = "/usr/local/bin/dsg"
KEYS = "/etc/dsg/backup-pull"
MOUNT_ROOT = "/var/repos/dsg"
UNIT = "dsg-backup-host-pull-offsite.service"
HEALTH = "/etc/dsg/health.yml"
ACCESS = "/etc/dsg/access.yml"
PULLED = f"{PROJECT}@offsite"
SSH = shlex.join([
    "ssh", "-i", f"{KEYS}/offsite", "-o", f"UserKnownHostsFile={KEYS}/known_hosts",
    "-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-p", "22",
])  # fmt: skip
PULL = [
    "flock", "/run/lock/dsg-pull-offsite.lock", "env", f"DSG_SSH_COMMAND={SSH}", DSG, "admin",
    "pull", "--from-host", "dsgpull@127.0.0.1", "--to", PARENT, "--name", "offsite",
    "--to-prefix", "runuser -u dsg-backup --", "--textfile-dir",
    "/var/lib/prometheus/node-exporter", PROJECT, "--json",
]  # fmt: skip


def operations(vm: LabVM, base: AnsibleTools) -> dict[str, int]:
    run = tools_for(vm, base).run(
        "ansible-playbook", "-i", "inventories/lab-vm", "playbooks/operations.yml", timeout=2400
    )
    assert run.returncode == 0, run.explain()
    return run.recap()["lab-vm"]


def pull(vm: LabVM, *env: str) -> tuple[int, dict]:
    argv = PULL if not env else [*PULL[:2], "env", *env, *PULL[2:]]
    proc = vm.run(argv, check=False, timeout=1200)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        return proc.returncode, {"stdout": proc.stdout[-2000:], "stderr": proc.stderr[-2000:]}


def replication(vm: LabVM) -> dict[str, dict]:
    """The primary's replication checks (dsg admin health with the role's health.yml), by
    target: `lab-alpha@offsite` is the pull, seen from the primary's own holds."""
    proc = vm.run(
        [DSG, "admin", "health", "--config", HEALTH, "--access-file", ACCESS, "--json"],
        check=False,
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    return {c["target"]: c for c in doc["checks"] if c["check"] == "replication"}


def snaps(vm: LabVM, dataset: str) -> list[str]:
    out = vm.sh(f"zfs list -H -t snapshot -o name -s createtxg -d 1 {dataset}")
    return [line.partition("@")[2] for line in out.split()]


def holds(vm: LabVM, dataset: str) -> dict[str, set[str]]:
    out = vm.sh(f"zfs list -H -t snapshot -o name -d 1 {dataset} | xargs -r zfs holds -H")
    got: dict[str, set[str]] = {}
    for line in out.splitlines():
        name, tag = line.split("\t")[:2]
        got.setdefault(name.partition("@")[2], set()).add(tag)
    return got


def reset(vm: LabVM) -> None:
    """lab-alpha empty, with no copy on either backup target (as root, which may)."""
    vm.sh(
        f"""
        for ds in {COPY} {PUSHED} {DATASET}; do
          zfs list -H "$ds" >/dev/null 2>&1 || continue
          zfs receive -A "$ds" 2>/dev/null || true
          zfs list -H "$ds" >/dev/null 2>&1 || continue  # a partial first receive: gone now
          for snap in $(zfs list -H -t snapshot -o name -d 1 "$ds"); do
            for tag in $(zfs holds -H "$snap" | cut -f2); do zfs release "$tag" "$snap"; done
          done
          if [ "$ds" = {DATASET} ]; then
            for snap in $(zfs list -H -t snapshot -o name -d 1 "$ds"); do zfs destroy "$snap"; done
          else
            zfs destroy -r "$ds"
          fi
        done
        find {MOUNT_ROOT}/{PROJECT} -mindepth 1 -delete
        """
    )


def test_backup_pull_out_of_the_primarys_reach(
    lab_vm: LabVM,
    ansible_tools: AnsibleTools,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vm = lab_vm
    ensure_converged(vm, ansible_tools)
    operations(vm, ansible_tools)
    again = operations(vm, ansible_tools)
    assert again["changed"] == 0 and again["failed"] == 0, again

    # --- what the roles made ---------------------------------------------------------------
    keys = vm.sh("stat -c '%U %a' /var/lib/dsgpull/.ssh/authorized_keys; "
                 "cat /var/lib/dsgpull/.ssh/authorized_keys")  # fmt: skip
    assert keys.startswith("root 644\n"), keys
    forced = [ln for ln in keys.splitlines() if ln.startswith("restrict,command=")]
    assert len(forced) == 1, keys
    assert f'command="{DSG} admin send-for-backup --name offsite ' in forced[0]
    assert f"--project {PROJECT}={DATASET}" in forced[0]
    assert vm.sh("getent passwd dsgpull | cut -d: -f7").strip() == "/bin/sh"
    assert vm.sh("getent shadow dsgpull | cut -d: -f2").strip() == "*"
    allowed = vm.sh(f"zfs allow {DATASET}")
    assert "user dsgpull hold,release,send" in allowed, allowed
    allowed = vm.sh(f"zfs allow {PARENT}")
    assert "user dsg-backup create,hold,mount,readonly,receive,release,userprop" in allowed
    assert "destroy" not in allowed and "rollback" not in allowed, allowed
    assert vm.sh(f"stat -c '%U %a' {KEYS} {KEYS}/offsite").split("\n")[:2] == [
        "root 700", "root 600",
    ]  # fmt: skip
    assert vm.sh(f"cat {KEYS}/known_hosts").count("127.0.0.1 ssh-ed25519 ") == 1
    # the health check and metrics cover the pull (role dsg_monitoring, from dsg_backup_pull_keys)
    health_cfg = yaml.safe_load(vm.sh(f"cat {HEALTH}"))
    targets = {t["name"]: t for t in health_cfg["replication_targets"]}
    assert targets["offsite"]["mode"] == "pull", health_cfg
    assert PROJECT in targets["offsite"]["projects"], health_cfg
    assert "admin pull" in vm.sh(f"systemctl cat {UNIT}")
    assert vm.sh(f"systemctl is-enabled {UNIT.replace('.service', '.timer')}").strip() == "enabled"

    # --- alice commits over SSH -------------------------------------------------------------
    reset(vm)
    cfg_path = users_ssh_config(vm.port, vm.known_hosts, ("alice",), tmp_path / "ssh_config")
    monkeypatch.setenv("DSG_SSH_COMMAND", f"ssh -F {cfg_path}")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    cfg = ProjectConfig(
        name=PROJECT,
        repository=RepositoryConfig(
            type="zfs", host="vm-alice", pool="dsglab", mountpoint=MOUNT_ROOT
        ),
    )
    alice = Researcher("alice", tmp_path / "alice" / PROJECT, tmp_path / "cfg", cfg)
    alice.write("task1/input/a.csv", "a\n")
    alice.init("first")
    alice.write("task1/input/big1.bin", os.urandom(12 << 20))
    alice.sync(message="second")

    # never pulled: the primary says so (no hold of the target on any snapshot)
    check = replication(vm)[PULLED]
    assert check["status"] == "CRITICAL", check
    assert "no dsg-backup-offsite hold" in check["message"], check

    # --- a pull: everything, holds under the target's own tag on both sides --------------------
    code, doc = pull(vm)
    assert code == 0, doc
    (res,) = doc["projects"]
    assert res["ok"] and res["resumable"] is True and res["notes"] == [], res
    assert [s["snapshot"] for s in res["steps"]] == ["s1", "s2"], res
    assert snaps(vm, COPY) == ["s1", "s2"]
    assert TAG in holds(vm, DATASET)["s2"] and TAG not in holds(vm, DATASET).get("s1", set())
    assert holds(vm, COPY) == {"s2": {TAG}}
    assert vm.sh(f"zfs get -H -o value readonly,mounted {COPY}").split() == ["on", "no"]
    metrics = vm.sh(f"cat /var/lib/prometheus/node-exporter/dsg_backup_{PROJECT}@offsite.prom")
    assert 'name="offsite"} 1' in metrics and "dsg_backup_success{" in metrics, metrics
    # ... and the primary sees it from its holds, without any credential for the backup host
    check = replication(vm)[PULLED]
    assert check["status"] == "OK" and check["message"].startswith("in sync (confirmed s2)")
    prom = vm.sh(f"{DSG} admin metrics --config {HEALTH} --access-file {ACCESS}")
    want = f'dsg_backup_confirmed_snapshot{{project="{PROJECT}",name="offsite",mode="pull"}} 2'
    assert want in prom, prom

    # --- the primary's accounts cannot take the copy away --------------------------------------
    ssh_as_pull = ["ssh", "-i", f"{KEYS}/offsite", "-o", f"UserKnownHostsFile={KEYS}/known_hosts",
                   "-o", "BatchMode=yes", "dsgpull@127.0.0.1"]  # fmt: skip
    for words in (f"zfs destroy -r {COPY}", "dsg-backup-1 release lab-alpha s2; id",
                  f"dsg-backup-1 send {DATASET} s1", "sh -c id"):  # fmt: skip
        proc = vm.run([*ssh_as_pull, words], check=False)
        assert proc.returncode == 2 and "dsg send-for-backup:" in proc.stderr, (words, proc)
    for user in ("dsgpull", "alice", "dsg-backup"):
        for cmd in (f"zfs destroy -r {COPY}", f"zfs destroy {COPY}@s1",
                    f"zfs rollback -r {COPY}@s1", f"zfs release {TAG} {COPY}@s2 && "
                    f"zfs destroy {COPY}@s2"):  # fmt: skip
            if user == "dsg-backup" and cmd.startswith("zfs release"):
                continue  # it may release (it moves its holds); destroy is refused below
            proc = vm.run(["runuser", "-u", user, "--", "sh", "-c", cmd], check=False)
            assert proc.returncode != 0, (user, cmd, proc.stdout)
            assert "permission denied" in proc.stderr.lower(), (user, cmd, proc.stderr)
    assert snaps(vm, COPY) == ["s1", "s2"]
    assert holds(vm, COPY) == {"s2": {TAG}}

    # --- an interrupted receive resumes from its token ---------------------------------------
    alice.write("task1/input/big2.bin", os.urandom(24 << 20))
    alice.sync(message="third")
    code, doc = pull(vm, "DSG_CRASH_AT=backup.mid_stream")
    assert code == 137, doc  # killed after the first MiB of the s3 step
    token = vm.sh(f"zfs get -H -o value receive_resume_token {COPY}").strip()
    assert token not in ("", "-"), token
    assert snaps(vm, COPY) == ["s1", "s2"]
    check = replication(vm)[PULLED]  # s3 is not confirmed: the primary sees it behind
    assert "confirmed up to s2; 1 snapshot(s) behind" in check["message"], check
    # what the token says was kept (the resumed send starts there, not at the step's start)
    contents = vm.sh(f"zfs send -nv -t {token} 2>&1 || true")
    assert f"toname = {DATASET}@s3" in contents, contents
    code, doc = pull(vm)
    assert code == 0, doc
    (res,) = doc["projects"]
    assert res["ok"] and res["resumed"] == "s3", res
    assert [(s["kind"], s["snapshot"], s["base"]) for s in res["steps"]] == [
        ("resumed", "s3", "s2")
    ], res
    assert res["bytes"] > 0, res
    assert vm.sh(f"zfs get -H -o value receive_resume_token {COPY}").strip() == "-"
    assert snaps(vm, COPY) == ["s1", "s2", "s3"]
    assert holds(vm, COPY) == {"s3": {TAG}}
    assert TAG in holds(vm, DATASET)["s3"] and TAG not in holds(vm, DATASET).get("s2", set())
    assert replication(vm)[PULLED]["message"].startswith("in sync (confirmed s3)")

    # --- a restore drill of the pulled copy ----------------------------------------------------
    proc = vm.run(
        ["flock", f"/run/lock/dsg-restore-drill-offsite-{PROJECT}.lock", DSG, "admin",
         "restore-drill", PROJECT, "--from", PARENT, "--scratch", "dsgbackup/dsg-drill",
         "--name", "offsite", "--json"],
        check=False, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    drill = json.loads(proc.stdout)["drill"]
    assert drill["ok"] and drill["snapshot"] == "s3" and drill["files"] == 3, drill
    assert drill["cleaned_up"], drill

    # --- the scheduled job, as its timer starts it ------------------------------------------
    vm.run(["systemctl", "start", UNIT], check=False, timeout=1800)
    result = vm.sh(f"systemctl show -p Result --value {UNIT}").strip()
    log = vm.sh("tail -n 40 /var/log/dsg/backup.log")
    assert result == "success", log
    assert "pull offsite exit 0" in log, log


def test_an_interrupted_first_pull_resumes_from_its_token(
    lab_vm: LabVM,
    ansible_tools: AnsibleTools,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The FIRST (full) receive of a project killed mid-stream: OpenZFS keeps the partial
    copy with a receive_resume_token (the backup account could not destroy it, and need
    not); the next pull finishes it with `zfs send -t` from where it stopped, then sends
    what came after; the copy restores whole. Runs after the test above (converges and
    provisions when run alone)."""
    vm = lab_vm
    ensure_converged(vm, ansible_tools)
    if vm.run(["systemctl", "cat", UNIT], check=False).returncode != 0:
        operations(vm, ansible_tools)
    reset(vm)
    cfg_path = users_ssh_config(vm.port, vm.known_hosts, ("alice",), tmp_path / "ssh_config")
    monkeypatch.setenv("DSG_SSH_COMMAND", f"ssh -F {cfg_path}")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    cfg = ProjectConfig(
        name=PROJECT,
        repository=RepositoryConfig(
            type="zfs", host="vm-alice", pool="dsglab", mountpoint=MOUNT_ROOT
        ),
    )
    alice = Researcher("alice", tmp_path / "alice" / PROJECT, tmp_path / "cfg", cfg)
    alice.write("task1/input/big1.bin", os.urandom(24 << 20))
    alice.init("first, large")
    alice.write("task1/input/a.csv", "a\n")
    alice.sync(message="second")

    code, doc = pull(vm, "DSG_CRASH_AT=backup.mid_stream")
    assert code == 137, doc  # killed after the first MiB of the full s1 stream
    token = vm.sh(f"zfs get -H -o value receive_resume_token {COPY}").strip()
    assert token not in ("", "-"), token
    assert snaps(vm, COPY) == []  # the partial copy has no snapshot yet
    contents = vm.sh(f"zfs send -nv -t {token} 2>&1 || true")
    assert f"toname = {DATASET}@s1" in contents, contents
    assert "fromguid" not in contents, contents  # a full stream, resumed part way
    # OpenZFS prints the kept bytes in hex (bytes = 0xc0b0)
    kept = [int(w.split("=")[1], 0) for w in contents.replace(" = ", "=").split() if
            w.startswith("bytes=")]  # fmt: skip
    assert kept and kept[0] > 0, contents
    check = replication(vm)[PULLED]
    assert check["status"] == "CRITICAL" and "no dsg-backup-offsite hold" in check["message"]

    code, doc = pull(vm)
    assert code == 0, doc
    (res,) = doc["projects"]
    assert res["ok"] and res["resumed"] == "s1", res
    assert [(s["kind"], s["snapshot"], s["base"]) for s in res["steps"]] == [
        ("resumed", "s1", None), ("incremental", "s2", "s1"),
    ], res  # fmt: skip
    assert vm.sh(f"zfs get -H -o value receive_resume_token {COPY}").strip() == "-"
    assert snaps(vm, COPY) == ["s1", "s2"]
    assert holds(vm, COPY) == {"s2": {TAG}}
    assert vm.sh(f"zfs get -H -o value readonly,mounted {COPY}").split() == ["on", "no"]
    assert replication(vm)[PULLED]["message"].startswith("in sync (confirmed s2)")

    proc = vm.run(
        ["flock", f"/run/lock/dsg-restore-drill-offsite-{PROJECT}.lock", DSG, "admin",
         "restore-drill", PROJECT, "--from", PARENT, "--scratch", "dsgbackup/dsg-drill",
         "--name", "offsite", "--json"],
        check=False, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    drill = json.loads(proc.stdout)["drill"]
    assert drill["ok"] and drill["snapshot"] == "s2" and drill["files"] == 2, drill
