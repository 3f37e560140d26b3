"""The working copy's hash cache: a file's hash kept while its (size, mtime_ns, ctime_ns,
inode) stay the same, so a scan reads only what changed.

Stored in `.dsg/hashcache.bin`: a header, the paths joined by NUL, then one fixed-width
record a path, so reading it builds the table in a few C-level passes rather than a Python
step per field. The older `hashcache.gz` (gzipped JSON rows) is read when no `.bin` exists
and removed at the next save.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import stat
import struct
from pathlib import Path

import orjson

from dsg.core.bulk import without_gc
from dsg.fs.durable import atomic_write, read_state_file

StatKey = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
Row = tuple[int, int, int, int, bytes]

MAGIC = b"dsg-hashcache/2\n"
_HEADER = struct.Struct("<QQ")  # entries, bytes of the path table
_RECORD = struct.Struct("<qqqQ16s")  # size, mtime_ns, ctime_ns, inode, xxh3-128
MAX_BYTES = 1 << 32  # 4 GiB: tens of millions of files


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def encode(data: dict[str, Row]) -> bytes:
    paths = b"\0".join(p.encode("utf-8", "surrogateescape") for p in data)
    pack = _RECORD.pack
    records = b"".join([pack(*v) for v in data.values()])
    return b"".join((MAGIC, _HEADER.pack(len(data), len(paths)), paths, records))


def decode(blob: bytes) -> dict[str, Row]:
    """The table in `blob`; ValueError for anything that is not a whole, well-formed one."""
    if not blob.startswith(MAGIC):
        raise ValueError("not a dsg hash cache")
    at = len(MAGIC)
    count, plen = _HEADER.unpack_from(blob, at)
    at += _HEADER.size
    if len(blob) != at + plen + count * _RECORD.size:
        raise ValueError("truncated or padded hash cache")
    if count == 0:
        return {}
    paths = blob[at : at + plen].decode("utf-8", "surrogateescape").split("\0")
    if len(paths) != count:
        raise ValueError("hash cache path table does not match its records")
    records = _RECORD.iter_unpack(memoryview(blob)[at + plen :])
    return dict(zip(paths, records, strict=True))


class HashCache:
    """path -> (size, mtime_ns, ctime_ns, inode, hash), read on first use (a sync that
    finds its scan done and downloads nothing never reads it)."""

    FILE = "hashcache.bin"
    OLD_FILE = "hashcache.gz"

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._data: dict[str, Row] | None = None
        self.dirty = False

    @classmethod
    def load(cls, path: Path) -> HashCache:
        return cls(path)

    @staticmethod
    def count(state_dir: Path) -> int:
        """The number of entries its header gives, without reading the rest (0 for no
        readable cache): a hint of the tree's size, nothing more."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:  # like read_state_file: no link followed, no FIFO waited on
            fd = os.open(state_dir / HashCache.FILE, flags)
        except OSError:
            return 0
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return 0
            head = os.pread(fd, len(MAGIC) + _HEADER.size, 0)
        except OSError:
            return 0
        finally:
            os.close(fd)
        if len(head) != len(MAGIC) + _HEADER.size or not head.startswith(MAGIC):
            return 0
        return int(_HEADER.unpack_from(head, len(MAGIC))[0])

    @property
    def data(self) -> dict[str, Row]:
        if self._data is None:
            self._data = self._read()
        return self._data

    @without_gc
    def _read(self) -> dict[str, Row]:
        if self.path is None:
            return {}
        if not os.path.lexists(self.path):
            return self._read_old()
        try:
            blob = read_state_file(self.path, MAX_BYTES)
            if blob is None:
                raise ValueError("not a regular file of at most MAX_BYTES")
            return decode(blob)
        except (ValueError, struct.error, UnicodeDecodeError):
            # A cache is only an optimisation: a damaged one is dropped and rebuilt.
            self.dirty = True
            return {}

    def _read_old(self) -> dict[str, Row]:
        if self.path is None:
            return {}
        old = self.path.with_name(self.OLD_FILE)
        blob = read_state_file(old, MAX_BYTES)
        if blob is None:
            return {}
        try:
            rows = orjson.loads(gzip.decompress(blob))
            data = {r[0]: (r[1], r[2], r[3], r[4], bytes.fromhex(r[5])) for r in rows}
        except (OSError, ValueError, EOFError, IndexError, TypeError, orjson.JSONDecodeError):
            data = {}
        self.dirty = True  # saved in the new form (and the old file removed) next time
        return data

    def lookup(self, path: str, key: StatKey) -> bytes | None:
        hit = self.data.get(path)
        if hit is not None and hit[:4] == key:
            return hit[4]
        return None

    def store(self, path: str, key: StatKey, digest: bytes) -> None:
        self.data[path] = (*key, digest)
        self.dirty = True

    def retain(self, paths: set[str]) -> None:
        gone = self.data.keys() - paths
        for p in gone:
            del self.data[p]
        if gone:
            self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty or self._data is None:
            return
        atomic_write(self.path, encode(self._data))
        with contextlib.suppress(FileNotFoundError):
            self.path.with_name(self.OLD_FILE).unlink()
        self.dirty = False
