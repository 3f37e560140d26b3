"""`dsg admin pull`: the backup side pulls through the primary's forced command (zfs-fuse).

The "primary" is the lab sshd, as dsgadmin, with a fresh key whose authorized_keys line is
`restrict,command="... dsg admin send-for-backup --name lab --project proj=<dataset>"` (its
zfs through `sudo -n`: zfs-fuse has no `zfs allow`; the OpenZFS VM test gives the pull
account `zfs allow send,hold,release` instead). The "backup host" is this process, as root.
Shown here: a full then an incremental pull with the holds moved under the target's own tag,
the zfs-fuse note about resume tokens, a restore drill from the pulled copy, and the key
refusing everything but its requests (a shell command, destroy, another dataset, a sanoid
snapshot, a token of the wrong shape), the copy unchanged after each refusal.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import release_dsg_holds, zfs_space
from tests.helpers import DSG, Researcher, skip_unless_lab_users_can_run

pytestmark = [pytest.mark.ssh, pytest.mark.zfs]
SUDOERS = Path("/etc/sudoers.d/dsg-lab-pull-test")
TAG = "dsg-backup-lab"


def test_pull_through_a_forced_command_then_drill(sshd_lab, zfs_lab, tmp_path: Path) -> None:
    skip_unless_lab_users_can_run(sshd_lab, DSG, "dsgadmin")
    SUDOERS.write_text("dsgadmin ALL=(root) NOPASSWD: /usr/sbin/zfs\n")
    SUDOERS.chmod(0o440)
    target_root = f"{zfs_lab.backup_pool}/pull{uuid.uuid4().hex[:8]}"
    copy = f"{target_root}/proj"
    zfs = zfs_lab.zfs
    try:
        with zfs_space(zfs_lab) as space:
            dataset = f"{space.parent}/proj"
            space.prepare("proj")
            alice = Researcher(
                "alice", tmp_path / "alice" / "proj", tmp_path / "cfg", space.config("proj")
            )
            alice.write("task1/input/a.csv", "a\n")
            alice.init("first")
            alice.write("task1/input/a.csv", "a v2\n")
            alice.sync(message="second")
            forced = shlex.join(["env", "DSG_ZFS_PREFIX=sudo -n", DSG, "admin", "send-for-backup",
                                 "--name", "lab", "--project", f"proj={dataset}"])  # fmt: skip
            with sshd_lab.authorized_key("dsgadmin", f'restrict,command="{forced}"') as key:
                ssh = shlex.join(sshd_lab.key_argv("dsgadmin", key)[:-2])  # up to "--" host
                env = {**os.environ, "DSG_SSH_COMMAND": ssh}
                env.pop("SSH_AUTH_SOCK", None)
                argv = [DSG, "admin", "pull", "--from-host", sshd_lab.host, "--to", target_root,
                        "--name", "lab", "--textfile-dir", str(tmp_path), "--log-dir",
                        str(tmp_path), "--json"]  # fmt: skip

                def pull() -> dict:
                    proc = subprocess.run(
                        argv, capture_output=True, text=True, env=env, timeout=300
                    )
                    assert proc.returncode == 0, proc.stdout + proc.stderr
                    doc = json.loads(proc.stdout)
                    assert doc["command"] == "admin pull"
                    return doc["projects"][0]

                # --- the dry run plans it and changes nothing --------------------------------
                dry = subprocess.run([*argv, "--dry-run"], capture_output=True, text=True,
                                     env=env, timeout=300)  # fmt: skip
                assert dry.returncode == 0, dry.stdout + dry.stderr
                (planned,) = json.loads(dry.stdout)["projects"]
                assert [s["snapshot"] for s in planned["steps"]] == ["s1", "s2"], planned
                assert not zfs.dataset_exists(copy)
                assert {s.snapname: s.userrefs for s in zfs.list_snapshots(dataset)} == {
                    "s1": 1, "s2": 1,
                }  # fmt: skip

                # --- a full pull: every sN, holds under the target's tag on both sides ----
                doc = pull()
                assert [s["snapshot"] for s in doc["steps"]] == ["s1", "s2"], doc
                assert doc["source"] == f"{sshd_lab.host}:{dataset}"
                assert doc["resumable"] is False
                assert any("zfs-fuse has no resumable receive" in n for n in doc["notes"]), doc
                assert [s.snapname for s in zfs.list_snapshots(copy)] == ["s1", "s2"]
                assert zfs.get_property(copy, "readonly") == "on"
                src_refs = {s.snapname: s.userrefs for s in zfs.list_snapshots(dataset)}
                assert src_refs == {"s1": 1, "s2": 2}, src_refs  # dsg's hold + the target's
                dst_refs = {s.snapname: s.userrefs for s in zfs.list_snapshots(copy)}
                assert dst_refs == {"s1": 0, "s2": 1}, dst_refs
                metrics = (tmp_path / "dsg_backup_proj@lab.prom").read_text()
                assert 'dsg_backup_success{project="proj",target="' in metrics
                assert 'name="lab"} 1' in metrics, metrics
                audit = (tmp_path / "audit.jsonl").read_text()
                assert '"action":"admin.pull"' in audit and '"name":"lab"' in audit, audit

                # --- incremental: only s3 travels, the holds move with it -----------------
                alice.write("task1/input/b.csv", "b\n")
                alice.sync(message="third")
                doc = pull()
                assert [(s["snapshot"], s["base"]) for s in doc["steps"]] == [("s3", "s2")]
                assert {s.snapname: s.userrefs for s in zfs.list_snapshots(dataset)} == {
                    "s1": 1, "s2": 1, "s3": 2,
                }  # fmt: skip
                assert {s.snapname: s.userrefs for s in zfs.list_snapshots(copy)} == {
                    "s1": 0, "s2": 0, "s3": 1,
                }  # fmt: skip
                assert pull()["steps"] == []  # up to date

                # --- the primary's health check names why it cannot see the pull here ------
                # (zfs-fuse has no `zfs holds`; on OpenZFS the VM tier checks the real view)
                access = tmp_path / "access.yml"
                access.write_text(json.dumps({"projects": {"proj": {
                    "dataset": dataset, "mountpoint": str(space.mountpoint / "proj"),
                    "users": {"alice": "write"}}}}))  # fmt: skip
                cfg = tmp_path / "health.yml"
                cfg.write_text("replication_targets: [{name: lab, mode: pull}]\n"
                               "scrub_age_warn_days: null\nscrub_age_crit_days: null\n")  # fmt: skip
                health = subprocess.run(
                    [DSG, "admin", "health", "--config", str(cfg), "--access-file", str(access),
                     "--json"], capture_output=True, text=True, timeout=300,
                )  # fmt: skip
                checks = {c["target"]: c for c in json.loads(health.stdout)["checks"]
                          if c["check"] == "replication"}  # fmt: skip
                assert set(checks) == {"proj@lab"}, health.stdout
                assert checks["proj@lab"]["status"] == "UNKNOWN", checks
                assert "zfs-fuse has no `zfs holds`" in checks["proj@lab"]["message"], checks
                prom = subprocess.run(
                    [DSG, "admin", "metrics", "--config", str(cfg), "--access-file", str(access)],
                    capture_output=True, text=True, timeout=300,
                )  # fmt: skip
                assert prom.returncode == 0, prom.stderr
                assert "dsg_backup_confirmed_snapshot{" not in prom.stdout  # absent, not wrong

                # --- the key answers its requests and nothing else ------------------------
                before = [(s.snapname, s.createtxg) for s in zfs.list_snapshots(copy)]
                hostile = [
                    ["cat", "/etc/passwd"],
                    ["zfs", "destroy", "-r", copy],
                    ["dsg-backup-1", "send", "proj", "s1;", "zfs", "destroy", "-r", copy],
                    ["dsg-backup-1", "send", "other", "s1"],
                    ["dsg-backup-1", "send", dataset, "s1"],
                    ["dsg-backup-1", "send", "proj", "autosnap_x"],
                    ["dsg-backup-1", "destroy", "proj", "s1"],
                    ["dsg-backup-1", "resume", "proj", "1-2-3-zz"],
                ]
                for words in hostile:
                    proc = sshd_lab.run_with_key("dsgadmin", key, words, text=False)
                    assert proc.returncode == 2, (words, proc.returncode, proc.stderr)
                    assert b"root:" not in proc.stdout and len(proc.stdout) == 0, words
                    assert b"dsg send-for-backup:" in proc.stderr, (words, proc.stderr)
                assert [(s.snapname, s.createtxg) for s in zfs.list_snapshots(copy)] == before
                listed = sshd_lab.run_with_key("dsgadmin", key, ["dsg-backup-1", "list", "proj"])
                assert listed.returncode == 0, listed.stderr
                assert [s["name"] for s in json.loads(listed.stdout)["snapshots"]] == [
                    "s1", "s2", "s3",
                ]  # fmt: skip

            # --- a restore drill of the pulled copy, as the backup host runs it -----------
            drill = subprocess.run(
                [DSG, "admin", "restore-drill", "proj", "--from", target_root, "--name", "lab",
                 "--textfile-dir", str(tmp_path), "--log-dir", str(tmp_path), "--json"],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert drill.returncode == 0, drill.stdout + drill.stderr
            assert json.loads(drill.stdout)["drill"]["snapshot"] == "s3"
            assert (tmp_path / "dsg_restore_drill_proj@lab.prom").exists()
            release_dsg_holds(zfs_lab, space.parent)
            for s in zfs.list_snapshots(dataset):
                zfs.run("zfs", ["release", TAG, s.name], check=False)
    finally:
        SUDOERS.unlink(missing_ok=True)
        if zfs.dataset_exists(target_root):
            if zfs.dataset_exists(copy):
                for s in zfs.list_snapshots(copy):
                    zfs.run("zfs", ["release", TAG, s.name], check=False)
            zfs_lab.destroy(target_root)
