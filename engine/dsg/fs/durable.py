"""Durable writes on the local disk: atomic replacement, fsync, syncfs, early writeback, and
manifests read from and written to files."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import stat
from collections.abc import Collection
from itertools import chain
from pathlib import Path
from typing import Any, Literal, overload

from dsg.core.compression import COMPRESSED
from dsg.core.errors import ManifestError
from dsg.core.manifest import Manifest
from dsg.fs.files import write_all


def write_manifest(path: Path, manifest: Manifest, level: int = COMPRESSED) -> None:
    atomic_write(path, manifest.to_bytes(level))


def read_manifest(path: Path) -> Manifest:
    """A manifest from a file, checked; a missing or unreadable file is an error, never empty."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ManifestError(f"manifest {path} is missing") from e
    except OSError as e:
        raise ManifestError(f"cannot read manifest {path}: {e.strerror}") from e
    return Manifest.from_bytes(data, origin=f"manifest {path}")


# A temp file is created, never reused: O_EXCL refuses a name that exists (a planted link or
# hard link), O_NOFOLLOW a link at the last name, and the random part makes the name
# unguessable, so nothing written in a working copy goes through a link someone else placed.
CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name(path: str) -> str:
    """An unpredictable sibling of `path` for a file to be renamed over it:
    `dir/.name.<16 hex>.tmp` (the scan skips hidden names, `dsg clean` removes leftovers)."""
    head, sep, name = path.rpartition("/")
    return f"{head}{sep}.{name}.{secrets.token_hex(8)}.tmp"


@overload
def read_state_file(
    path: Path, limit: int, *, private: bool = ..., mutable: Literal[False] = ...
) -> bytes | None: ...
@overload
def read_state_file(
    path: Path, limit: int, *, private: bool = ..., mutable: Literal[True]
) -> bytearray | None: ...
def read_state_file(
    path: Path, limit: int, *, private: bool = False, mutable: bool = False
) -> bytes | bytearray | None:
    """A state file's bytes, or None when it is missing, not a regular file (a link, a FIFO
    planted through git), or larger than `limit`: never followed, never blocking. With
    `private`, also None unless this user owns it and nobody else may read or write it.
    With `mutable`, read into a bytearray the caller may change in place (one copy held)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        if private and (st.st_uid != os.geteuid() or st.st_mode & 0o077):
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            if mutable:
                buf = bytearray(st.st_size)
                return buf if f.readinto(buf) == st.st_size and not f.read(1) else None
            data = f.read(limit + 1)
        return data if len(data) <= limit else None
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write via a new temp file in the same directory (created with O_EXCL|O_NOFOLLOW under
    an unpredictable name), fsync, then rename(2) over `path`."""
    tmp = temp_name(str(path))
    fd = os.open(tmp, CREATE_NEW, 0o600)
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@functools.cache
def _libc_syncfs() -> Any:
    """libc's syncfs, looked up on first use (the agent starts for every session and most
    sessions never commit; ctypes.util.find_library would also run a subprocess)."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).syncfs  # the process's own libc
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


@functools.cache
def _libc_sync_file_range() -> Any:
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing `fd`'s dirty pages to the disk now, without waiting
    for them (sync_file_range(2), SYNC_FILE_RANGE_WRITE): the commit's flush then finds a
    large upload written or on its way, instead of writing all of it at the end. It makes
    nothing durable (the flush does); a failure here is ignored and seen by the flush."""
    fn = _libc_sync_file_range()
    if fn is not None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the filesystem holding `path` (syncfs(2)): one flush for a
    whole transaction instead of an fsync per file, without sync(2)'s flush of every
    filesystem on the machine. A writeback error is raised (Linux reports it since 5.8)."""
    syncfs = _libc_syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


FSYNC_EACH_MAX = 128  # above this many files, one syncfs(2) is cheaper than an fsync each


def flush_written(files: Collection[str], dirs: Collection[str], fs_path: Path) -> None:
    """Make durable what a transaction wrote. A few files and directories get an fsync each:
    a small commit then neither waits for nor flushes other writers' dirty data on a shared
    filesystem. Many get one syncfs(2) of `fs_path`'s filesystem, far cheaper than thousands
    of fsyncs. A writeback error is raised either way."""
    if len(files) > FSYNC_EACH_MAX:
        sync_filesystem(fs_path)
        return
    for name in chain(files, dirs):  # O_RDONLY opens a directory too
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
