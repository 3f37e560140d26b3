"""The wire protocol and host parsing, without a network."""

from __future__ import annotations

import io
import struct
from typing import get_args, get_type_hints

import pytest

from dsg.backends.ssh import parse_host
from dsg.core.errors import TransportError
from dsg.wire.protocol import (
    _BY_OP,
    MAX_JSON,
    REQUESTS,
    ProtocolError,
    StreamReader,
    parse_request,
    read_frame,
    recv_json,
    send_json,
    send_stream,
)


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("scott", (None, "scott", None)),
        ("ana@scott", ("ana", "scott", None)),
        ("ana@dsg.hrdag.org:2222", ("ana", "dsg.hrdag.org", 2222)),
        ("lab-alice", (None, "lab-alice", None)),
        ("ana@[::1]:22", ("ana", "::1", 22)),
    ],
)
def test_parse_host(spec: str, want: tuple) -> None:
    assert parse_host(spec) == want


@pytest.mark.parametrize(
    "spec", ["", "a b", "host;rm -rf /", "-oProxyCommand=x", "-oProxyCommand", "a@b:c", "$(id)"]
)
def test_parse_host_refuses_odd_specs(spec: str) -> None:
    with pytest.raises(TransportError):
        parse_host(spec)


def test_round_trip_messages_and_streams() -> None:
    buf = io.BytesIO()
    send_json(buf, {"op": "head"})
    send_stream(buf, io.BytesIO(b"x" * (3 << 20)))
    send_json(buf, {"ok": True})
    buf.seek(0)
    assert recv_json(buf) == {"op": "head"}
    with StreamReader(buf) as r:
        assert r.read(10) == b"x" * 10
    assert recv_json(buf) == {"ok": True}, "the rest of the stream was drained"


class Trickle(io.RawIOBase):
    """A raw stream that hands out at most `step` bytes per read, as a pipe may."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), self.step, len(self.data) - self.pos)
        b[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


@pytest.mark.parametrize("step", [1, 3, 4096])
def test_frames_arriving_in_pieces_are_put_back_together(step: int) -> None:
    buf = io.BytesIO()
    send_json(buf, {"op": "head"})
    payload = bytes(range(256)) * 40
    send_stream(buf, io.BytesIO(payload))
    wire = buf.getvalue()
    f = Trickle(wire, step)
    assert recv_json(f) == {"op": "head"}
    with StreamReader(f) as r:
        assert r.read() == payload
    # cut anywhere inside a frame: a clear end of connection, never a short frame
    for cut in (2, 7, len(wire) - 3):
        with pytest.raises(EOFError):
            g = Trickle(wire[:cut], step)
            recv_json(g)
            StreamReader(g).read()


def test_oversize_and_unknown_frames_are_refused() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        read_frame(io.BytesIO(struct.pack(">IB", MAX_JSON + 1, ord("J"))))
    with pytest.raises(ProtocolError, match="unknown frame"):
        read_frame(io.BytesIO(struct.pack(">IB", 1, ord("Z")) + b"x"))
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(struct.pack(">IB", 10, ord("J")) + b"abc"))


@pytest.mark.parametrize(
    "msg",
    [
        {"op": "rm", "path": "/"},
        {"op": "open_file", "snapshot": "s1; ls", "path": "a"},
        {"op": "open_file", "snapshot": "s0", "path": "a"},
        {"op": "put_file", "path": "a", "size": -1, "mtime_ns": 0, "hash": "0" * 32},
        {"op": "put_file", "path": "a", "size": 1, "mtime_ns": 0, "hash": "zz"},
        {"op": "begin", "parent": "s1", "tx": "../../x"},
        {"op": "hello", "version": 1, "project": "../etc"},
        {"op": "head", "extra": 1},
        {"op": "read_files", "snapshot": "s1", "paths": []},
        {"op": "open_file", "snapshot": "s1\n", "path": "a"},  # `$` would allow it
        {"op": "begin", "parent": None, "tx": "tx-abcdef\n"},
        {"op": "lock", "owner": {}, "timeout": True},
        {"op": "lock", "owner": {}, "timeout": 86401},
        {"op": "put_file", "path": "a", "size": "1", "mtime_ns": 0, "hash": "0" * 32},
        {"op": "put_file", "path": "", "size": 1, "mtime_ns": 0, "hash": "0" * 32},
        {"path": "a"},
        {"op": ["head"]},
    ],
)
def test_invalid_requests_are_refused(msg: dict) -> None:
    with pytest.raises(ProtocolError, match="invalid request"):
        parse_request(msg)


def test_a_refusal_names_the_field() -> None:
    with pytest.raises(ProtocolError, match=r"invalid request \(snapshot: .*regex"):
        parse_request({"op": "open_file", "snapshot": "s0", "path": "a"})
    with pytest.raises(ProtocolError, match=r"invalid request \(head: .*unknown field `extra`"):
        parse_request({"op": "head", "extra": 1})


def test_every_op_belongs_to_one_message_type() -> None:
    seen: dict[str, str] = {}
    for cls in REQUESTS:
        for op in get_args(get_type_hints(cls)["op"]):
            assert op not in seen, f"{op} is carried by {seen[op]} and {cls.__name__}"
            seen[op] = cls.__name__
    assert len(seen) == len(_BY_OP)


def test_valid_request_parses() -> None:
    req = parse_request({"op": "open_file", "snapshot": "s12", "path": "t/input/a.csv"})
    assert (req.op, req.snapshot, req.path) == ("open_file", "s12", "t/input/a.csv")
