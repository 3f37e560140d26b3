"""Reading and writing file content: xxh3-128 hashing, copies that hash, bounded reads, and
descriptor writes of whole small files."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

import xxhash

CHUNK = 1 << 20
FIRST_READ = 256 << 10  # hash_file reads a file of up to this many bytes at once


def hash_file(path: str | os.PathLike[str]) -> bytes:
    """xxh3-128 digest of a file's content.

    Most files of a data tree are small: one read of up to FIRST_READ bytes and one more
    that finds the end hash them, with no buffer or file object to set up. A short read is
    not taken for the end: only an empty one is (some filesystems, and pipes, return less).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        first = os.read(fd, FIRST_READ)
        more = os.read(fd, FIRST_READ) if first else b""
        if not more:
            return xxhash.xxh3_128_digest(first)
        h = xxhash.xxh3_128(first)
        h.update(more)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := os.readv(fd, (buf,)):
            h.update(view[:n])
        return h.digest()
    finally:
        os.close(fd)


def copy_hashing(
    src: BinaryIO, out: BinaryIO, progress: Callable[[int], None] | None = None
) -> tuple[int, bytes]:
    """Copy `src` to `out`; returns (bytes copied, xxh3-128 digest of them)."""
    h = xxhash.xxh3_128()
    n = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        h.update(chunk)
        out.write(chunk)
        n += len(chunk)
        if progress:
            progress(len(chunk))
    return n, h.digest()


def read_upto(src: BinaryIO, limit: int) -> bytes:
    """All of `src` if it holds at most `limit` bytes; else its first limit+1 bytes (so the
    caller sees it is too long without reading an oversize stream into memory)."""
    data = src.read(limit + 1)
    while len(data) <= limit and (more := src.read(limit + 1 - len(data))):
        data += more
    return data


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the descriptor `fd` (os.write may write less at once)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_new(
    path: str, data: bytes, mtime_ns: int, flags: int, mode: int, final_mode: int | None = None
) -> None:
    """Write `data` to `path` opened with `flags` (creating it with `mode`), set its mtime,
    and `final_mode` if given (fchmod: whatever the umask). Descriptor calls only, no file
    object: this runs once per small file stored or downloaded."""
    fd = os.open(path, flags, mode)
    try:
        write_all(fd, data)
        if final_mode is not None:
            os.fchmod(fd, final_mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(fd)


def hash_bytes(data: bytes) -> bytes:
    return xxhash.xxh3_128_digest(data)
