"""What a posix commit flushes: each of a few files (never other writers' dirty data), or
one syncfs of the filesystem for many."""

from __future__ import annotations

import pytest

from dsg import manifest
from dsg.manifest import FSYNC_EACH_MAX, flush_written


def test_a_few_files_are_each_flushed(tmp_path, monkeypatch) -> None:
    files = []
    for i in range(3):
        f = tmp_path / f"o{i}"
        f.write_bytes(b"x")
        files.append(str(f))
    synced: list[str] = []
    monkeypatch.setattr(manifest, "sync_filesystem", lambda p: synced.append(str(p)))
    flush_written(files, [str(tmp_path)], tmp_path)
    assert synced == []
    with pytest.raises(FileNotFoundError):  # each file is opened and flushed itself
        flush_written([*files, str(tmp_path / "gone")], [], tmp_path)


def test_many_files_get_one_flush_of_the_filesystem(tmp_path, monkeypatch) -> None:
    synced: list[str] = []
    monkeypatch.setattr(manifest, "sync_filesystem", lambda p: synced.append(str(p)))
    many = [str(tmp_path / f"never-opened-{i}") for i in range(FSYNC_EACH_MAX + 1)]
    flush_written(many, [str(tmp_path)], tmp_path)
    assert synced == [str(tmp_path)]
