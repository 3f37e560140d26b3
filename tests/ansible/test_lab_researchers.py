"""After the site playbook: researchers use the project it created, over the lab sshd.

The playbook made dataset dsglab/dsg/lab-alpha (group dsg-lab-alpha, setgid, lock file),
/etc/dsg/access.yml (alice admin, bob write, carol read) and installed the engine at
/usr/local/bin/dsg. Alice initialises the repository from her data, Bob clones and syncs,
Carol (read-only) clones but cannot sync up. zfs-fuse lets only root run zfs (no
`zfs allow`), so the agent calls zfs through `sudo -n`, permitted to the project group by a
sudoers file this test writes and removes -- the lab's stand-in for delegation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dsg.workcopy.config import ProjectConfig, RepositoryConfig
from tests.ansible.conftest import lab_provisioned
from tests.ansible.test_lab_run import converge
from tests.helpers import (
    Researcher,
    manifest_content,
    skip_unless_lab_users_can_run,
    tree_content,
)

pytestmark = [pytest.mark.ansible, pytest.mark.ssh, pytest.mark.zfs]
PROJECT = "lab-alpha"
DATASET = f"dsglab/dsg/{PROJECT}"
SUDOERS = Path("/etc/sudoers.d/dsg-lab-alpha-zfs-test")


@pytest.fixture
def provisioned(ansible_tools, ansible_lab, sshd_lab, tmp_path, monkeypatch):
    lab_dir = ansible_lab.lab_dir
    mount_root = lab_dir / "zfs" / "mnt" / "dsglab" / "dsg"
    if not lab_provisioned(mount_root):
        run, _ = converge(ansible_tools)  # not provisioned yet, or from another checkout
        assert run.returncode == 0, run.explain()
    skip_unless_lab_users_can_run(sshd_lab, "/usr/local/bin/dsg")
    monkeypatch.setenv("DSG_SSH_COMMAND", f"ssh -F {lab_dir / 'ssh_config'}")
    SUDOERS.write_text(f"%dsg-{PROJECT} ALL=(root) NOPASSWD: /usr/sbin/zfs, /usr/sbin/zpool\n")
    SUDOERS.chmod(0o440)
    check = subprocess.run(["visudo", "-cf", str(SUDOERS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    def researcher(login: str) -> Researcher:
        cfg = ProjectConfig(
            name=PROJECT,
            repository=RepositoryConfig(
                type="zfs",
                host=f"lab-{login}",
                pool="dsglab",
                mountpoint=str(mount_root),
                remote_command="env DSG_ZFS_PREFIX='sudo -n' /usr/local/bin/dsg serve",
            ),
        )
        return Researcher(login, tmp_path / login / PROJECT, tmp_path / "cfg" / login, cfg)

    yield researcher, mount_root / PROJECT
    SUDOERS.unlink(missing_ok=True)
    # Leave the project empty again, as the playbook made it (root may do what dsg may not).
    from dsg.backends.zfs import ZfsRepository

    repo = ZfsRepository(mount_root / PROJECT, PROJECT, "dsglab")
    repo.destroy_new()
    repo.close()


def test_researchers_sync_the_project_the_playbook_created(provisioned) -> None:
    researcher, live = provisioned
    alice = researcher("alice")
    alice.write("task1/input/survey.csv", "id,answer\n1,yes\n")
    alice.init("alice's first data")
    bob = researcher("bob")
    bob.clone()
    assert tree_content(bob.root) == tree_content(alice.root)
    bob.write("task1/output/table.csv", "answer,n\nyes,1\n")
    proc = bob.cli("sync", "-m", "bob's table", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    committed = json.loads(proc.stdout)["committed"]
    assert committed["id"] == "s2"
    alice.sync()
    assert tree_content(alice.root) == tree_content(bob.root)
    carol = researcher("carol")
    carol.clone()
    carol.write("task1/input/survey.csv", "carol was here\n")
    proc = carol.cli("sync", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["kind"] == "permission_denied"
    snaps = subprocess.run(
        ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", DATASET],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert snaps == [f"{DATASET}@s1", f"{DATASET}@s2"]
    from dsg.backends.zfs import ZfsRepository

    repo = ZfsRepository(live, PROJECT, "dsglab")
    assert manifest_content(repo.manifest("s2")) == tree_content(bob.root)
    # Bob's agent appended its commit to the log the role pre-created in a directory he
    # cannot write (this transaction's line: the file may hold earlier runs').
    lines = Path("/var/log/dsg/agent.jsonl").read_text().splitlines()
    wanted = ('"event":"committed"', '"login":"bob"', f'"tx":"{committed["tx"]}"')
    assert any(all(w in line for w in wanted) for line in lines), lines[-5:]
    shutil.rmtree(carol.root)
