"""The hostile member of tests/security, over the lab's real sshd: alice's key is stolen, and
whoever holds it speaks the protocol by hand. On posix and on zfs (zfs-fuse), where the
backend decides what destroying a project means."""

from __future__ import annotations

import pytest

from tests.helpers import tree_content
from tests.lab_ssh.space import A
from tests.lab_ssh.test_ssh_zfs import zfs_ssh  # noqa: F401  (the fixture)
from tests.security.agentpeer import Peer

pytestmark = pytest.mark.ssh


def stolen_key(lab, login: str, remote: str, project: str = "proj") -> Peer:
    """A session as `login` through ssh, the agent started by `remote`."""
    return Peer(["ssh", "-F", str(lab.ssh_config), lab.alias(login), remote], project)


def test_a_stolen_write_key_cannot_reach_a_colleagues_machine(ssh_team, ssh_space) -> None:
    alice, bob = ssh_team
    bob.write("Makefile", "all:\n\techo bob's\n")
    bob.path(".git").mkdir()
    bob.write(".git/config", "[core]\n")
    outside = {k: v for k, v in tree_content(bob.root).items() if "/input/" not in k}
    remote = " ".join([*ssh_space.agent_argv(), "--log-dir", str(ssh_space.base / "logs")])
    mallory = stolen_key(ssh_space.lab, "alice", remote)
    assert mallory.hello["ok"], mallory.hello
    mallory.begin("s1")
    for path in (".git/config", ".dsgconfig.yml", "Makefile", "task1/src/run.py"):
        resp = mallory.put_file(path, b"[core]\n\tfsmonitor = touch /tmp/pwned\n")
        assert resp["ok"] is False and resp["error"]["kind"] == "path", (path, resp)
    assert mallory.put_file("task1/input/new.csv", b"n\n")["ok"]
    resp = mallory.commit(message="\x1b[2Jlooks innocent", author="bob@hrdag.org")
    assert resp["ok"], resp
    assert resp["record"]["login"] == "alice" and resp["record"]["message"] == "looks innocent"
    assert mallory.call({"op": "destroy_new"})["ok"] is False
    mallory.close()

    bob.sync()
    assert bob.read("task1/input/new.csv") == b"n\n"
    assert {k: v for k, v in tree_content(bob.root).items() if "/input/" not in k} == outside
    log = bob.cli("log").stdout
    assert "[login alice]" in log and "\x1b" not in log
    assert alice.read(A) == b"a\n"


@pytest.mark.zfs
def test_on_zfs_the_shape_is_a_property_and_a_stolen_key_cannot_destroy(
    zfs_ssh,  # noqa: F811
    sshd_lab,
) -> None:
    researcher, dataset, lab = zfs_ssh
    alice = researcher("alice")
    alice.write(A, "a\n")
    alice.init("first")
    shape = lab.zfs.user_properties(dataset)["dsg:shape"]
    assert '"data_dirs":["frozen","input","output"]' in shape
    remote = alice.config.repository.remote_command
    assert remote
    mallory = stolen_key(sshd_lab, "bob", remote)
    assert mallory.hello["ok"], mallory.hello
    assert mallory.call({"op": "destroy_new"})["ok"] is False
    mallory.begin("s1")
    assert mallory.call({"op": "destroy_new"})["ok"] is False
    assert mallory.put_file("Makefile", b"evil\n")["ok"] is False
    mallory.close()
    assert [s.snapname for s in lab.zfs.list_snapshots(dataset)] == ["s1"]
    bob = researcher("bob")
    bob.clone()
    assert bob.read(A) == b"a\n"
