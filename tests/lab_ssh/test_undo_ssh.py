"""Undo over real SSH (the lab sshd and the dsg agent): restore, revert, tags as refs and the
mass-delete guard, on a posix repository and on zfs-fuse."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.helpers import manifest_content, tree_content
from tests.lab_ssh.space import A, repo_on_disk
from tests.lab_ssh.test_ssh_zfs import zfs_ssh  # noqa: F401  (the fixture)

pytestmark = pytest.mark.ssh


def js(proc) -> dict:
    assert proc.stdout.count("\n") == 1, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def undo_round(alice, bob) -> dict[str, str]:
    """restore (a local edit, a tag), revert, and the guard: what every backend must do."""
    bob.write(A, "bob's mistake\n")
    bob.write("task1/input/c.csv", "c\n")
    assert bob.cli("sync", "-m", "oops", "--json").returncode == 0  # s2
    assert bob.cli("tag", "before", "-s", "head~1").returncode == 0
    # restore from a tag, with normal permissions; the edit it replaces is kept aside
    bob.write(A, "unsynced edit\n")
    doc = js(bob.cli("restore", A, "-s", "before", "--json"))
    assert doc["snapshot"] == "s1" and len(doc["backups"]) == 1
    assert bob.read(A) == b"a\n" and os.stat(bob.path(A)).st_mode & 0o200
    # revert s2 for everyone: a new snapshot, the history keeps both
    alice.sync()
    doc = js(alice.cli("revert", "s2", "--json"))
    assert doc["committed"]["id"] == "s3" and doc["snapshot"] == "s3"
    assert not alice.path("task1/input/c.csv").exists() and alice.read(A) == b"a\n"
    log = js(alice.cli("log", "--json"))["snapshots"]
    assert [(s["id"], s["tags"]) for s in log] == [("s3", []), ("s2", []), ("s1", ["before"])]
    proc = alice.cli("log", "s9", "--json")
    assert js(proc)["error"]["message"] == "no snapshot s9 (head is s3)"
    # bob's copy follows (his restored file equals s3's: nothing to send)
    assert bob.cli("sync", "--json").returncode == 0
    assert tree_content(bob.root) == tree_content(alice.root)
    # the guard: an rm -rf of most of the project stops before the repository loses it
    for i in range(60):
        alice.write(f"task1/input/many/{i}.csv", f"{i}\n")
    alice.sync()  # s4
    shutil.rmtree(alice.path("task1/input/many"))
    proc = alice.cli("sync", "--json")
    assert proc.returncode == 4 and js(proc)["error"]["kind"] == "mass_delete"
    assert js(alice.cli("restore", "task1/input/many", "--json"))["restored"]
    return tree_content(alice.root)


def test_undo_over_ssh_on_posix(ssh_space, ssh_team) -> None:
    alice, bob = ssh_team
    tree = undo_round(alice, bob)
    repo = repo_on_disk(ssh_space)
    assert repo.head() == "s4"
    assert manifest_content(repo.manifest("s4")) == tree


@pytest.mark.zfs
def test_undo_over_ssh_on_zfs(zfs_ssh) -> None:  # noqa: F811
    researcher, dataset, lab = zfs_ssh
    alice = researcher("alice")
    alice.write(A, "a\n")
    alice.write("task1/output/r.txt", "r\n")
    alice.init("first on zfs over ssh")
    bob = researcher("bob")
    bob.clone()
    tree = undo_round(alice, bob)
    snaps = [s.snapname for s in lab.zfs.list_snapshots(dataset)]
    assert snaps == ["s1", "s2", "s3", "s4"]
    from pathlib import Path

    from dsg.backends.zfs import ZfsRepository

    repo = ZfsRepository(Path(lab.zfs.mountpoint(dataset)), "proj", lab.pool)
    assert manifest_content(repo.manifest("s4")) == tree
