"""Manifests: canonical round trip, and every kind of corruption is an error."""

from __future__ import annotations

import gzip

import orjson
import pytest

from dsg.core.errors import ManifestError
from dsg.core.manifest import Entry, Manifest, SnapshotRecord
from dsg.fs.durable import read_manifest
from dsg.fs.files import hash_bytes


def sample() -> Manifest:
    return Manifest.from_entries(
        [
            Entry("t/input/b.csv", 3, 7, hash_bytes(b"bbb"), snap=2, user="bob@x.org"),
            Entry("t/input/a b 'q\".csv", 1, 5, hash_bytes(b"a"), snap=1, user="alice@x.org"),
            Entry("t/output/link", target="../input/b.csv", snap=2, user="bob@x.org"),
            Entry("t/input/café.csv", 0, 1, hash_bytes(b""), snap=1, user="alice@x.org"),
        ],
        snapshot="s2",
    )


def test_round_trip_is_canonical() -> None:
    m = sample()
    data = m.to_bytes()
    back = Manifest.from_bytes(data)
    assert [e.row() for e in back] == [e.row() for e in m]
    assert back.snapshot == "s2"
    assert back.to_bytes() == data, "same manifest, same bytes"
    assert back.digest() == m.digest()
    assert [e.path for e in back] == sorted(e.path for e in m)


def rebuild(m: Manifest, mutate) -> bytes:
    """Re-encode with a mutated body but a *recomputed* digest (a careful attacker)."""
    import hashlib

    rows = [e.row() for e in m]
    mutate(rows)
    body = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    header = {
        "format": "dsg-manifest/1",
        "snapshot": "s2",
        "count": len(rows),
        "digest": hashlib.sha256(body).hexdigest(),
    }
    return gzip.compress(orjson.dumps(header) + b"\n" + body)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda rows: rows[0].__setitem__(0, "../../etc/passwd"), "path component"),
        (lambda rows: rows[0].__setitem__(0, "/etc/passwd"), "absolute"),
        (lambda rows: rows[0].__setitem__(0, "t/input/x\ny"), "control character"),
        (lambda rows: rows[0].__setitem__(0, "t/input/cafe\u0301.csv"), "NFC"),
        (lambda rows: rows.reverse(), "sorted"),
        (lambda rows: rows.append(list(rows[-1])), "sorted"),
        (lambda rows: rows[-1].__setitem__(2, "../../../outside"), "outside"),
        (lambda rows: rows[0].__setitem__(4, "zz"), "malformed"),
        (lambda rows: rows[0].__setitem__(2, "big"), "malformed"),
        (lambda rows: rows[0].__setitem__(1, "d"), "malformed"),
        (lambda rows: rows.append(["t/output/link/inside", "l", "x", 1, "u"]), "inside it"),
    ],
)
def test_hostile_or_corrupt_entries_are_refused(mutate, needle: str) -> None:
    with pytest.raises(ManifestError, match=needle):
        Manifest.from_bytes(rebuild(sample(), mutate))


def test_flipped_byte_fails_the_digest() -> None:
    raw = bytearray(gzip.decompress(sample().to_bytes()))
    raw[-10] ^= 0x01
    with pytest.raises(ManifestError, match="digest"):
        Manifest.from_bytes(gzip.compress(bytes(raw)))


@pytest.mark.parametrize("data", [b"", b"not gzip", gzip.compress(b""), gzip.compress(b"{}\n")])
def test_garbage_is_an_error_not_empty(data: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_bytes(data)


def test_missing_manifest_is_an_error(tmp_path) -> None:
    with pytest.raises(ManifestError, match="missing"):
        read_manifest(tmp_path / "nope.gz")


def test_chain_hash_covers_every_field() -> None:
    base = dict(
        id="s2",
        parent="s1",
        author="a@x",
        message="m",
        created_at="2026-01-01T00:00:00Z",
        manifest_digest="d",
    )
    c = SnapshotRecord.compute_chain("p", **base)
    for k in base:
        assert SnapshotRecord.compute_chain("p", **{**base, k: base[k] + "x"}) != c
    assert SnapshotRecord.compute_chain("q", **base) != c


def test_memory_per_entry_is_well_under_500_bytes() -> None:
    import tracemalloc

    n = 50_000
    rows = [
        Entry(
            f"task{i % 50}/input/sub{i % 7}/file_{i:07d}.csv",
            i,
            1_700_000_000_000_000_000 + i,
            hash_bytes(str(i).encode()),
            snap=i % 300,
            user="researcher@hrdag.org",
        )
        for i in range(n)
    ]
    data = Manifest.from_entries(rows, "s1").to_bytes()
    del rows
    tracemalloc.start()
    m = Manifest.from_bytes(data)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_entry = current / len(m)
    assert per_entry < 400, f"{per_entry:.0f} bytes per entry"
    assert len(data) / n < 100, "compact on disk"
