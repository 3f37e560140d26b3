"""hash_file hashes a small file from one read and a larger one in chunks; both must give
the xxh3-128 of the whole content, at every size around the boundaries, and a short read
(a pipe, some network filesystems) must not be taken for the end of the file."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import xxhash

from dsg.fs.files import CHUNK, FIRST_READ, hash_file

SIZES = [
    0,
    1,
    FIRST_READ - 1,
    FIRST_READ,
    FIRST_READ + 1,
    2 * FIRST_READ,
    2 * FIRST_READ + 1,
    FIRST_READ + CHUNK,
    FIRST_READ + CHUNK + 1,
    3 * CHUNK + 7,
]


@pytest.mark.parametrize("size", SIZES)
def test_digest_is_xxh3_128_of_the_content(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    p = tmp_path / "f"
    p.write_bytes(data)
    assert hash_file(p) == xxhash.xxh3_128_digest(data)
    # A change in the last byte is seen, wherever the file's end falls.
    if size:
        p.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        assert hash_file(p) != xxhash.xxh3_128_digest(data)


def test_short_reads_are_not_the_end(tmp_path: Path) -> None:
    """Through a FIFO the content arrives in pieces, each read returning less than asked:
    the digest must still cover all of it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    pieces = [os.urandom(1000), os.urandom(FIRST_READ + 5), os.urandom(70_000), b"end"]

    def feed() -> None:
        with open(fifo, "wb", buffering=0) as w:
            for piece in pieces:
                w.write(piece)
                time.sleep(0.05)  # the reader sees this piece alone

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        got = hash_file(fifo)
    finally:
        writer.join()
    assert got == xxhash.xxh3_128_digest(b"".join(pieces))


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "absent")
