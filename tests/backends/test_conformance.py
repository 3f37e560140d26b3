"""One contract for every backend, in the manner of restic's backend test suite: the verbs of
`dsg.backends.base.Repository` and `Transaction` behave alike on posix, on zfs (the zfs-fuse
lab) and over ssh (the real agent, reached through an ssh stand-in, serving posix).

What a backend must do is written once here; each backend's own peculiarities (layouts,
ZFS snapshots, the wire) are tested beside its module."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
import xxhash
import yaml

from dsg.backends.base import LockOwner, Repository
from dsg.backends.posix import PosixRepository
from dsg.core.errors import DsgError, HeadMoved, RepositoryError, RepositoryExists
from dsg.workcopy.rules import ScanRules
from tests.helpers import DSG

A = "task1/input/a.csv"
B = "task1/output/b.txt"


@dataclass
class Factory:
    """Makes fresh repositories of one backend."""

    kind: str
    tmp: Path
    lab: object | None = None
    parent: str | None = None
    n: int = 0

    def new(self) -> Repository:
        self.n += 1
        name = f"p{self.n}"
        if self.kind == "posix":
            (self.tmp / "repos").mkdir(exist_ok=True)
            return PosixRepository(self.tmp / "repos" / name, name)
        if self.kind == "zfs":
            from dsg.backends.zfs import ZfsRepository

            ds = f"{self.parent}/{name}"
            self.lab.zfs.create_dataset(ds)  # type: ignore[union-attr]
            return ZfsRepository(Path(self.lab.zfs.mountpoint(ds)), name, self.lab.pool)  # type: ignore[union-attr]
        from dsg.backends.ssh import SshRepository

        (self.tmp / "repos").mkdir(exist_ok=True)
        access = self.tmp / "access.yml"
        doc = yaml.safe_load(access.read_text()) if access.exists() else {"projects": {}}
        doc["projects"][name] = {"type": "posix", "mountpoint": str(self.tmp / "repos" / name),
                                 "users": {_me(): "write"}}  # fmt: skip
        access.write_text(yaml.safe_dump(doc))
        return SshRepository("conformance.invalid", name, str(self.tmp / "repos" / name))


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture(
    params=["posix", pytest.param("zfs", marks=pytest.mark.zfs), "ssh"],
)
def factory(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> Iterator[Factory]:
    kind = request.param
    if kind == "ssh":
        fake = tmp_path / "fake-ssh"
        fake.write_text(
            f'#!/bin/sh\nexec {DSG} serve --access-file "{tmp_path}/access.yml" '
            f'--log-dir "{tmp_path}"\n'
        )
        fake.chmod(0o755)
        monkeypatch.setenv("DSG_SSH_COMMAND", str(fake))
        yield Factory(kind, tmp_path)
        return
    if kind == "zfs":
        from tests.conftest import zfs_space

        lab = request.getfixturevalue("zfs_lab")
        with zfs_space(lab) as sp:
            yield Factory(kind, tmp_path, lab, sp.parent)
        return
    yield Factory(kind, tmp_path)


@pytest.fixture
def repo(factory: Factory) -> Iterator[Repository]:
    r = factory.new()
    with closing(r):
        yield r


def owner(tx: str = "tx-c0ffee") -> LockOwner:
    return LockOwner(user="ann@hrdag.org", tx=tx)


def commit(repo: Repository, parent: str | None, files: dict[str, bytes], *, delete=(),
           message: str = "m", tx: str = "tx-c0ffee") -> str:  # fmt: skip
    with repo.lock(owner(tx), 10):
        txn = repo.begin(parent, tx)
        for path, data in files.items():
            txn.put_file(path, io.BytesIO(data), len(data), 1_700_000_000_000_000_000,
                         xxhash.xxh3_128_digest(data))  # fmt: skip
        for path in delete:
            txn.delete(path)
        return txn.commit(message, "ann@hrdag.org", "Ann").id


def read(repo: Repository, snap: str, path: str) -> bytes:
    with repo.open_file(snap, path) as f:
        return f.read()


# --- lifecycle


def test_a_new_repository_is_empty_and_records_its_shape(repo: Repository) -> None:
    assert not repo.exists()
    shape = ScanRules(frozenset({"input", "output"}))
    repo.create(shape)
    assert repo.exists()
    assert repo.head() is None
    assert list(repo.history()) == []
    assert repo.shape() == shape
    assert repo.tags() == {}


def test_create_twice_is_refused(repo: Repository) -> None:
    repo.create()
    with pytest.raises((RepositoryExists, DsgError)):
        repo.create()


# --- transactions


def test_commits_are_numbered_linear_and_readable(repo: Repository) -> None:
    repo.create()
    s1 = commit(repo, None, {A: b"a1\n"})
    s2 = commit(repo, s1, {B: b"b\n", A: b"a2\n"}, message="second")
    assert (s1, s2) == ("s1", "s2")
    assert repo.head() == "s2"
    assert [r.id for r in repo.history()] == ["s1", "s2"] or [r.id for r in repo.history()] == [
        "s2",
        "s1",
    ]
    rec = repo.record("s2")
    assert rec.parent == "s1" and rec.message == "second" and rec.author == "ann@hrdag.org"
    assert rec.expected_chain(repo.record("s1").chain) == rec.chain
    assert repo.manifest_digest("s2") == rec.manifest_digest == repo.manifest("s2").digest()
    assert read(repo, "s1", A) == b"a1\n" and read(repo, "s2", A) == b"a2\n"
    assert dict((p, f.read()) for p, f in repo.read_files("s2", [A, B])) == {
        A: b"a2\n",
        B: b"b\n",
    }
    m = repo.manifest("s2")
    assert m.get(A).snap == 2 and m.get(B).snap == 2  # type: ignore[union-attr]


def test_a_deletion_and_a_restore(repo: Repository) -> None:
    repo.create()
    commit(repo, None, {A: b"a\n", B: b"b\n"})
    commit(repo, "s1", {}, delete=[A])
    assert repo.manifest("s2").get(A) is None
    with repo.lock(owner(), 10):
        txn = repo.begin("s2", "tx-c0ffee")
        txn.restore(A, "s1")
        txn.commit("restore", "ann@hrdag.org", "Ann")
    assert read(repo, "s3", A) == b"a\n"


def test_a_stale_parent_is_refused_and_changes_nothing(repo: Repository) -> None:
    repo.create()
    commit(repo, None, {A: b"a\n"})
    commit(repo, "s1", {A: b"a2\n"})
    with repo.lock(owner(), 10), pytest.raises(HeadMoved):
        repo.begin("s1", "tx-c0ffee")
    assert repo.head() == "s2"


def test_begin_needs_the_lock(repo: Repository) -> None:
    repo.create()
    with pytest.raises((RepositoryError, DsgError)):
        repo.begin(None, "tx-c0ffee")


def test_an_aborted_transaction_leaves_nothing(repo: Repository) -> None:
    repo.create()
    commit(repo, None, {A: b"a\n"})
    with repo.lock(owner(), 10):
        txn = repo.begin("s1", "tx-c0ffee")
        txn.put_file(B, io.BytesIO(b"b\n"), 2, 0, xxhash.xxh3_128_digest(b"b\n"))
        txn.abort()
    assert repo.head() == "s1" and repo.manifest("s1").get(B) is None
    assert commit(repo, "s1", {B: b"b\n"}) == "s2"  # and the next writer is not hindered


def test_an_upload_that_does_not_match_its_hash_is_refused(repo: Repository) -> None:
    repo.create()
    with repo.lock(owner(), 10):
        txn = repo.begin(None, "tx-c0ffee")
        with pytest.raises(DsgError):
            txn.put_file(A, io.BytesIO(b"tampered"), 8, 0, xxhash.xxh3_128_digest(b"original"))
            txn.commit("m", "ann@hrdag.org", "Ann")  # where a backend checks at commit
    assert repo.head() is None


# --- reads


def test_reading_what_does_not_exist_is_an_error_never_empty(repo: Repository) -> None:
    repo.create()
    commit(repo, None, {A: b"a\n"})
    for call in (lambda: repo.manifest("s9"), lambda: repo.record("s9"),
                 lambda: read(repo, "s1", "task1/input/missing.csv")):  # fmt: skip
        with pytest.raises(DsgError):
            call()


def test_tags_name_snapshots_and_never_move(repo: Repository) -> None:
    repo.create()
    commit(repo, None, {A: b"a\n"})
    commit(repo, "s1", {A: b"a2\n"})
    repo.add_tag("v1", "s1", "first", "ann@hrdag.org")
    assert repo.tags()["v1"]["snapshot"] == "s1"
    with pytest.raises(DsgError):
        repo.add_tag("v1", "s2", "moved", "ann@hrdag.org")
    assert repo.tags()["v1"]["snapshot"] == "s1"


def test_destroy_new_removes_a_failed_init(repo: Repository) -> None:
    repo.create()
    repo.destroy_new()
    assert not repo.exists()
