"""Two researchers over real SSH against a ZFS repository (zfs-fuse in the lab).

zfs-fuse has no `zfs allow` and its control socket is root's, so in the lab the agent runs
zfs through `sudo -n` (DSG_ZFS_PREFIX), allowed for the lab group by a sudoers file this test
writes and removes: the stand-in for delegation, which the OpenZFS VM shows for real.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from dsg.workcopy.config import ProjectConfig, RepositoryConfig
from tests.conftest import release_dsg_holds
from tests.helpers import (
    REPO_ROOT,
    Researcher,
    manifest_content,
    skip_unless_lab_users_can_run,
    tree_content,
)

pytestmark = [pytest.mark.ssh, pytest.mark.zfs]
AGENT = REPO_ROOT / ".venv" / "bin" / "dsg"
SUDOERS = Path("/etc/sudoers.d/dsg-lab-zfs-test")


@pytest.fixture
def zfs_ssh(sshd_lab, zfs_lab, tmp_path, monkeypatch):
    skip_unless_lab_users_can_run(sshd_lab, str(AGENT))
    monkeypatch.setenv("DSG_SSH_COMMAND", f"ssh -F {sshd_lab.ssh_config}")
    gid = grp.getgrnam(sshd_lab.group).gr_gid
    top = Path("/srv/dsg-lab-tests")
    top.mkdir(exist_ok=True)
    base = top / f"zfs-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    parent = f"{zfs_lab.pool}/{base.name}"
    zfs_lab.zfs.create_dataset(parent, {"mountpoint": str(base / "repos")})
    zfs_lab.zfs.create_dataset(f"{parent}/proj")
    for d in (base, base / "repos", base / "repos" / "proj", base / "logs"):
        d.mkdir(exist_ok=True)
        os.chown(d, 0, gid)
        d.chmod(0o2775)
    locks = base / "repos" / ".dsg-locks"
    locks.mkdir()
    os.chown(locks, 0, gid)
    locks.chmod(0o2775)
    rule = f"%{sshd_lab.group} ALL=(root) NOPASSWD: /usr/sbin/zfs, /usr/sbin/zpool\n"
    SUDOERS.write_text(rule)
    SUDOERS.chmod(0o440)
    check = subprocess.run(["visudo", "-cf", str(SUDOERS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    access = base / "access.yml"
    access.write_text(
        yaml.safe_dump(
            {
                "projects": {
                    "proj": {
                        "dataset": f"{parent}/proj",
                        "mountpoint": str(base / "repos" / "proj"),
                        "users": {"alice": "write", "bob": "write"},
                    }
                }
            }
        )
    )
    remote = (
        f"env DSG_ZFS_PREFIX='sudo -n' {AGENT} serve --access-file {access} "
        f"--log-dir {base / 'logs'}"
    )

    def researcher(login: str) -> Researcher:
        cfg = ProjectConfig(
            name="proj",
            repository=RepositoryConfig(
                type="zfs",
                host=sshd_lab.alias(login),
                pool=zfs_lab.pool,
                mountpoint=str(base / "repos"),
                remote_command=remote,
            ),
        )
        return Researcher(login, tmp_path / login / "proj", tmp_path / "cfg" / login, cfg)

    yield researcher, f"{parent}/proj", zfs_lab
    SUDOERS.unlink(missing_ok=True)
    release_dsg_holds(zfs_lab, parent)
    zfs_lab.destroy(parent)
    shutil.rmtree(base, ignore_errors=True)


def test_two_researchers_over_ssh_on_zfs(zfs_ssh) -> None:
    researcher, dataset, lab = zfs_ssh
    alice = researcher("alice")
    alice.write("task1/input/a.csv", "a\n")
    alice.init("first on zfs over ssh")
    bob = researcher("bob")
    bob.clone()
    assert tree_content(bob.root) == tree_content(alice.root)
    bob.write("task1/input/b.csv", "bob\n")
    proc = bob.cli("sync", "-m", "bob", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alice.write("task1/input/a.csv", "a2\n")
    alice.sync(message="alice")
    bob.sync()
    assert tree_content(bob.root) == tree_content(alice.root)
    snaps = lab.zfs.list_snapshots(dataset)
    assert [s.snapname for s in snaps] == ["s1", "s2", "s3"]
    assert [s.user_props["dsg:author"] for s in snaps] == [
        "alice@hrdag.org",
        "bob@hrdag.org",
        "alice@hrdag.org",
    ]
    log = json.loads(alice.cli("log", "--json").stdout)["snapshots"]
    assert [s["id"] for s in log] == ["s3", "s2", "s1"]
    parent = dataset.rpartition("/")[0]
    assert lab.zfs.list_datasets(parent) == [parent, dataset], "read clones are cleaned up"
    # files in the live tree were written by the researchers' own logins
    from dsg.backends.zfs import ZfsRepository

    repo = ZfsRepository(Path(lab.zfs.mountpoint(dataset)), "proj", lab.pool)
    assert manifest_content(repo.manifest("s3")) == tree_content(alice.root)
    owner = (repo.root / "task1/input/b.csv").stat().st_uid
    assert owner == __import__("pwd").getpwnam("bob").pw_uid
