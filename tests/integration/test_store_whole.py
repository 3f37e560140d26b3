"""Format 2 stages the first upload of a content under its object name when the repository
lacks its prefix directory (objects/<ab>), and commit moves such directories in whole. An
initial upload of n files then makes at most 256 renames, not n; what is stored must be
exactly the snapshot's content, whatever else happened in the transaction."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from dsg.backends import posix as posix_backend
from dsg.backends.base import LockOwner
from dsg.backends.posix import PosixRepository
from dsg.backends.staging import SMALL_OBJECT
from dsg.core.errors import IntegrityError
from dsg.fs.files import hash_bytes, hash_file

OWNER = LockOwner(user="alice@hrdag.org", tx="tx-0000aaaa", operation="sync")


def new_repo(tmp_path: Path) -> PosixRepository:
    repo = PosixRepository(tmp_path / "repo", "p")
    repo.create()
    return repo


def put(txn, path: str, data: bytes, digest: bytes | None = None) -> None:
    txn.put_file(
        path, io.BytesIO(data), len(data), 1_700_000_000 * 10**9, digest or hash_bytes(data)
    )


def stored_objects(repo: PosixRepository) -> dict[str, Path]:
    root = repo.root / "objects"
    return {f"{d.name}{f.name}": f for d in root.iterdir() for f in d.iterdir()}


def check_store(repo: PosixRepository, snapshot: str) -> None:
    """objects/ holds exactly the snapshot's contents, each under its own hash, read-only,
    and no transaction is left behind."""
    want = {e.hash.hex() for e in repo.manifest(snapshot).entries if e.hash is not None}
    got = stored_objects(repo)
    assert set(got) == want
    for name, p in got.items():
        assert hash_file(p).hex() == name
        assert p.stat().st_mode & 0o222 == 0
    assert not any((repo.root / "txn").iterdir())


def commit_counting_renames(repo, txn, monkeypatch) -> int:
    calls = []
    real = os.rename

    def rename(a, b, *args, **kw):
        calls.append(b)
        return real(a, b, *args, **kw)

    monkeypatch.setattr(posix_backend.os, "rename", rename)
    txn.commit("m", "alice@hrdag.org", "Alice")
    monkeypatch.setattr(posix_backend.os, "rename", real)
    return len(calls)


def test_an_initial_upload_moves_prefix_directories_whole(tmp_path: Path, monkeypatch) -> None:
    repo = new_repo(tmp_path)
    files = {f"task1/input/f{i:04d}.csv": f"row {i}\n".encode() for i in range(3000)}
    files["task1/frozen/big.bin"] = os.urandom(SMALL_OBJECT + 12345)  # streamed to disk
    files["task1/input/copy.csv"] = files["task1/input/f0007.csv"]  # same content twice
    with repo.lock(OWNER, 5):
        txn = repo.begin(None, OWNER.tx)
        for p, data in files.items():
            put(txn, p, data)
        renames = commit_counting_renames(repo, txn, monkeypatch)
    # 3,000 contents spread over all 256 prefixes: one rename each, plus the snapshot's
    # own few (its directory, manifest, record, HEAD); not one per file.
    assert renames <= 256 + 10
    check_store(repo, "s1")
    m = repo.manifest("s1")
    assert len(m) == len(files)
    for p, data in files.items():
        assert m.get(p).hash == hash_bytes(data)


def test_later_uploads_mix_whole_and_per_file_storing(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    first = {f"a/input/x{i}.csv": f"first {i}\n".encode() for i in range(5)}
    with repo.lock(OWNER, 5):
        txn = repo.begin(None, OWNER.tx)
        for p, data in first.items():
            put(txn, p, data)
        txn.commit("m", "alice@hrdag.org", "Alice")
    prefixes = {d.name for d in (repo.root / "objects").iterdir()}
    assert 1 <= len(prefixes) <= 5
    # Some of these land in prefixes the repository has (one by one), most in new ones
    # (whole); one repeats a content already stored.
    second = {f"a/input/y{i}.csv": f"second {i}\n".encode() for i in range(200)}
    second["a/input/again.csv"] = first["a/input/x0.csv"]
    with repo.lock(OWNER, 5):
        txn = repo.begin("s1", "tx-0000bbbb")
        for p, data in second.items():
            put(txn, p, data)
        txn.commit("m", "alice@hrdag.org", "Alice")
    assert any(hash_bytes(d).hex()[:2] in prefixes for d in second.values())
    check_store(repo, "s2")


def test_uploads_the_snapshot_does_not_keep_are_not_stored(tmp_path: Path) -> None:
    """A path put twice keeps its last content; a path put then deleted keeps none; a
    stray file in a staged prefix directory is not moved in with it."""
    repo = new_repo(tmp_path)
    with repo.lock(OWNER, 5):
        txn = repo.begin(None, OWNER.tx)
        for i in range(300):
            put(txn, f"a/input/f{i}.csv", f"keep {i}\n".encode())
        put(txn, "a/input/twice.csv", b"first version\n")
        put(txn, "a/input/twice.csv", b"second version\n")
        put(txn, "a/input/gone.csv", b"deleted before commit\n")
        txn.delete("a/input/gone.csv")
        stray_prefix = hash_bytes(b"keep 1\n").hex()[:2]
        staged = txn.objects / stray_prefix
        assert staged.is_dir()
        (staged / ("0" * 30)).write_bytes(b"not an upload")
        txn.commit("m", "alice@hrdag.org", "Alice")
    check_store(repo, "s1")
    assert repo.manifest("s1").get("a/input/twice.csv").hash == hash_bytes(b"second version\n")
    assert repo.manifest("s1").get("a/input/gone.csv") is None


def test_a_refused_upload_leaves_nothing_under_its_name(tmp_path: Path) -> None:
    """A large upload that fails its hash check is removed; a client that goes on and
    commits (the agent allows it) gets the other files, and nothing under that name."""
    repo = new_repo(tmp_path)
    big = os.urandom(SMALL_OBJECT + 1)
    with repo.lock(OWNER, 5):
        txn = repo.begin(None, OWNER.tx)
        for i in range(50):
            put(txn, f"a/input/f{i}.csv", f"row {i}\n".encode())
        with pytest.raises(IntegrityError):
            put(txn, "a/input/big.bin", big, digest=hash_bytes(b"something else"))
        txn.commit("m", "alice@hrdag.org", "Alice")
    check_store(repo, "s1")
    assert repo.manifest("s1").get("a/input/big.bin") is None
    assert hash_bytes(b"something else").hex() not in stored_objects(repo)
