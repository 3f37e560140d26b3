"""Manifests' gzip streams (dsg.core.compression): ISA-L where installed, zlib otherwise.
Both paths are run here; each must read what the other and the standard library write,
and refuse anything but exactly one bounded, intact gzip member."""

from __future__ import annotations

import gzip
import zlib

import pytest

from dsg.core import compression
from dsg.core.compression import COMPRESSED, FAST, compress, decompress
from dsg.core.errors import ManifestError

try:
    from isal import isal_zlib
except ImportError:
    isal_zlib = None

LINES = b"".join(
    b'["task/input/f%d.csv","f",%d,17,"%032x",3,"ana"]\n' % (i, i, i) for i in range(5000)
)


@pytest.fixture(params=["isal", "zlib"])
def impl(request, monkeypatch) -> str:
    if request.param == "isal":
        if isal_zlib is None:
            pytest.skip("the isal package (ISA-L) has no wheel installed on this platform")
        monkeypatch.setattr(compression, "_fast", isal_zlib)
    else:
        monkeypatch.setattr(compression, "_fast", None)
    return request.param


@pytest.mark.parametrize("level", [FAST, COMPRESSED])
def test_round_trip_and_every_reader_reads_it(impl: str, level: int) -> None:
    data = compress([LINES], level)
    assert data[:2] == b"\x1f\x8b"
    assert len(data) < len(LINES) // 2 or (impl == "zlib" and level == FAST)
    assert decompress(data, "m", 1 << 30) == LINES
    assert gzip.decompress(data) == LINES  # the standard library, as an older engine reads
    assert zlib.decompress(data, compression.GZIP) == LINES
    if isal_zlib is not None:
        assert isal_zlib.decompress(data, compression.GZIP) == LINES
    assert compress([LINES], level) == data  # no time or name in it: same lines, same file
    parts = [LINES[:7], b"", LINES[7:1000], LINES[1000:]]
    assert decompress(compress(parts, level), "m", 1 << 30) == LINES  # in parts, as written


def test_reads_what_the_standard_library_wrote(impl: str) -> None:
    for data in (gzip.compress(LINES, mtime=0), gzip.compress(LINES), gzip.compress(b"")):
        assert decompress(data, "m", 1 << 30) == gzip.decompress(data)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: d[:-5], "ends early"),
        (lambda d: d[: len(d) // 2], "ends early"),
        (lambda d: d + b"\0", "data after"),
        (lambda d: d + d, "data after"),  # a second member
        (lambda d: b"junk" + d, "corrupt"),
        (lambda d: b"", "ends early"),
        (lambda d: d[:-8] + (zlib.crc32(LINES) ^ 1).to_bytes(4, "little") + d[-4:], "corrupt"),
        (lambda d: d[:-4] + (len(LINES) + 1).to_bytes(4, "little"), "corrupt"),
    ],
)
def test_anything_but_one_intact_member_is_refused(impl: str, damage, needle: str) -> None:
    with pytest.raises(ManifestError, match=needle):
        decompress(damage(compress([LINES], COMPRESSED)), "the manifest", 1 << 30)


def test_a_stream_larger_than_the_limit_is_refused(impl: str) -> None:
    bomb = compress([bytes(64 << 20)], COMPRESSED)  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 1 << 20
    with pytest.raises(ManifestError, match="larger than 1 MiB"):
        decompress(bomb, "the manifest", 1 << 20)
    assert decompress(compress([bytes(1 << 20)], COMPRESSED), "m", 1 << 20) == bytes(1 << 20)
