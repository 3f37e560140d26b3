"""The working copy's hash cache: a file's hash kept while its (size, mtime_ns, ctime_ns,
inode) stay the same, so a scan reads only what changed."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import orjson

from dsg.core.bulk import without_gc
from dsg.fs.durable import atomic_write

StatKey = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class HashCache:
    """path -> (size, mtime_ns, ctime_ns, inode, hash), stored in `.dsg/hashcache.gz` and
    read on first use (a sync that finds its scan done and downloads nothing never reads it)."""

    FILE = "hashcache.gz"

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._data: dict[str, tuple[int, int, int, int, bytes]] | None = None
        self.dirty = False

    @classmethod
    def load(cls, path: Path) -> HashCache:
        return cls(path)

    @property
    def data(self) -> dict[str, tuple[int, int, int, int, bytes]]:
        if self._data is None:
            self._data = self._read()
        return self._data

    @without_gc
    def _read(self) -> dict[str, tuple[int, int, int, int, bytes]]:
        if self.path is None:
            return {}
        try:
            rows = orjson.loads(gzip.decompress(self.path.read_bytes()))
            return {r[0]: (r[1], r[2], r[3], r[4], bytes.fromhex(r[5])) for r in rows}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, EOFError, IndexError, TypeError, orjson.JSONDecodeError):
            # A cache is only an optimisation: a damaged one is dropped and rebuilt.
            self.dirty = True
            return {}

    def lookup(self, path: str, key: StatKey) -> bytes | None:
        hit = self.data.get(path)
        if hit is not None and hit[:4] == key:
            return hit[4]
        return None

    def store(self, path: str, key: StatKey, digest: bytes) -> None:
        self.data[path] = (*key, digest)
        self.dirty = True

    def retain(self, paths: set[str]) -> None:
        gone = [p for p in self.data if p not in paths]
        for p in gone:
            del self.data[p]
        if gone:
            self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty or self._data is None:
            return
        rows = [[p, *v[:4], v[4].hex()] for p, v in self.data.items()]
        atomic_write(self.path, gzip.compress(orjson.dumps(rows), compresslevel=1))
        self.dirty = False
