"""The engine's ZFS sync against the lab VM's OpenZFS, as unprivileged project members.

The VM converged by the site playbook (tests/vm/test_site_playbook.py does it; this test
converges it itself when run alone): project lab-beta (bob admin, carol write) on
dsglab/dsg/lab-beta, the agent `/usr/local/bin/dsg serve` forced by each member's key,
`zfs allow` of hold,release,rollback,snapshot,userprop to them, no sudo. Two researchers on
this machine sync through real SSH (host key verified); the agent runs as them in the guest
with only the delegated rights, and reads old versions through .zfs/snapshot (no clone: a
delegated member could not create one).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsg.workcopy.config import ProjectConfig, RepositoryConfig
from tests.ansible.conftest import AnsibleTools, ansible_tools  # noqa: F401 (fixture)
from tests.helpers import Researcher, tree_content
from tests.vm.conftest import LabVM, users_ssh_config

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.ansible]

PROJECT = "lab-beta"
DATASET = f"dsglab/dsg/{PROJECT}"
MOUNT_ROOT = "/var/repos/dsg"

RESET = f"""
for snap in $(zfs list -H -t snapshot -o name -d 1 {DATASET}); do
  for tag in $(zfs holds -H "$snap" | cut -f2); do zfs release "$tag" "$snap"; done
  zfs destroy "$snap"
done
find {MOUNT_ROOT}/{PROJECT} -mindepth 1 -delete
"""


def converged(vm: LabVM) -> bool:
    probe = vm.run(
        ["sh", "-c", f"test -x /usr/local/bin/dsg && zfs list -H {DATASET}"], check=False
    )
    return probe.returncode == 0


def ssh_config(vm: LabVM, path: Path) -> Path:
    return users_ssh_config(vm.port, vm.known_hosts, ("bob", "carol"), path)


def test_engine_syncs_as_delegated_members_over_ssh(
    lab_vm: LabVM,
    ansible_tools: AnsibleTools,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not converged(lab_vm):
        from tests.vm import test_site_playbook as site

        site.ensure_lab_user_keys()
        site.prepare_release()
        tools = AnsibleTools(
            ansible_tools.venv, {**ansible_tools.env, "DSG_LAB_VM_PORT": str(lab_vm.port)}
        )
        site.playbook(tools)
    lab_vm.sh(RESET)

    # the members have no sudo, and the engine as a member sees what OpenZFS offers
    for user in ("bob", "carol"):
        sudo = lab_vm.sh(f"sudo -l -U {user} || true")
        assert "not allowed" in sudo, sudo
    platform = lab_vm.sh(
        "runuser -u bob -- /opt/dsg/current/bin/python -c "
        "'from dsg.zfs.ops import Zfs, detect_platform; "
        f'p = detect_platform(Zfs(), "{DATASET}"); print(p.snapshot_dir, p.allow, p.encryption)\''
    ).split()
    assert platform == ["True", "True", "True"], platform

    monkeypatch.setenv("DSG_SSH_COMMAND", f"ssh -F {ssh_config(lab_vm, tmp_path / 'ssh_config')}")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    def researcher(login: str) -> Researcher:
        cfg = ProjectConfig(
            name=PROJECT,
            repository=RepositoryConfig(
                type="zfs", host=f"vm-{login}", pool="dsglab", mountpoint=MOUNT_ROOT
            ),
        )
        return Researcher(login, tmp_path / login / PROJECT, tmp_path / "cfg" / login, cfg)

    bob = researcher("bob")
    bob.write("task1/input/a.csv", "a1\n")
    bob.write("task1/output/big.bin", b"\x00\x01" * 200_000)
    bob.init("first on OpenZFS, delegated")
    carol = researcher("carol")
    carol.clone()
    assert tree_content(carol.root) == tree_content(bob.root)
    carol.write("task1/input/c.csv", "carol\n")
    proc = carol.cli("sync", "-m", "carol adds c", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bob.write("task1/input/a.csv", "a2\n")
    bob.sync(message="bob edits a")
    carol.sync()
    assert tree_content(carol.root) == tree_content(bob.root)

    # the snapshots are real OpenZFS snapshots, made and held by the members
    lines = lab_vm.sh(
        f"zfs list -H -t snapshot -o name,dsg:author,userrefs -s createtxg -d 1 {DATASET}"
    ).splitlines()
    rows = [line.split("\t") for line in lines]
    assert [r[0].split("@")[1] for r in rows] == ["s1", "s2", "s3"], rows
    assert [r[1] for r in rows] == ["bob@hrdag.org", "carol@hrdag.org", "bob@hrdag.org"], rows
    assert all(int(r[2]) >= 1 for r in rows), rows  # held (delegated hold)

    # an old version, read by the agent as carol through .zfs/snapshot
    out = tmp_path / "old.csv"
    proc = carol.cli("snapfetch", "task1/input/a.csv", "--snapshot", "s1", "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_text() == "a1\n"
    assert lab_vm.sh(f"cat {MOUNT_ROOT}/{PROJECT}/.zfs/snapshot/s1/task1/input/a.csv") == "a1\n"
    origins = lab_vm.sh("zfs list -H -o origin -r dsglab").split()
    assert set(origins) == {"-"}, origins  # no clones anywhere
    log = lab_vm.sh("cat /var/log/dsg/agent.jsonl")
    logins = {json.loads(line).get("login") for line in log.splitlines() if line.strip()}
    assert {"bob", "carol"} <= logins, log[-2000:]
