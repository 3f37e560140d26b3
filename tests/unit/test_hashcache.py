"""The hash cache's file (hashcache.bin): what is saved is read back exactly; anything
damaged is dropped (a cache is only an optimisation) and rebuilt; the older gzipped JSON
form is read once and replaced."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import orjson
import pytest

import dsg.workcopy.hashcache as hc
from dsg.workcopy.hashcache import MAGIC, HashCache, decode, encode

ROWS = {
    "t/input/a.csv": (3, 1_700_000_000_123_456_789, 1_700_000_000_123_456_790, 42, b"\x01" * 16),
    "t/input/caf\u00e9.csv": (0, 1, 2, 3, b"\x02" * 16),
    "t/input/b\udcff.csv": (2**40, -5, 7, 2**63, b"\x03" * 16),  # not UTF-8 on disk
}


def test_round_trip(tmp_path: Path) -> None:
    assert decode(encode(ROWS)) == ROWS
    assert decode(encode({})) == {}
    c = HashCache(tmp_path / HashCache.FILE)
    for p, v in ROWS.items():
        c.store(p, v[:4], v[4])
    c.save()
    again = HashCache(tmp_path / HashCache.FILE)
    assert again.data == ROWS and not again.dirty
    assert again.lookup("t/input/a.csv", ROWS["t/input/a.csv"][:4]) == b"\x01" * 16
    assert again.lookup("t/input/a.csv", (3, 0, 0, 42)) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b + b"x",  # padded
        lambda b: b"dsg-hashcache/9\n" + b[len(MAGIC) :],  # another format
        lambda b: MAGIC + struct.pack("<QQ", 10**12, 5) + b[len(MAGIC) + 16 :],  # huge count
        lambda b: MAGIC + struct.pack("<QQ", 2, 0) + b"",  # paths missing
        lambda b: b"",
    ],
)
def test_a_damaged_cache_is_dropped_and_rebuilt(tmp_path: Path, damage) -> None:
    path = tmp_path / HashCache.FILE
    path.write_bytes(damage(encode(ROWS)))
    c = HashCache(path)
    assert c.data == {} and c.dirty
    c.store("t/input/a.csv", (1, 2, 3, 4), b"\x09" * 16)
    c.save()
    assert HashCache(path).data == {"t/input/a.csv": (1, 2, 3, 4, b"\x09" * 16)}


def test_the_gzipped_json_form_is_read_once_and_replaced(tmp_path: Path) -> None:
    old = tmp_path / HashCache.OLD_FILE
    rows = [["t/input/a.csv", 3, 10, 11, 12, "ab" * 16]]
    old.write_bytes(gzip.compress(orjson.dumps(rows)))
    c = HashCache(tmp_path / HashCache.FILE)
    assert c.data == {"t/input/a.csv": (3, 10, 11, 12, bytes.fromhex("ab" * 16))}
    assert c.dirty
    c.save()
    assert not old.exists() and (tmp_path / HashCache.FILE).is_file()
    assert HashCache(tmp_path / HashCache.FILE).data == c.data


def saved_cache(tmp_path: Path, n: int = 50) -> tuple[Path, dict]:
    rows = {f"t/input/f{i:03d}.csv": (i, i + 1, i + 2, i + 3, bytes([i]) * 16) for i in range(n)}
    path = tmp_path / HashCache.FILE
    path.write_bytes(encode(rows))
    return path, rows


def no_whole_encode(monkeypatch) -> None:
    def refuse(_data):
        raise AssertionError("the whole table was encoded")

    monkeypatch.setattr(hc, "encode", refuse)


def test_new_values_for_the_same_paths_rewrite_only_their_records(tmp_path, monkeypatch):
    path, rows = saved_cache(tmp_path)
    c = HashCache(path)
    assert c.data == rows
    no_whole_encode(monkeypatch)
    for round_ in (1, 2):  # a second save starts from the file the first one wrote
        for p in list(rows)[round_::7]:
            rows[p] = (rows[p][0] + 100, 5, 6, 7, b"\xee" * 16)
            c.store(p, rows[p][:4], rows[p][4])
        c.save()
        assert HashCache(path).data == rows and list(HashCache(path).data) == list(rows)


@pytest.mark.parametrize("change", ["added", "removed", "swapped", "replaced"])
def test_anything_else_writes_the_whole_table(tmp_path, monkeypatch, change: str) -> None:
    path, rows = saved_cache(tmp_path)
    c = HashCache(path)
    first = next(iter(rows))
    rows[first] = (9, 9, 9, 9, b"\x09" * 16)
    c.store(first, rows[first][:4], rows[first][4])
    if change == "added":
        rows["t/input/new.csv"] = (1, 1, 1, 1, b"\x01" * 16)
        c.store("t/input/new.csv", (1, 1, 1, 1), b"\x01" * 16)
    elif change == "removed":
        del rows["t/input/f049.csv"]
        c.retain(set(rows))
    elif change == "swapped":  # as many paths as the file holds, not the same ones
        del rows["t/input/f010.csv"]
        c.retain(set(rows))
        rows["t/input/new.csv"] = (1, 1, 1, 1, b"\x01" * 16)
        c.store("t/input/new.csv", (1, 1, 1, 1), b"\x01" * 16)
    else:  # someone else's table in its place since it was read: not patched blindly
        other = {f"x/input/{i}": (i, i, i, i, b"\x07" * 16) for i in range(50)}
        path.unlink()
        path.write_bytes(encode(other))
    encoded: list[int] = []
    real = hc.encode
    monkeypatch.setattr(hc, "encode", lambda data: encoded.append(len(data)) or real(data))
    c.save()
    assert encoded == [len(rows)]
    assert HashCache(path).data == rows
