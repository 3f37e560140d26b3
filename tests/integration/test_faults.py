"""Faults: unreadable repository state, a sync killed at every step, a head that moves.

Crashes are real: the CLI runs in a subprocess that dies with os._exit(137) at a named
point (DSG_CRASH_AT), skipping every cleanup handler, as a kill would.
"""

from __future__ import annotations

import gzip
import json
import os

import pytest

from dsg.backends.base import LockOwner
from dsg.core import faults
from dsg.core.errors import ConflictsBlocked, DsgError
from dsg.fs.files import hash_file
from tests.helpers import manifest_content, tree_content

A = "task1/input/a.csv"
B = "task1/input/b.csv"
R = "task1/output/result.txt"


def local_bytes(r) -> set[bytes]:
    return {
        p.read_bytes()
        for p in r.root.rglob("*")
        if p.is_file() and not p.is_symlink() and ".dsg" not in p.parts
    }


def snapshot_is_intact(repo, snap: str) -> None:
    for e in repo.manifest(snap):
        if not e.is_link:
            assert hash_file(repo.snapshot_path(snap) / e.path) == e.hash, e.path


# --- a failed read is an error, never an empty manifest ---------------------------------


def corrupt_head_manifest(repo) -> None:
    p = repo.snapshot_path(repo.head()) / ".dsg" / "manifest.gz"
    os.chmod(p, 0o644)
    p.write_bytes(p.read_bytes()[:20])


def remove_head_manifest(repo) -> None:
    (repo.snapshot_path(repo.head()) / ".dsg" / "manifest.gz").unlink()


def tamper_head_manifest(repo) -> None:
    p = repo.snapshot_path(repo.head()) / ".dsg" / "manifest.gz"
    raw = gzip.decompress(p.read_bytes()).replace(b"a.csv", b"A.csv", 1)
    p.write_bytes(gzip.compress(raw))


def remove_head_file(repo) -> None:
    (repo.root / "HEAD").unlink()


def garble_head_file(repo) -> None:
    (repo.root / "HEAD").write_text("s99\n")


def move_repository(repo) -> None:
    repo.root.rename(repo.root.with_name("elsewhere"))


@pytest.mark.parametrize("backend", ["posix"])
@pytest.mark.parametrize(
    "damage",
    [
        corrupt_head_manifest,
        remove_head_manifest,
        tamper_head_manifest,
        remove_head_file,
        garble_head_file,
        move_repository,
    ],
)
def test_unreadable_remote_is_an_error_and_changes_nothing(team, damage) -> None:
    _, bob = team
    bob.write(B, "bob edit\n")
    before = tree_content(bob.root)
    damage(bob.repo)
    for args in (["status"], ["sync"], ["sync", "--json"]):
        proc = bob.cli(*args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert tree_content(bob.root) == before
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["error"]["message"]
    assert proc.stdout.count("\n") == 1  # exactly one JSON document


# --- a sync killed at each step ------------------------------------------------------


def prepare_mixed_sync(team):
    """Bob will upload one file, delete one remotely, download one and delete one locally."""
    alice, bob = team
    alice.write("task1/input/new_from_alice.csv", "alice new\n")
    alice.delete(R)
    alice.sync()  # s2
    bob.write(A, "bob changed a\n")
    bob.delete(B)
    bob.write("task1/input/new_from_bob.csv", "bob new\n")
    return alice, bob


COMMON_POINTS = [
    "sync.after_plan",
    "execute.after_remote_commit",
    "execute.after_first_local",
    "execute.before_base",
]
BACKEND_POINTS = {
    "posix": [
        "posix.after_put",
        "posix.after_tree",
        "posix.before_publish",
        "posix.after_snapshot_rename",
        "posix.after_head",
    ],
    "zfs": ["zfs.after_put", "zfs.after_apply", "zfs.before_snapshot", "zfs.after_snapshot"],
}
CRASH_CASES = [
    pytest.param(b, p, marks=[pytest.mark.zfs] if b == "zfs" else [], id=f"{b}-{p}")
    for b, points in BACKEND_POINTS.items()
    for p in COMMON_POINTS + points
]


# Crash points exercised by other test modules (not part of the sync matrix here).
TESTED_ELSEWHERE = {"backup.mid_stream": "tests/integration/test_backup.py"}


def test_crash_points_are_all_registered() -> None:
    import dsg.admin.backup
    import dsg.backends.zfs
    import dsg.sync.ops  # noqa: F401

    every = set(COMMON_POINTS).union(*BACKEND_POINTS.values(), TESTED_ELSEWHERE)
    assert every == set(faults.POINTS), "every crash point needs a test, every test a point"


def assert_no_leftovers(r, head_n: int) -> None:
    repo = r.repo
    want = [f"s{i}" for i in range(1, head_n + 1)]
    if r.config.repository.type == "posix":
        assert not any((repo.root / "txn").iterdir()), "no transaction left behind"
        names = sorted(p.name for p in (repo.root / "snapshots").iterdir())
        assert names == want
    else:
        zfs = repo.zfs
        snaps = [s.snapname for s in zfs.list_snapshots(repo.dataset)]
        assert snaps == want, "zfs list -t snapshot shows exactly @s1..@sk"
        parent = repo.dataset.rpartition("/")[0]
        assert zfs.list_datasets(parent) == [parent, repo.dataset], "no clones left"
        assert not any((repo.root / ".dsg" / "txn").iterdir())


@pytest.mark.parametrize(("backend", "point"), CRASH_CASES)
def test_sync_killed_at_each_step_recovers(team, point: str) -> None:
    alice, bob = prepare_mixed_sync(team)
    repo = bob.repo
    mine = local_bytes(bob)
    proc = bob.cli("sync", "-m", "bob's work", env={"DSG_CRASH_AT": point})
    assert proc.returncode == 137, (proc.stdout, proc.stderr)
    head = repo.head()
    assert head in ("s2", "s3"), "the repository is at N or N+1"
    snapshot_is_intact(repo, head)
    # the next command recovers without a human
    proc = bob.cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    proc = bob.cli("sync", "-m", "bob's work")
    assert proc.returncode == 0, proc.stderr
    head = repo.head()
    assert head == "s3", "exactly one snapshot for bob's changes"
    content = manifest_content(repo.manifest(head))
    assert content == tree_content(bob.root)
    assert B not in content and R not in content
    assert "task1/input/new_from_alice.csv" in content
    assert content["task1/input/new_from_bob.csv"].startswith("f:")
    lost = mine - local_bytes(bob) - all_snapshot_bytes(repo)
    assert not lost, f"local content lost: {lost!r}"
    alice.sync()
    assert tree_content(alice.root) == tree_content(bob.root)
    repo.close()
    assert_no_leftovers(bob, 3)


def all_snapshot_bytes(repo) -> set[bytes]:
    out = set()
    for rec in repo.history():
        for e in repo.manifest(rec.id):
            if not e.is_link:
                out.add((repo.snapshot_path(rec.id) / e.path).read_bytes())
    return out


@pytest.mark.parametrize("backend", ["posix"])
def test_lock_of_a_dead_writer_is_released(team) -> None:
    _, bob = prepare_mixed_sync(team)
    proc = bob.cli("sync", env={"DSG_CRASH_AT": "posix.after_tree"})
    assert proc.returncode == 137
    # the dead process's lock is gone: another writer gets it at once
    repo = bob.repo
    with repo.lock(LockOwner(user="carol@hrdag.org", tx="tx-test"), timeout=0):
        assert "txn/" in " ".join(repo.recovered) or repo.recovered == []
        assert repo.stale_holder and "bob@hrdag.org" in repo.stale_holder


def test_lock_timeout_names_the_holder(team) -> None:
    _alice, bob = team
    bob.write(A, "bob\n")
    with bob.repo.lock(LockOwner(user="alice@hrdag.org", tx="tx-hold"), timeout=1):
        proc = bob.cli("sync", "--lock-timeout", "0.5", "--json")
    assert proc.returncode == 1
    err = json.loads(proc.stdout)["error"]
    assert err["kind"] == "lock_timeout" and "alice@hrdag.org" in err["message"]
    assert bob.repo.head() == "s1"


# --- the head moves between plan and commit -----------------------------------------


@pytest.fixture
def hook():
    yield faults.hooks
    faults.hooks.clear()


def test_head_moves_between_plan_and_commit_no_lost_update(team, hook) -> None:
    alice, bob = team
    alice.write(A, "alice\n")
    bob.write(B, "bob\n")
    hook["sync.after_plan"] = lambda: (hook.clear(), alice.sync())
    res = bob.sync(message="bob")
    repo = bob.repo
    assert [r.id for r in repo.history()] == ["s3", "s2", "s1"]
    assert repo.record("s2").author == "alice@hrdag.org"
    assert res.committed.id == "s3" and res.committed.parent == "s2"
    head = manifest_content(repo.manifest("s3"))
    assert head == tree_content(bob.root)
    assert bob.read(A) == b"alice\n" and bob.read(B) == b"bob\n"


def test_head_moves_into_a_conflict_stops_cleanly(team, hook) -> None:
    alice, bob = team
    alice.write(A, "alice\n")
    bob.write(A, "bob\n")
    hook["sync.after_plan"] = lambda: (hook.clear(), alice.sync())
    with pytest.raises(ConflictsBlocked):
        bob.sync()
    assert bob.repo.head() == "s2"
    assert bob.read(A) == b"bob\n"


def test_commit_refuses_a_stale_parent(team) -> None:
    from dsg.core.errors import HeadMoved

    alice, bob = team
    repo = bob.repo
    alice.write(A, "alice\n")
    alice.sync()
    with repo.lock(LockOwner(user="bob@hrdag.org", tx="tx-x"), 5), pytest.raises(HeadMoved):
        repo.begin("s1", "tx-x")


@pytest.mark.parametrize("backend", ["posix"])
def test_history_rewritten_under_a_working_copy_is_refused(team) -> None:
    _, bob = team
    rec = bob.repo.snapshot_path("s1") / ".dsg" / "snapshot.json"
    data = json.loads(rec.read_text())
    data["message"] = "rewritten"
    os.chmod(rec, 0o644)
    rec.write_text(json.dumps(data))
    with pytest.raises(DsgError, match="history differs"):
        bob.sync()
