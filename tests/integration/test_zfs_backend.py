"""The zfs backend on a real (zfs-fuse) pool: what only ZFS shows."""

from __future__ import annotations

import json

import orjson
import pytest

from dsg.core import faults
from dsg.core.errors import RepositoryError
from tests.helpers import Researcher, manifest_content, tree_content

pytestmark = pytest.mark.zfs  # (the reader test also runs on posix)
A = "task1/input/a.csv"


@pytest.fixture
def zspace(zfs_lab):
    from tests.conftest import zfs_space

    with zfs_space(zfs_lab) as sp:
        yield sp


def test_init_without_the_dataset_says_how_to_create_it(zspace, tmp_path) -> None:
    r = Researcher("alice", tmp_path / "alice" / "proj", tmp_path / "cfg", zspace.config("proj"))
    (r.root / ".dsgconfig.yml").unlink()
    r.write(A, "a\n")
    proc = r.cli(
        "init",
        "--repo-type",
        "zfs",
        "--pool",
        zspace.pool,
        "--host",
        "localhost",
        "--repo-path",
        str(zspace.mountpoint),
        "--repo-name",
        "proj",
        "--no-interactive",
        "--json",
    )
    assert proc.returncode == 1
    err = json.loads(proc.stdout)["error"]
    assert err["kind"] == "repository_not_found"
    assert "playbooks/add-project.yml" in err["hint"] and "zfs create" in err["hint"]
    assert not (r.root / ".dsgconfig.yml").exists()
    # once the admin has created it, the same command works
    zspace.prepare("proj")
    proc = r.cli(
        "init",
        "--repo-type",
        "zfs",
        "--pool",
        zspace.pool,
        "--host",
        "localhost",
        "--repo-path",
        str(zspace.mountpoint),
        "--repo-name",
        "proj",
        "--no-interactive",
        "--json",
    )
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["committed"]["id"] == "s1"


@pytest.mark.parametrize("backend", ["zfs"])
def test_snapshots_are_exactly_s1_to_sk_with_records(team) -> None:
    _alice, bob = team
    for i in range(3):
        bob.write(f"task1/input/n{i}.csv", f"{i}\n")
        bob.sync(message=f"bob {i}")
    repo = bob.repo
    snaps = repo.zfs.list_snapshots(repo.dataset)
    assert [s.snapname for s in snaps] == ["s1", "s2", "s3", "s4"]
    log = json.loads(bob.cli("log", "--json").stdout)["snapshots"]
    for s, entry in zip(reversed(snaps), log, strict=True):
        assert s.user_props["dsg:id"] == s.snapname == entry["id"]
        assert s.user_props["dsg:author"] == entry["author"]
        rec = orjson.loads(s.user_props["dsg:record"])
        assert rec["chain"] == entry["chain"] and rec["tx"] == s.user_props["dsg:tx"]
        assert s.userrefs >= 1, "dsg holds its snapshots"
    # the live tree and the head snapshot agree, and nothing else is left in the pool
    assert manifest_content(repo.manifest("s4")) == tree_content(bob.root)
    parent = repo.dataset.rpartition("/")[0]
    repo.close()
    assert repo.zfs.list_datasets(parent) == [parent, repo.dataset]


@pytest.mark.parametrize("backend", ["zfs"])
def test_full_pool_mid_sync_is_clean(team, zfs_lab) -> None:
    alice, bob = team
    repo = bob.repo
    zfs_lab.zfs.set_property(repo.dataset, "quota", "3M")
    bob.write("task1/input/small.csv", "small\n")
    bob.write("task1/input/big.bin", b"\x01" * (6 * 2**20))
    mine = (bob.read("task1/input/big.bin"), bob.read("task1/input/small.csv"))
    with pytest.raises(RepositoryError) as e:
        bob.sync(message="too big")
    assert "repository" in e.value.message.lower()
    assert e.value.hint and "full" in e.value.hint
    assert repo.head() == "s1"
    assert (bob.read("task1/input/big.bin"), bob.read("task1/input/small.csv")) == mine
    assert bob.ws.base().snapshot == "s1"
    # alice still reads a consistent s1, and after the admin raises the quota all goes through
    alice.sync()
    assert repo.head() == "s1"
    zfs_lab.zfs.set_property(repo.dataset, "quota", "none")
    bob.sync(message="now it fits")
    assert repo.head() == "s2"
    assert manifest_content(repo.manifest("s2")) == tree_content(bob.root)


@pytest.fixture
def hook():
    yield faults.hooks
    faults.hooks.clear()


@pytest.mark.parametrize(
    ("backend", "point"),
    [("posix", "posix.after_tree"), pytest.param("zfs", "zfs.after_apply")],
)
def test_readers_never_see_a_half_written_sync(team, make_researcher, hook, point) -> None:
    alice, bob = team
    s1 = manifest_content(bob.repo.manifest("s1"))
    bob.write(A, "bob's big change\n")
    bob.delete("task1/input/b.csv")
    seen = {}

    def reader() -> None:
        carol = make_researcher("carol")
        carol.clone()
        seen["carol"] = tree_content(carol.root)
        seen["status"] = alice.status().plan.remote_id

    hook[point] = reader
    bob.sync()
    assert seen["carol"] == s1, "a clone during a commit sees the committed head"
    assert seen["status"] == "s1"
    assert bob.repo.head() == "s2"
