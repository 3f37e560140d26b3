"""The hash cache's file (hashcache.bin): what is saved is read back exactly; anything
damaged is dropped (a cache is only an optimisation) and rebuilt; the older gzipped JSON
form is read once and replaced."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import orjson
import pytest

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
