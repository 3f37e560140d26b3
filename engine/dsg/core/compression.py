"""The gzip streams manifests are stored in: ISA-L's implementation where its wheel is
installed (the `isal` package: about three times as fast to write, twice as fast to read),
the standard library's zlib otherwise. Both write standard gzip, so each reads what the other
wrote and an engine without ISA-L (an older release, a platform with no wheel) reads every
manifest."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

from dsg.core.errors import ManifestError

try:
    from isal import isal_zlib

    _fast: Any = isal_zlib
except ImportError:  # no wheel for this platform
    _fast = None

GZIP = zlib.MAX_WBITS | 16  # wbits for a gzip header and trailer
# The levels dsg writes: FAST for a working copy's own base (written and read on every
# sync: zlib stores it, ISA-L's fastest level is faster still and 3x smaller), COMPRESSED
# for a repository's manifests.
FAST, COMPRESSED = 0, 1


def _impl() -> Any:
    return _fast if _fast is not None else zlib


def compress(parts: Iterable[bytes], level: int) -> bytes:
    """One gzip member of the bytes `parts` holds in turn (no name, time 0: the same bytes
    give the same file), compressed as they come: a manifest's header and its lines need
    not be joined first (a copy of every line: 120 MB at a million files)."""
    impl = _impl()
    c = impl.compressobj(level, zlib.DEFLATED, GZIP)
    out = [c.compress(p) for p in parts]
    out.append(c.flush())
    return b"".join(out)


def decompress(data: bytes, origin: str, limit: int) -> bytes:
    """The content of `data`, which must be exactly one gzip member (what every dsg writes;
    CRC and length checked) of at most `limit` bytes; ManifestError otherwise."""
    impl = _impl()
    d = impl.decompressobj(GZIP)
    try:
        raw = d.decompress(data, limit)
    except impl.error as e:
        raise ManifestError(f"{origin} is corrupt (not a readable gzip stream: {e})") from e
    if d.unconsumed_tail:
        raise ManifestError(f"{origin} is larger than {limit >> 20} MiB uncompressed")
    if not d.eof:
        raise ManifestError(f"{origin} is corrupt (the gzip stream ends early)")
    if d.unused_data:
        raise ManifestError(f"{origin} is corrupt (data after the gzip stream)")
    return raw
