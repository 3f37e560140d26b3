"""The wire protocol between `dsg` and its agent (`dsg serve`) over an SSH channel.

Frames: a 4-byte big-endian length, a 1-byte type, then the payload.

    J  a JSON message (request or response), at most MAX_JSON bytes
    D  a chunk of file data, at most MAX_DATA bytes
    E  end of a data stream (empty payload)

A session starts with `hello` (protocol version, project, where the client expects the
repository); the agent answers with its version and the caller's role, or refuses. Every
request is one J frame; every response is one J frame `{"ok": true, ...}` or
`{"ok": false, "error": {"kind", "message", "hint"}}`. File contents travel as D frames
closed by E: after a `put_file` request (client to agent) and after a successful
`open_file` or `manifest` response (agent to client). Requests are validated by typed
messages (msgspec) before anything acts on them.
"""

from __future__ import annotations

import select
from typing import Annotated, Any, BinaryIO, Literal, get_args, get_type_hints

import msgspec
import orjson

from dsg.core.errors import DsgError, TransportError
from dsg.wire.sshstart import FRAME_HEAD
from dsg.wire.sshstart import PROTOCOL_VERSION as PROTOCOL_VERSION  # defined there, light to import

MAX_JSON = 1 << 20
MAX_DATA = 4 << 20
CHUNK = 1 << 20
PIPE_BUFFER = 1 << 18  # both ends buffer their pipes this much: small frames travel together


class ProtocolError(TransportError):
    kind = "protocol"


# --- framing --------------------------------------------------------------------------------


def _read_exact(f: BinaryIO, n: int) -> bytes:
    first = f.read(n)
    if len(first) == n:  # nearly always (a buffered reader waits for all of it): no copy
        return first
    buf = bytearray(first)
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return bytes(buf)


def read_frame(f: BinaryIO) -> tuple[str, bytes]:
    head = f.read(FRAME_HEAD.size)
    if not head:
        raise EOFError("connection closed")
    if len(head) < FRAME_HEAD.size:
        head += _read_exact(f, FRAME_HEAD.size - len(head))
    length, kind = FRAME_HEAD.unpack(head)
    t = chr(kind)
    limit = MAX_JSON if t == "J" else MAX_DATA
    if t not in "JDE":
        raise ProtocolError(f"unknown frame type {kind!r}")
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
    return t, _read_exact(f, length) if length else b""


def write_frame(f: BinaryIO, kind: str, payload: bytes = b"") -> None:
    f.write(FRAME_HEAD.pack(len(payload), ord(kind)))
    if payload:
        f.write(payload)


def send_json(f: BinaryIO, msg: dict[str, Any], *, flush: bool = True) -> None:
    """One message. `flush=False` leaves it in `f`'s buffer, to go with the next ones in
    one write: whoever then waits for an answer must flush first."""
    data = orjson.dumps(msg)
    if len(data) > MAX_JSON:
        raise ProtocolError(f"message of {len(data)} bytes is too large")
    write_frame(f, "J", data)
    if flush:
        f.flush()


def recv_json(f: BinaryIO) -> dict[str, Any]:
    kind, payload = read_frame(f)
    if kind != "J":
        raise ProtocolError(f"expected a message, got a {kind} frame")
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise ProtocolError("message is not JSON") from e
    if not isinstance(msg, dict):
        raise ProtocolError("message is not a JSON object")
    return msg


def input_waiting(f: BinaryIO) -> bool:
    """True when the next read of `f` will find data without waiting (more frames are in
    the pipe now). False when unsure: a stream without a file descriptor, or data held
    only in `f`'s own buffer; the caller then flushes, which is always safe."""
    try:
        fd = f.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def send_stream(f: BinaryIO, src: BinaryIO, progress: Any = None, *, flush: bool = True) -> int:
    n = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        write_frame(f, "D", chunk)
        n += len(chunk)
        if progress:
            progress(len(chunk))
    write_frame(f, "E")
    if flush:
        f.flush()
    return n


class StreamReader:
    """A file-like reader over D frames, ending at the E frame."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.buf = b""
        self.done = False

    def read(self, n: int = -1) -> bytes:
        while not self.done and (n < 0 or len(self.buf) < n):
            kind, payload = read_frame(self.f)
            if kind == "E":
                self.done = True
            elif kind == "D":
                self.buf += payload
            else:
                raise ProtocolError("message frame inside a data stream")
            if n >= 0 and self.buf:
                break
        if n < 0 or n >= len(self.buf):
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def drain(self) -> None:
        while not self.done:
            self.read(CHUNK)
        self.buf = b""

    def close(self) -> None:
        self.drain()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drain()


# --- messages -------------------------------------------------------------------------------
#
# Requests are typed with msgspec, not pydantic: the agent is a new process for every SSH
# session, and importing pydantic and building these schemas took ~0.1 s of each session's
# start (a fifth of a small sync); msgspec loads in a few ms and checks the same constraints.
# Patterns are anchored with \A and \Z: msgspec matches with re.search, where `$` would
# also match before a trailing newline.


class _Msg(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


def _str(
    pattern: str | None = None, min_length: int | None = None, max_length: int | None = None
) -> Any:
    return Annotated[
        str, msgspec.Meta(pattern=pattern, min_length=min_length, max_length=max_length)
    ]


SnapId = _str(r"\As[1-9][0-9]{0,9}\Z")
RelPath = _str(min_length=1, max_length=4096)
Hex128 = _str(r"\A[0-9a-f]{32}\Z")
ProjectName = _str(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
Text = _str(max_length=4000)
Person = _str(max_length=320)
TagName = _str(r"\A[a-z0-9][a-z0-9._-]{0,63}\Z")
TxId = _str(r"\Atx-[0-9a-f]{6,32}\Z")
LinkTarget = _str(min_length=1, max_length=4096)


# Every string a peer sends is bounded: names and versions 128, paths and messages 4 KiB.
Short = _str(max_length=128)
PathText = _str(max_length=4096)
ShapeText = _str(min_length=2, max_length=64 << 10)


class Hello(_Msg):
    op: Literal["hello"]
    version: int
    # None: a session that only lists the caller's repositories (`list_repos`)
    project: ProjectName | None = None
    repo_path: PathText | None = None
    client: Short = ""


class Create(_Msg):
    op: Literal["create"]
    shape: ShapeText | None = None  # the project's data dirs and ignore rules (rules.py)


class LockOwnerMsg(_Msg):
    user: Person
    tx: Short
    operation: Short = "sync"
    host: Short = ""
    pid: Annotated[int, msgspec.Meta(ge=0, le=1 << 31)] = 0
    login: Short = ""
    since: float = 0.0


class Simple(_Msg):
    op: Literal[
        "head",
        "history",
        "exists",
        "unlock",
        "abort",
        "bye",
        "destroy_new",
        "tags",
        "list_repos",
    ]


class SnapshotReq(_Msg):
    op: Literal["record", "manifest", "manifest_digest"]
    snapshot: SnapId


class OpenFile(_Msg):
    op: Literal["open_file"]
    snapshot: SnapId
    path: RelPath


class ReadFiles(_Msg):
    op: Literal["read_files"]
    snapshot: SnapId
    paths: Annotated[list[RelPath], msgspec.Meta(min_length=1, max_length=1000)]


class AddTag(_Msg):
    op: Literal["add_tag"]
    name: TagName
    snapshot: SnapId
    message: Text
    author: Person


class Lock(_Msg):
    op: Literal["lock"]
    owner: LockOwnerMsg
    timeout: Annotated[float, msgspec.Meta(ge=0, le=86400)]


class Begin(_Msg):
    op: Literal["begin"]
    parent: SnapId | None
    tx: TxId


class PutFile(_Msg):
    op: Literal["put_file"]
    path: RelPath
    size: Annotated[int, msgspec.Meta(ge=0)]
    mtime_ns: int
    hash: Hex128


class PutLink(_Msg):
    op: Literal["put_link"]
    path: RelPath
    target: LinkTarget


class Restore(_Msg):
    op: Literal["restore"]
    path: RelPath
    snapshot: SnapId


class Delete(_Msg):
    op: Literal["delete"]
    path: RelPath


class Commit(_Msg):
    op: Literal["commit"]
    message: Text
    author: Person
    author_name: Person


REQUESTS: tuple[type[_Msg], ...] = (
    Hello,
    Create,
    Simple,
    SnapshotReq,
    OpenFile,
    ReadFiles,
    AddTag,
    Lock,
    Begin,
    PutFile,
    PutLink,
    Restore,
    Delete,
    Commit,
)
# op -> the message type that carries it (each op belongs to exactly one type)
_BY_OP: dict[str, type[_Msg]] = {
    op: cls for cls in REQUESTS for op in get_args(get_type_hints(cls, include_extras=False)["op"])
}


def parse_request(msg: dict[str, Any]) -> Any:
    op = msg.get("op")
    cls = _BY_OP.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProtocolError(f"invalid request (op: unknown operation {str(op)[:64]!r})")
    try:
        return msgspec.convert(msg, cls)
    except msgspec.ValidationError as e:
        problem, _, where = str(e).partition(" - at `$.")
        where = where.rstrip("`")
        raise ProtocolError(f"invalid request ({where or op}: {problem[:300]})") from e


def error_response(e: DsgError) -> dict[str, Any]:
    return {"ok": False, "error": e.to_dict()}
