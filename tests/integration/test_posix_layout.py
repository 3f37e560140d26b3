"""The posix repository format: content-addressed objects (format 2), what a commit writes,
views for browsing, and repositories of format 1 (a hard-linked tree per snapshot) still
working beside it."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from dsg.backends import posix as posix_backend
from dsg.backends.posix import REPO_FORMAT, REPO_FORMAT_TREES, PosixRepository
from dsg.core.errors import IntegrityError, RepositoryError
from dsg.fs.files import hash_bytes
from dsg.sync import ops
from tests.helpers import Researcher, empty_stored_object, tree_content

pytestmark = pytest.mark.parametrize("backend", ["posix"])

A = "task1/input/a.csv"
B = "task1/input/b.csv"


def repo_root(r: Researcher) -> Path:
    return Path(r.config.repo_path)


def objects(root: Path) -> set[str]:
    return {f"{d.name}{f.name}" for d in (root / "objects").iterdir() for f in d.iterdir()}


def test_commit_writes_only_new_content(make_researcher: Callable[..., Researcher]) -> None:
    alice = make_researcher("alice")
    for i in range(40):
        alice.write(f"task1/input/f{i:02d}.csv", f"row {i}\n")
    alice.write("task1/input/copy.csv", "row 7\n")  # same bytes as f07: one object
    alice.link("task1/input/latest.csv", "f39.csv")
    alice.init()
    root = repo_root(alice)
    meta = orjson.loads((root / "repo.json").read_bytes())
    assert meta["format"] == REPO_FORMAT
    assert objects(root) == {hash_bytes(f"row {i}\n".encode()).hex() for i in range(40)}
    # a snapshot directory holds its metadata only; no per-file tree
    assert sorted(p.name for p in (root / "snapshots" / "s1").iterdir()) == [".dsg"]

    before = objects(root)
    alice.write(A, "new a\n")
    alice.delete("task1/input/f00.csv")
    alice.sync(message="one new file, one deleted")
    assert objects(root) - before == {hash_bytes(b"new a\n").hex()}
    assert before <= objects(root)  # history keeps every older object
    for obj in (root / "objects").rglob("*"):
        if obj.is_file():
            assert obj.stat().st_mode & 0o222 == 0, obj  # read-only

    bob = make_researcher("bob")
    bob.clone()
    assert tree_content(bob.root) == tree_content(alice.root)
    assert os.readlink(bob.path("task1/input/latest.csv")) == "f39.csv"


def test_view_of_a_snapshot_is_browsable(team: tuple[Researcher, Researcher]) -> None:
    alice, _ = team
    alice.link("task1/output/link.txt", "result.txt")
    alice.write(A, "a,2\n")
    alice.sync(message="s2")
    with closing(alice.repo) as repo:
        view = repo.snapshot_path("s1")
        assert view == repo_root(alice) / "views" / "s1"
        assert (view / A).read_bytes() == b"a,1\n"
        assert repo.snapshot_path("s1") == view  # built once, then reused
        v2 = repo.snapshot_path("s2")
        assert (v2 / A).read_bytes() == b"a,2\n"
        assert os.readlink(v2 / "task1/output/link.txt") == "result.txt"
        assert (v2 / ".dsg" / "snapshot.json").is_file()  # the record, as in format 1
    assert alice.cli("snapmount", "--snapshot", "s1").returncode == 0
    assert (alice.root / ".dsg" / "mnt" / "s1" / A).read_bytes() == b"a,1\n"


def test_equal_hash_with_different_bytes_is_refused(
    team: tuple[Researcher, Researcher], monkeypatch
) -> None:
    alice, _ = team
    root = repo_root(alice)
    content = b"the real content\n"
    digest = hash_bytes(content).hex()
    planted = root / "objects" / digest[:2] / digest[2:]
    planted.parent.mkdir(exist_ok=True)
    planted.write_bytes(b"other bytes, same name\n")
    # A true collision: the stored object does hash to its name (no real one is known).
    real = posix_backend._hash_path
    monkeypatch.setattr(
        posix_backend, "_hash_path", lambda p: digest if p == str(planted) else real(p)
    )
    alice.write(B, content)
    with pytest.raises(IntegrityError, match="same xxh3-128"):
        alice.sync(message="must not merge with the planted object")
    with closing(alice.repo) as repo:
        assert repo.head() == "s1"
    assert alice.read(B) == content  # nothing lost locally


def test_a_damaged_object_is_replaced_by_a_verified_upload(
    team: tuple[Researcher, Researcher], make_researcher: Callable[..., Researcher]
) -> None:
    """An object that no longer hashes to its name (a crash before its flush, a failing
    disk) does not block its content forever: the next upload of that content replaces it,
    which mends the older snapshots that use it too."""
    alice, _ = team
    root = repo_root(alice)
    content = alice.read(A)  # in s1 already
    obj = empty_stored_object(root, content)
    alice.write("task1/input/same-again.csv", content)
    alice.sync(message="the same content again")
    assert obj.read_bytes() == content
    assert obj.stat().st_mode & 0o222 == 0
    carol = make_researcher("carol")
    carol.clone()
    assert carol.read(A) == content  # s1's file is whole again
    assert carol.read("task1/input/same-again.csv") == content


def test_missing_object_is_a_clear_error(
    team: tuple[Researcher, Researcher], make_researcher: Callable[..., Researcher]
) -> None:
    alice, _ = team
    root = repo_root(alice)
    digest = hash_bytes(b"a,1\n").hex()
    (root / "objects" / digest[:2] / digest[2:]).unlink()
    carol = make_researcher("carol")
    with pytest.raises(RepositoryError, match="content object is unreadable"):
        carol.clone()
    proc = alice.cli("validate-snapshot", "--json")
    assert proc.returncode == 1
    assert A in proc.stdout


def test_format_1_repository_keeps_working(make_researcher: Callable[..., Researcher]) -> None:
    alice = make_researcher("alice")
    alice.write(A, "a,1\n")
    alice.write(B, "b,1\n")
    legacy = PosixRepository(repo_root(alice), "proj", create_layout=1)
    ops.init(alice.root, alice.config, legacy, alice.user, "made by an earlier dsg")
    root = repo_root(alice)
    assert orjson.loads((root / "repo.json").read_bytes())["format"] == REPO_FORMAT_TREES
    assert not (root / "objects").exists()
    alice.write(A, "a,2\n")
    alice.sync(message="s2")
    # format 1: each snapshot is a full tree, the unchanged file a hard link
    s1, s2 = root / "snapshots" / "s1", root / "snapshots" / "s2"
    assert (s2 / A).read_bytes() == b"a,2\n"
    assert (s1 / B).stat().st_ino == (s2 / B).stat().st_ino
    bob = make_researcher("bob")
    bob.clone()
    assert bob.read(A) == b"a,2\n"
    with closing(bob.repo) as repo:
        assert repo.snapshot_path("s1") == s1
    assert alice.cli("validate-chain").returncode == 0


def test_unknown_format_is_refused(make_researcher: Callable[..., Researcher]) -> None:
    alice = make_researcher("alice")
    alice.write(A, "a,1\n")
    alice.init()
    meta = repo_root(alice) / "repo.json"
    meta.write_bytes(orjson.dumps({"format": "dsg-posix-repo/9", "name": "proj"}))
    bob = make_researcher("bob")
    with pytest.raises(RepositoryError, match="does not know"):
        bob.clone()


def _legacy_team(make_researcher: Callable[..., Researcher]) -> tuple[Researcher, Path]:
    alice = make_researcher("alice")
    alice.write(A, "a,1\n")
    alice.write(B, "b,1\n")
    alice.link("task1/input/latest.csv", "a.csv")
    legacy = PosixRepository(repo_root(alice), "proj", create_layout=1)
    ops.init(alice.root, alice.config, legacy, alice.user, "made by an earlier dsg")
    alice.write(A, "a,2\n")
    alice.sync(message="s2")
    return alice, repo_root(alice)


def test_upgrade_converts_format_1_in_place(make_researcher: Callable[..., Researcher]) -> None:
    alice, root = _legacy_team(make_researcher)
    before = {s: tree_content(root / "snapshots" / s, ("input",)) for s in ("s1", "s2")}

    proc = alice.cli("admin", "upgrade-repo", str(root), "--json")  # a dry run by default
    assert proc.returncode == 0, proc.stderr
    doc = orjson.loads(proc.stdout)
    assert doc["dry_run"] and not doc["upgraded"]
    assert (doc["snapshots"], doc["objects"]) == (2, 3)  # a,1 / b,1 / a,2
    assert orjson.loads((root / "repo.json").read_bytes())["format"] == REPO_FORMAT_TREES

    proc = alice.cli("admin", "upgrade-repo", str(root), "--no-dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout)["upgraded"]
    assert orjson.loads((root / "repo.json").read_bytes())["format"] == REPO_FORMAT
    for s in ("s1", "s2"):
        assert sorted(p.name for p in (root / "snapshots" / s).iterdir()) == [".dsg"]
    assert len(objects(root)) == 3
    with closing(alice.repo) as repo:
        for s in ("s1", "s2"):  # every snapshot reads back as it was
            assert tree_content(repo.snapshot_path(s), ("input",)) == before[s]
    assert alice.cli("validate-chain").returncode == 0
    assert alice.cli("validate-snapshot", "--snapshot", "s1").returncode == 0

    # syncs go on, now committing objects only
    alice.write(B, "b,2\n")
    alice.sync(message="s3 after the upgrade")
    assert sorted(p.name for p in (root / "snapshots" / "s3").iterdir()) == [".dsg"]
    bob = make_researcher("bob")
    bob.clone()
    assert tree_content(bob.root) == tree_content(alice.root)

    # interrupted while removing the old trees: a second run finishes the job
    leftover = root / "snapshots" / "s1" / "task1"
    leftover.mkdir()
    (leftover / "stale.csv").write_text("x")
    doc = orjson.loads(
        alice.cli("admin", "upgrade-repo", str(root), "--no-dry-run", "--json").stdout
    )
    assert doc["upgraded"] and not leftover.exists()
    doc = orjson.loads(
        alice.cli("admin", "upgrade-repo", str(root), "--no-dry-run", "--json").stdout
    )
    assert not doc["upgraded"] and doc["reason"] == "already format 2"


def test_upgrade_refuses_a_damaged_file(make_researcher: Callable[..., Researcher]) -> None:
    alice, root = _legacy_team(make_researcher)
    damaged = root / "snapshots" / "s1" / B
    os.chmod(damaged, 0o644)
    damaged.write_bytes(b"b,X\n")
    proc = alice.cli("admin", "upgrade-repo", str(root), "--no-dry-run", "--json")
    assert proc.returncode == 1
    err = orjson.loads(proc.stdout)["error"]
    assert B in err["message"] and "s1" in err["message"]
    assert "validate-snapshot" in err["hint"]
    assert orjson.loads((root / "repo.json").read_bytes())["format"] == REPO_FORMAT_TREES
    assert (root / "snapshots" / "s2" / A).read_bytes() == b"a,2\n"  # trees untouched
