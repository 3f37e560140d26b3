"""`dsg admin backup --to-host`: the receiving `zfs recv` runs on a backup host over SSH.

The backup "host" is the lab sshd (as dsgadmin, host key verified); its zfs runs through
`sudo -n`, allowed for dsgadmin by a sudoers file this test writes and removes (zfs-fuse has
no `zfs allow`; on OpenZFS the backup user gets `zfs allow receive,create,mount,hold`).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import release_dsg_holds, zfs_space
from tests.helpers import DSG, Researcher

pytestmark = [pytest.mark.ssh, pytest.mark.zfs]
SUDOERS = Path("/etc/sudoers.d/dsg-lab-backup-test")


def test_backup_pushed_over_ssh_then_drilled(sshd_lab, zfs_lab, tmp_path: Path) -> None:
    SUDOERS.write_text("dsgadmin ALL=(root) NOPASSWD: /usr/sbin/zfs\n")
    SUDOERS.chmod(0o440)
    target_root = f"{zfs_lab.backup_pool}/ssh{uuid.uuid4().hex[:8]}"
    try:
        with zfs_space(zfs_lab) as space:
            space.prepare("proj")
            alice = Researcher(
                "alice", tmp_path / "alice" / "proj", tmp_path / "cfg", space.config("proj")
            )
            alice.write("task1/input/a.csv", "a\n")
            alice.init("first")
            alice.write("task1/input/a.csv", "a v2\n")
            alice.sync(message="second")
            access = tmp_path / "access.yml"
            access.write_text(json.dumps({"projects": {"proj": {
                "dataset": f"{space.parent}/proj",
                "mountpoint": str(space.mountpoint / "proj"),
            }}}))  # fmt: skip
            env = {**os.environ, "DSG_SSH_COMMAND": f"ssh -F {sshd_lab.ssh_config}"}
            argv = [DSG, "admin", "backup", "--to", target_root, "--to-host",
                    sshd_lab.alias("dsgadmin"), "--to-prefix", "sudo -n", "--access-file",
                    str(access), "--log-dir", str(tmp_path), "--json"]  # fmt: skip
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            doc = json.loads(proc.stdout)["projects"][0]
            assert [s["snapshot"] for s in doc["steps"]] == ["s1", "s2"]
            snaps = zfs_lab.zfs.list_snapshots(f"{target_root}/proj")
            assert [s.snapname for s in snaps] == ["s1", "s2"]
            audit = (tmp_path / "audit.jsonl").read_text()
            assert f'"destination":"{sshd_lab.alias("dsgadmin")}:{target_root}/proj"' in audit

            # An unknown host key stops it: never a silent accept.
            bad = {**env, "DSG_SSH_COMMAND": f"ssh -F {sshd_lab.ssh_config} "
                   "-o UserKnownHostsFile=/dev/null"}  # fmt: skip
            proc = subprocess.run(argv, capture_output=True, text=True, env=bad, timeout=120)
            assert proc.returncode == 1
            assert "Host key verification failed" in proc.stdout, proc.stdout

            drill = subprocess.run(
                [DSG, "admin", "restore-drill", "proj", "--from", target_root, "--log-dir",
                 str(tmp_path), "--json"],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert drill.returncode == 0, drill.stdout + drill.stderr
            assert json.loads(drill.stdout)["drill"]["snapshot"] == "s2"
            release_dsg_holds(zfs_lab, space.parent)
            for s in zfs_lab.zfs.list_snapshots(f"{space.parent}/proj"):
                zfs_lab.zfs.run("zfs", ["release", f"dsg-backup-{zfs_lab.backup_pool}", s.name],
                                check=False)  # fmt: skip
    finally:
        SUDOERS.unlink(missing_ok=True)
        if zfs_lab.zfs.dataset_exists(target_root):
            for s in zfs_lab.zfs.list_snapshots(f"{target_root}/proj"):
                zfs_lab.zfs.run("zfs", ["release", f"dsg-backup-{zfs_lab.backup_pool}", s.name],
                                check=False)  # fmt: skip
            zfs_lab.destroy(target_root)


def test_fabric_backup_and_restore_drill_tasks(sshd_lab, zfs_lab, tmp_path: Path) -> None:
    """The admin's Fabric tasks run `dsg admin backup` / `restore-drill` on the host (as
    dsgadmin, through sudo): dry runs change nothing, real runs back up and drill."""
    from dsg.admin import remote
    from tests.helpers import REPO_ROOT, skip_unless_lab_users_can_run

    dsg_bin = str(REPO_ROOT / ".venv" / "bin" / "dsg")
    skip_unless_lab_users_can_run(sshd_lab, dsg_bin, "dsgadmin")
    target_root = f"{zfs_lab.backup_pool}/fab{uuid.uuid4().hex[:8]}"
    with zfs_space(zfs_lab) as space:
        space.prepare("proj")
        alice = Researcher("alice", tmp_path / "alice" / "proj", tmp_path / "cfg",
                           space.config("proj"))  # fmt: skip
        alice.write("task1/input/a.csv", "a\n")
        alice.init("first")
        access = tmp_path / "access.yml"
        access.write_text(json.dumps({"projects": {"proj": {
            "dataset": f"{space.parent}/proj", "mountpoint": str(space.mountpoint / "proj"),
        }}}))  # fmt: skip
        access.chmod(0o644)
        tmp_path.chmod(0o755)

        def cfg(dry_run: bool) -> remote.RemoteConfig:
            return remote.RemoteConfig(
                ssh_config=str(sshd_lab.ssh_config), known_hosts=str(sshd_lab.known_hosts),
                key_file=str(sshd_lab.keys["dsgadmin"]), command_timeout=300, dry_run=dry_run,
                dsg=f"sudo -n env DSG_ACCESS_FILE={access} DSG_LOG_DIR={tmp_path} {dsg_bin}",
            )  # fmt: skip

        host = sshd_lab.alias("dsgadmin")
        try:
            [dry] = remote.backup([host], cfg(True), target_root)
            assert dry.ok, dry.error
            assert dry.data["projects"][0]["plan"]["steps"][0]["kind"] == "full"
            assert not zfs_lab.zfs.dataset_exists(f"{target_root}/proj")
            [real] = remote.backup([host], cfg(False), target_root)
            assert real.ok, real.error
            assert [s.snapname for s in zfs_lab.zfs.list_snapshots(f"{target_root}/proj")] == ["s1"]
            [dry] = remote.restore_drill([host], cfg(True), "proj", target_root)
            assert dry.ok and dry.data["plan"]["source_head"] == "s1", dry.error
            [drill] = remote.restore_drill([host], cfg(False), "proj", target_root)
            assert drill.ok, drill.error
            assert drill.data["drill"]["ok"] and drill.data["drill"]["files"] == 1
            # a project with no backup: the task fails for that host, with the reason
            [bad] = remote.restore_drill([host], cfg(False), "nosuch", target_root)
            assert not bad.ok and "does not exist" in (bad.error or ""), bad
        finally:
            release_dsg_holds(zfs_lab, space.parent)
            for s in zfs_lab.zfs.list_snapshots(f"{space.parent}/proj"):
                zfs_lab.zfs.run("zfs", ["release", f"dsg-backup-{zfs_lab.backup_pool}", s.name],
                                check=False)  # fmt: skip
            if zfs_lab.zfs.dataset_exists(target_root):
                for s in zfs_lab.zfs.list_snapshots(f"{target_root}/proj"):
                    zfs_lab.zfs.run("zfs", ["release", f"dsg-backup-{zfs_lab.backup_pool}",
                                            s.name], check=False)  # fmt: skip
                zfs_lab.destroy(target_root)
