"""Fabric admin tasks for real on the lab host: create a project, add a user, and that user
clones and syncs it; dry runs change nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dsg.admin import remote
from dsg.workcopy.config import ProjectConfig, RepositoryConfig
from tests.ansible.test_lab_researchers import SUDOERS
from tests.helpers import Researcher, skip_unless_lab_users_can_run, tree_content

pytestmark = [pytest.mark.ansible, pytest.mark.ssh, pytest.mark.zfs]
PROJECT = "lab-beta"  # declared in inventories/lab: bob admin, carol write


def members(group: str) -> set[str]:
    out = subprocess.run(["getent", "group", group], capture_output=True, text=True).stdout
    return set(filter(None, out.strip().split(":")[-1].split(",")))


@pytest.mark.slow  # the extended tier: Fabric and playbook runs over the lab sshd: 2-3 min
def test_create_project_add_user_then_clone_and_sync(
    ansible_tools, ansible_lab, sshd_lab, tmp_path, monkeypatch
) -> None:
    inventory = str(Path(__file__).resolve().parents[2] / "inventories" / "lab")
    # remote.playbook runs ansible-playbook with this process's environment: give it the lab
    # vault's fixture password, as the ansible_tools runs have it.
    monkeypatch.setenv(
        "ANSIBLE_VAULT_IDENTITY_LIST", ansible_tools.env["ANSIBLE_VAULT_IDENTITY_LIST"]
    )
    ap = str(ansible_tools.venv / "bin" / "ansible-playbook")
    cfg = remote.RemoteConfig(command_timeout=900, ansible_playbook=ap)
    dry_cfg = remote.RemoteConfig(command_timeout=900, ansible_playbook=ap, dry_run=True)
    # Dry runs first (--check --diff). Take carol out of the project by hand so that
    # add-user has something to do, and prove the dry run does not do it.
    subprocess.run(["gpasswd", "-d", "carol", f"dsg-{PROJECT}"], capture_output=True)
    assert "carol" not in members(f"dsg-{PROJECT}")
    dry = remote.create_project(inventory, PROJECT, dry_cfg)
    assert dry.ok and dry.dry_run, dry.error
    dry = remote.add_user(inventory, "carol", dry_cfg)
    assert dry.ok, dry.error
    assert "carol" not in members(f"dsg-{PROJECT}"), "a dry run changed nothing"
    made = remote.create_project(inventory, PROJECT, cfg)
    assert made.ok, made.error
    added = remote.add_user(inventory, "carol", cfg)
    assert added.ok, added.error
    assert "carol" in members(f"dsg-{PROJECT}")
    skip_unless_lab_users_can_run(sshd_lab, "/usr/local/bin/dsg", "bob")

    lab_dir = ansible_lab.lab_dir
    monkeypatch.setenv("DSG_SSH_COMMAND", f"ssh -F {lab_dir / 'ssh_config'}")
    SUDOERS.write_text(f"%dsg-{PROJECT} ALL=(root) NOPASSWD: /usr/sbin/zfs, /usr/sbin/zpool\n")
    SUDOERS.chmod(0o440)
    mount_root = lab_dir / "zfs" / "mnt" / "dsglab" / "dsg"

    def researcher(login: str) -> Researcher:
        c = ProjectConfig(
            name=PROJECT,
            repository=RepositoryConfig(
                type="zfs", host=f"lab-{login}", pool="dsglab", mountpoint=str(mount_root),
                remote_command="env DSG_ZFS_PREFIX='sudo -n' /usr/local/bin/dsg serve",
            ),
        )  # fmt: skip
        return Researcher(login, tmp_path / login / PROJECT, tmp_path / "cfg" / login, c)

    try:
        bob = researcher("bob")
        bob.write("task2/input/x.csv", "x\n")
        bob.init("bob starts lab-beta")
        carol = researcher("carol")
        carol.clone()
        carol.write("task2/output/y.csv", "y\n")
        proc = carol.cli("sync", "-m", "carol's output", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["committed"]["id"] == "s2"
        bob.sync()
        assert tree_content(bob.root) == tree_content(carol.root)
    finally:
        SUDOERS.unlink(missing_ok=True)
        from dsg.backends.zfs import ZfsRepository

        repo = ZfsRepository(mount_root / PROJECT, PROJECT, "dsglab")
        if (repo.root / ".dsg").exists():
            repo.destroy_new()
        repo.close()
