"""Uploads stored by writer threads (`backends.staging`): every object lands whole and
read-only with its mtime; a damaged upload is refused before it is queued; a repository
that fills up mid-upload commits nothing, leaves no transaction behind, and the next run
commits everything. Posix and zfs (the zfs lab) share this code."""

from __future__ import annotations

import io
import os
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from dsg.backends import staging
from dsg.backends.base import LockOwner
from dsg.backends.registry import open_repository
from dsg.core.errors import IntegrityError, RepositoryError
from dsg.fs.files import hash_bytes
from tests.helpers import Researcher, project_config, tree_content


@pytest.fixture(autouse=True, params=["threads", "serial"])
def writer_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of writing (`dsg.fs.writers`): this machine's disk decides `auto`."""
    monkeypatch.setenv("DSG_WRITERS", request.param)
    return request.param


def _fill(r: Researcher, n: int, size: int = 700) -> None:
    for i in range(n):
        r.write(f"task{i % 3}/input/d{i % 5}/f{i:04d}.csv", os.urandom(size + i % 50))
    r.write("task0/frozen/big.bin", os.urandom(staging.SMALL_OBJECT + 1))  # streamed


def test_many_uploads_land_whole_and_read_only(make_researcher, backend: str) -> None:
    alice = make_researcher("alice")
    _fill(alice, 150)
    alice.init()
    with closing(alice.repo) as repo:
        manifest = repo.manifest(repo.head())
        assert len(manifest) == 151
        for entry in manifest:
            with repo.open_file(repo.head(), entry.path) as f:
                assert hash_bytes(f.read()) == entry.hash, entry.path
    bob = make_researcher("bob")
    bob.clone()
    assert tree_content(bob.root) == tree_content(alice.root)
    if backend == "posix":
        root = Path(alice.config.repository.mountpoint) / "proj"
        objects = [p for p in (root / "objects").rglob("*") if p.is_file()]
        assert len(objects) == 151
        assert all(p.stat().st_mode & 0o222 == 0 for p in objects)
        assert list((root / "txn").iterdir()) == []


def test_a_damaged_upload_is_refused_before_it_is_queued(make_researcher) -> None:
    alice = make_researcher("alice")
    alice.write("task1/input/a.csv", "a\n")
    alice.init()
    owner = LockOwner(user="alice@hrdag.org", tx="tx-abcdef01", operation="sync")
    with closing(alice.repo) as repo, repo.lock(owner, 5):
        txn = repo.begin(repo.head(), "tx-abcdef01")
        good = b"x" * 100
        txn.put_file("task1/input/one.csv", io.BytesIO(good), 100, 0, hash_bytes(good))
        with pytest.raises(IntegrityError, match=r"two\.csv"):
            txn.put_file("task1/input/two.csv", io.BytesIO(b"y" * 100), 100, 0, hash_bytes(good))
        with pytest.raises(IntegrityError, match=r"three\.csv"):  # longer than it says
            txn.put_file("task1/input/three.csv", io.BytesIO(good + b"!"), 100, 0, hash_bytes(good))
        txn.abort()
    assert alice.repo.head() == "s1"


@pytest.mark.parametrize("backend", ["posix"])
def test_a_repository_that_fills_up_commits_nothing(tmp_path: Path, backend: str) -> None:
    """A real full filesystem: the repository is on a 1 MiB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a real full disk) needs root")
    mnt = tmp_path / "repos"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        alice = Researcher("alice", tmp_path / "alice", tmp_path / "cfg", project_config("p", mnt))
        _fill(alice, 120, size=20_000)  # ~2.4 MiB of small files, queued to the writers
        with pytest.raises(RepositoryError, match="No space left") as e:
            alice.init()
        assert "nothing was committed" in (e.value.hint or "")
        with closing(open_repository(alice.config)) as repo:
            assert not repo.exists() or repo.head() is None  # a failed init removes its repo
        assert not (mnt / "p" / "txn").exists() or list((mnt / "p" / "txn").iterdir()) == []
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        alice.init()
        bob = Researcher("bob", tmp_path / "bob", tmp_path / "cfgb", project_config("p", mnt))
        bob.clone()
        assert tree_content(bob.root) == tree_content(alice.root)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
