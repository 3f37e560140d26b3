"""scan.read_upto and write_all: whole small streams in, whole buffers out."""

from __future__ import annotations

import io

from dsg.fs.files import read_upto


class Trickle(io.RawIOBase):
    """Hands out at most 3 bytes per read, like a pipe under load."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        self.reads += 1
        n = 3 if n < 0 else min(n, 3)
        out, self.data = self.data[:n], self.data[n:]
        return out


def test_whole_stream_when_within_limit() -> None:
    assert read_upto(Trickle(b"0123456789"), 10) == b"0123456789"
    assert read_upto(Trickle(b"0123456789"), 64) == b"0123456789"
    assert read_upto(Trickle(b""), 5) == b""


def test_oversize_stream_cut_at_limit_plus_one() -> None:
    src = Trickle(b"x" * 1000)
    out = read_upto(src, 10)
    assert out == b"x" * 11  # the caller sees "too long" ...
    assert len(src.data) == 1000 - 11  # ... and the rest was never read


def test_write_all_goes_on_after_short_writes(tmp_path, monkeypatch) -> None:
    """os.write may take less than asked (a signal, a nearly full disk): write_all goes on
    until every byte is in."""
    import os

    import dsg.workcopy.scan
    from dsg.fs.files import write_all

    real_write = os.write
    calls = []

    def short_write(fd: int, data) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:1000]))

    monkeypatch.setattr(dsg.workcopy.scan.os, "write", short_write)
    data = os.urandom(10_500)
    p = tmp_path / "f"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    assert p.read_bytes() == data
    assert len(calls) == 11
