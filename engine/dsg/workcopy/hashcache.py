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
from itertools import compress
from itertools import count as count_from
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


def _layout(blob: bytes) -> tuple[int, int]:
    """The entry count and the offset of the records in `blob`; ValueError unless it is a
    whole, well-formed table."""
    if not blob.startswith(MAGIC):
        raise ValueError("not a dsg hash cache")
    count, plen = _HEADER.unpack_from(blob, len(MAGIC))
    at = len(MAGIC) + _HEADER.size + plen
    if len(blob) != at + count * _RECORD.size:
        raise ValueError("truncated or padded hash cache")
    return count, at


def _identity(path: Path) -> tuple[int, ...] | None:
    """The file at `path` as written (atomic_write: a new inode each time)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def decode(blob: bytes) -> dict[str, Row]:
    """The table in `blob`; ValueError for anything that is not a whole, well-formed one."""
    count, records_at = _layout(blob)
    if count == 0:
        return {}
    at = len(MAGIC) + _HEADER.size
    paths = blob[at:records_at].decode("utf-8", "surrogateescape").split("\0")
    if len(paths) != count:
        raise ValueError("hash cache path table does not match its records")
    records = _RECORD.iter_unpack(memoryview(blob)[records_at:])
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
        # While the paths are the file's, in its order (values changed, none added or
        # removed): the file's identity as read, and the paths changed. A save then rewrites
        # only their records in the file's bytes, not every record.
        self._same_paths: tuple[int, ...] | None = None
        self._changed: set[str] = set()

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
            before = _identity(self.path)
            blob = read_state_file(self.path, MAX_BYTES)
            if blob is None:
                raise ValueError("not a regular file of at most MAX_BYTES")
            data = decode(blob)
            if before is not None and _identity(self.path) == before:  # not replaced meanwhile
                self._same_paths = before
            return data
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
        data = self.data
        if path in data:
            self._changed.add(path)
        else:
            self._same_paths = None
        data[path] = (*key, digest)
        self.dirty = True

    def retain(self, paths: set[str]) -> None:
        gone = self.data.keys() - paths
        for p in gone:
            del self.data[p]
        if gone:
            self._same_paths = None
            self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty or self._data is None:
            return
        blob = self._updated() if self._same_paths is not None else None
        if blob is None:
            blob = encode(self._data)
        atomic_write(self.path, blob)
        with contextlib.suppress(FileNotFoundError):
            self.path.with_name(self.OLD_FILE).unlink()
        self.dirty = False
        self._changed = set()
        self._same_paths = _identity(self.path)  # this process's own file, just written

    @without_gc
    def _updated(self) -> bytearray | None:
        """The file as read, its changed records rewritten; None unless it is still the
        file read (or last written) here, holding these paths in this order."""
        known, path = self._same_paths, self.path
        if path is None or self._data is None or known is None or _identity(path) != known:
            return None
        out = read_state_file(path, MAX_BYTES, mutable=True)  # not held twice
        try:
            count, records_at = _layout(out) if out is not None else (0, 0)
        except (ValueError, struct.error):
            return None
        if out is None or count != len(self._data) or _identity(path) != known:
            return None
        data = self._data
        changed = list(map(self._changed.__contains__, data))  # in the file's order
        pack_into, size = _RECORD.pack_into, _RECORD.size
        for i, p in zip(compress(count_from(), changed), compress(data, changed), strict=True):
            pack_into(out, records_at + i * size, *data[p])
        return out
