"""dsg.fs.readahead: files in order, opened ahead, errors at their own turn, nothing leaked."""

from __future__ import annotations

import io
from contextlib import closing
from pathlib import Path

import pytest

from dsg.fs.readahead import read_ahead


def _files(tmp_path: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        p = tmp_path / f"f{i:02d}"
        p.write_bytes(f"{i}\n".encode())
        out.append(p)
    return out


def test_every_file_in_order_opened_at_most_depth_ahead(tmp_path: Path) -> None:
    paths = _files(tmp_path, 20)
    opened: list[Path] = []

    def open_fn(p: Path):
        opened.append(p)
        return open(p, "rb")

    got = []
    for i, (_p, f) in enumerate(read_ahead(paths, open_fn, depth=4)):
        with f:
            got.append(f.read())
        assert len(opened) <= min(i + 1 + 4, 20)  # never more than `depth` ahead
        assert len(opened) >= min(i + 1 + 3, 20)  # and kept that far ahead
    assert got == [f"{i}\n".encode() for i in range(20)]


def test_an_open_error_is_raised_at_its_own_turn(tmp_path: Path) -> None:
    paths = _files(tmp_path, 10)
    paths[6].unlink()
    seen = []
    with (
        pytest.raises(FileNotFoundError),
        closing(read_ahead(paths, lambda p: open(p, "rb"))) as it,
    ):
        for p, f in it:
            with f:
                seen.append(p.name)
    assert seen == [f"f{i:02d}" for i in range(6)]


def test_stopping_early_closes_what_was_opened_ahead(tmp_path: Path) -> None:
    handles: list[io.BufferedReader] = []

    def open_fn(p: Path):
        handles.append(open(p, "rb"))  # noqa: SIM115 - closed by read_ahead or the loop
        return handles[-1]

    with closing(read_ahead(_files(tmp_path, 30), open_fn, depth=8)) as it:
        for _, f in it:
            f.close()
            break
    assert len(handles) == 9 and all(h.closed for h in handles)
