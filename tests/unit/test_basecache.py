"""The base cache (.dsg/base.cache): the base as the parse gives it, and only from a cache
this user sealed for the base file as it is now; anything else is parsed again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsg.core.manifest import Entry, Manifest, set_aside
from dsg.fs.durable import read_manifest, write_manifest
from dsg.workcopy import basecache
from dsg.workcopy.workspace import Workspace

H = [bytes([i]) * 16 for i in range(3)]


def manifest() -> Manifest:
    entries = [
        Entry(f"t/input/f{i:04}.csv", i, 10**18 + i, H[i % 3], None, i % 5, "a@x.org")
        for i in range(300)
    ]
    entries.append(Entry("t/output/link", 0, 0, None, "../input/f0001.csv", 2, "b@x.org"))
    entries.append(Entry("t/output/.hidden", 3, 1, H[0], None, 1, "b@x.org"))  # suspect today
    entries.append(Entry("t/output/Twin.csv", 3, 1, H[0], None, 1, "b@x.org"))  # case twins
    entries.append(Entry("t/output/twin.csv", 3, 1, H[1], None, 1, "b@x.org"))
    return Manifest.from_entries(entries, "s4")


def rows(m: Manifest) -> list:
    return [e.row() for e in m]


@pytest.fixture()
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("DSG_CONFIG_HOME", str(tmp_path / "conf"))
    w = Workspace(tmp_path / "wc")
    w.root.mkdir()
    w.set_base(manifest(), None)
    return w


@pytest.mark.parametrize("written_by", ["set_base", "parse"])
def test_the_cache_gives_what_the_parse_gives(ws: Workspace, written_by: str) -> None:
    if written_by == "parse":
        (ws.dir / basecache.FILE).unlink()
        ws.base()  # parses, then keeps the cache
    assert (ws.dir / basecache.FILE).is_file()
    parsed = read_manifest(ws.dir / "base.manifest.gz")
    assert parsed.suspect  # the hidden name is set aside by the parse
    key = basecache.user_key()
    assert key is not None
    cached = basecache.load(ws.dir, ws.dir / "base.manifest.gz", key)
    assert cached is not None
    assert rows(cached) == rows(parsed)
    assert cached.digest() == parsed.digest() and cached.snapshot == "s4"
    assert cached.suspect == parsed.suspect
    assert cached.paths == parsed.paths
    assert rows(ws.base()) == rows(parsed)
    assert cached.body() == parsed.body()  # the digest is of the same lines


def test_what_the_load_sets_aside_is_found_without_it() -> None:
    m = manifest()
    parsed = Manifest.from_bytes(m.to_bytes())
    assert set(parsed.suspect) == {"t/output/.hidden", "t/output/Twin.csv", "t/output/twin.csv"}
    assert set_aside(m) == parsed.suspect
    bad = Manifest([Entry("a/../b", 1, 1, H[0])], "s1")  # the load refuses it: no cache
    assert set_aside(bad) is None


def test_a_tampered_cache_is_ignored_and_the_base_parsed(ws: Workspace) -> None:
    ws.base()
    f = ws.dir / basecache.FILE
    data = bytearray(f.read_bytes())
    data[-40] ^= 1
    f.write_bytes(bytes(data))
    key = basecache.user_key()
    assert key is not None
    assert basecache.load(ws.dir, ws.dir / "base.manifest.gz", key) is None
    assert rows(ws.base()) == rows(manifest())
    assert basecache.load(ws.dir, ws.dir / "base.manifest.gz", key) is not None  # kept anew


def test_another_users_cache_or_a_new_base_is_ignored(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.base()
    mine = basecache.user_key()
    monkeypatch.setenv("DSG_CONFIG_HOME", str(tmp_path / "someone-else"))
    theirs = basecache.user_key()
    assert theirs is not None and theirs != mine
    assert basecache.load(ws.dir, ws.dir / "base.manifest.gz", theirs) is None
    monkeypatch.setenv("DSG_CONFIG_HOME", str(tmp_path / "conf"))
    assert mine is not None
    other = Manifest.from_entries([Entry("t/input/new.csv", 1, 1, H[1], None, 5, "c@x.org")], "s5")
    # a base file written by anything else (an older dsg, a restore): the cache is not its
    write_manifest(ws.dir / "base.manifest.gz", other)
    assert basecache.load(ws.dir, ws.dir / "base.manifest.gz", mine) is None
    assert rows(ws.base()) == rows(other)
    ws.set_base(manifest(), None)  # a new base through dsg: its cache is kept at once
    cached = basecache.load(ws.dir, ws.dir / "base.manifest.gz", mine)
    assert cached is not None and rows(cached) == rows(manifest())


def test_a_cache_from_elsewhere_cannot_stand_in_for_the_base(ws: Workspace) -> None:
    """A cache crafted without this user's key (e.g. committed to git with .dsg/), naming a
    hostile path: ignored; the real base is parsed and checked."""
    import marshal

    key = basecache.user_key()
    assert key is not None
    forged_payload = marshal.dumps(
        ("s4", "0" * 64, ["../../etc/passwd"], [1], [1], [H[0]], {}, [1], ["x"], {})
    )
    base_file = ws.dir / "base.manifest.gz"
    ident = basecache._identity(base_file)
    assert ident is not None
    wrong = basecache._seal(os.urandom(32), ident, forged_payload)
    (ws.dir / basecache.FILE).write_bytes(basecache.MAGIC + wrong + forged_payload)
    m = ws.base()
    assert "../../etc/passwd" not in m.paths
    assert rows(m) == rows(manifest())


@pytest.mark.parametrize("defect", ["mode", "link", "size"])
def test_a_key_that_is_not_ours_alone_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, defect: str
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    monkeypatch.setenv("DSG_CONFIG_HOME", str(conf))
    key = conf / basecache.KEY_FILE
    if defect == "mode":
        key.write_bytes(os.urandom(32))
        key.chmod(0o644)
    elif defect == "link":
        (tmp_path / "k").write_bytes(os.urandom(32))
        (tmp_path / "k").chmod(0o600)
        key.symlink_to(tmp_path / "k")
    else:
        key.write_bytes(b"short")
        key.chmod(0o600)
    assert basecache.user_key() is None
    w = Workspace(tmp_path / "wc")
    w.root.mkdir()
    w.set_base(manifest(), None)
    assert rows(w.base()) == rows(manifest())  # parsed, no cache kept
    assert not (w.dir / basecache.FILE).exists()
