"""protocol.input_waiting: whether the next read finds data without waiting."""

from __future__ import annotations

import io
import os

from dsg.wire.protocol import input_waiting


def test_a_pipe_with_and_without_data() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as rf, os.fdopen(w, "wb", buffering=0) as wf:
        assert not input_waiting(rf)  # empty: the caller must flush before it reads
        wf.write(b"x")
        assert input_waiting(rf)
        assert rf.read(1) == b"x"
        assert not input_waiting(rf)


def test_a_closed_writer_counts_as_data_and_unsure_streams_as_none() -> None:
    r, w = os.pipe()
    os.close(w)
    with os.fdopen(r, "rb", buffering=0) as rf:
        assert input_waiting(rf)  # EOF is readable at once: the read will not wait
    assert not input_waiting(io.BytesIO(b"data"))  # no descriptor: unsure, so flush
    r2, w2 = os.pipe()
    os.close(w2)
    closed = os.fdopen(r2, "rb")
    closed.close()
    assert not input_waiting(closed)
