"""What a posix commit flushes: each of a few files (never other writers' dirty data), or
one syncfs of the filesystem for many."""

from __future__ import annotations

import os
import sys

import pytest

from dsg.fs import durable
from dsg.fs.durable import FSYNC_EACH_MAX, flush_written


def test_a_few_files_are_each_flushed(tmp_path, monkeypatch) -> None:
    files = []
    for i in range(3):
        f = tmp_path / f"o{i}"
        f.write_bytes(b"x")
        files.append(str(f))
    synced: list[str] = []
    monkeypatch.setattr(durable, "sync_filesystem", lambda p: synced.append(str(p)))
    flush_written(files, [str(tmp_path)], tmp_path)
    assert synced == []
    with pytest.raises(FileNotFoundError):  # each file is opened and flushed itself
        flush_written([*files, str(tmp_path / "gone")], [], tmp_path)


def test_many_files_get_one_flush_of_the_filesystem(tmp_path, monkeypatch) -> None:
    synced: list[str] = []
    monkeypatch.setattr(durable, "sync_filesystem", lambda p: synced.append(str(p)))
    many = [str(tmp_path / f"never-opened-{i}") for i in range(FSYNC_EACH_MAX + 1)]
    flush_written(many, [str(tmp_path)], tmp_path)
    assert synced == [str(tmp_path)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_writeback_is_started_on_linux_and_errors_are_left_to_the_flush(tmp_path) -> None:
    """start_writeback finds sync_file_range in libc (else the optimisation is silently
    off), leaves the file's content as it is, and ignores a descriptor it cannot use (a
    pipe): the commit's flush is what reports writeback errors."""
    assert durable._libc_sync_file_range() is not None
    data = os.urandom(3 << 20)
    p = tmp_path / "big"
    with open(p, "wb") as f:
        f.write(data)
        f.flush()
        durable.start_writeback(f.fileno())
    assert p.read_bytes() == data
    r, w = os.pipe()
    try:
        durable.start_writeback(r)  # ESPIPE, ignored
    finally:
        os.close(r)
        os.close(w)
