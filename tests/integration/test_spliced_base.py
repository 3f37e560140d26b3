"""After a sync that committed onto its own base, the working copy's new base file is the
repository's new manifest without serializing the whole base: a repository on this machine
hands over the manifest it committed (Transaction.committed); otherwise (over SSH) the
working copy splices the changed lines into its old base file, as the repository did
(ops.sync, Workspace.spliced_base). When the splice cannot give that manifest, the base is
built whole as before."""

from __future__ import annotations

import gzip
from contextlib import closing
from pathlib import Path

import pytest

import dsg.sync.ops
import dsg.workcopy.workspace
from dsg.core.errors import ManifestError
from dsg.core.manifest import Manifest
from dsg.core.stored import StoredManifest
from dsg.workcopy import basecache
from dsg.workcopy.workspace import Workspace
from tests.helpers import Researcher, settle, small_project


@pytest.fixture
def ana(tmp_path: Path) -> Researcher:
    r = small_project(tmp_path)
    r.status()  # the base cache: the base then comes from it, as in daily use
    r.write("task0/input/d0/f0.csv", "changed\n")
    r.write("task1/input/new.csv", "new\n")
    r.delete("task1/input/d0/f1.csv")
    settle()
    return r


def over_the_wire(monkeypatch) -> None:
    """As over SSH: the repository (the agent) does not hand its manifest over."""
    monkeypatch.setattr(dsg.sync.ops, "_as_committed", lambda committed, record: None)


def spy(monkeypatch) -> list[StoredManifest | None]:
    seen: list[StoredManifest | None] = []
    real = Workspace.spliced_base

    def recording(self: Workspace, *a: object) -> StoredManifest | None:
        got = real(self, *a)
        seen.append(got)
        return got

    monkeypatch.setattr(Workspace, "spliced_base", recording)
    return seen


def body(path: Path) -> bytes:
    raw = gzip.decompress(path.read_bytes())
    return raw[raw.index(b"\n") + 1 :]


def check_base_is_the_repositorys(r: Researcher) -> None:
    base_file = r.root / ".dsg" / "base.manifest.gz"
    with closing(r.repo) as repo:
        head = repo.head()
        assert head is not None
        record = repo.record(head)
        theirs = repo.manifest(head)
    mine = Manifest.from_bytes(base_file.read_bytes())
    assert mine.snapshot == head == theirs.snapshot
    assert mine.digest() == record.manifest_digest == theirs.digest()
    assert [e.row() for e in mine] == [e.row() for e in theirs]
    key = basecache.user_key()
    assert key is not None
    cached = basecache.load(r.root / ".dsg", base_file, key)  # the cache is of this file
    assert cached is not None and cached.digest() == mine.digest()
    assert [e.row() for e in cached] == [e.row() for e in mine]
    assert cached.suspect == mine.suspect  # what the cache sets aside is what the file does


def count_serialized(monkeypatch) -> list[int]:
    """The sizes of the whole manifests turned into lines from here on."""
    serialized: list[int] = []
    real_body = Manifest.body

    def counting(self: Manifest) -> bytes:
        serialized.append(len(self))
        return real_body(self)

    monkeypatch.setattr(Manifest, "body", counting)
    return serialized


def check_new_base(r: Researcher, result, got: StoredManifest | None) -> None:  # type: ignore[no-untyped-def]
    """`got`, the new base's lines, are the commit's: the base file holds them."""
    assert result.committed is not None and got is not None
    assert got.digest == result.committed.manifest_digest
    check_base_is_the_repositorys(r)
    assert body(r.root / ".dsg" / "base.manifest.gz") == got.body
    assert r.status().plan.is_noop


def test_the_new_base_is_the_manifest_the_local_repository_committed(ana: Researcher, monkeypatch):
    seen = spy(monkeypatch)
    serialized = count_serialized(monkeypatch)  # the posix repository splices its own
    handed: list[StoredManifest | None] = []
    real = dsg.sync.ops._as_committed

    def recording(committed, record):  # type: ignore[no-untyped-def]
        got = real(committed, record)
        handed.append(got)
        return got

    monkeypatch.setattr(dsg.sync.ops, "_as_committed", recording)
    result = ana.sync()
    assert serialized == [] and seen == []  # not built whole, nor spliced a second time
    assert len(handed) == 1
    check_new_base(ana, result, handed[0])


def test_init_writes_the_committed_manifest_as_the_base(tmp_path: Path, monkeypatch):
    serialized = count_serialized(monkeypatch)
    r = small_project(tmp_path, files=40)
    # The repository splices 40 lines into its empty manifest; the base is those lines,
    # not the entries serialized again.
    assert serialized == []
    assert r.status().plan.is_noop  # and writes the base cache, which the check reads
    check_base_is_the_repositorys(r)


def test_the_new_base_is_spliced_and_is_the_repositorys_manifest(ana: Researcher, monkeypatch):
    over_the_wire(monkeypatch)
    seen = spy(monkeypatch)
    serialized = count_serialized(monkeypatch)  # whole manifests turned into lines
    result = ana.sync()
    assert serialized == []
    assert len(seen) == 1
    check_new_base(ana, result, seen[0])


def test_a_base_that_cannot_be_spliced_is_built_whole(ana: Researcher, monkeypatch):
    over_the_wire(monkeypatch)
    seen = spy(monkeypatch)

    class Refusing(StoredManifest):  # the working copy's only: the repository splices as ever
        __slots__ = ()

        def edit(self, *a: object, **k: object):  # type: ignore[override]
            raise ManifestError("not spliceable here")

        @classmethod
        def from_bytes(cls, data: bytes, **k: object) -> StoredManifest:
            got = StoredManifest.from_bytes(data, **k)  # type: ignore[arg-type]
            got.__class__ = Refusing
            return got

    monkeypatch.setattr(dsg.workcopy.workspace, "StoredManifest", Refusing)
    result = ana.sync()
    assert result.committed is not None and seen == [None]
    check_base_is_the_repositorys(ana)
    assert ana.status().plan.is_noop


def test_a_damaged_base_file_is_not_spliced(ana: Researcher, monkeypatch):
    """A base file whose lines are not those of the base read from its cache (changed
    behind dsg's back) gives no splice: the new base is built from the entries."""
    over_the_wire(monkeypatch)
    seen = spy(monkeypatch)
    base_file = ana.root / ".dsg" / "base.manifest.gz"

    class Other(StoredManifest):  # the working copy's only: the repository reads as ever
        @classmethod
        def from_bytes(cls, data: bytes, **k: object) -> StoredManifest:
            got = StoredManifest.from_bytes(data, **k)  # type: ignore[arg-type]
            got.digest = "0" * 64  # as if the file held other lines than the cached base's
            return got

    monkeypatch.setattr(dsg.workcopy.workspace, "StoredManifest", Other)
    assert base_file.is_file()
    result = ana.sync()
    assert result.committed is not None and seen == [None]
    check_base_is_the_repositorys(ana)
