"""The agent under random and mutated input from read and write members (issue 19): whatever
arrives, it answers or ends the session cleanly, never changes a committed snapshot, and
leaves no staged transaction behind when the session ends.

The agent runs in-process on byte streams (the same class `dsg serve` runs), so hypothesis
can try hundreds of sessions in seconds; tests/security/test_hostile_member.py drives the
`dsg serve` process itself."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import xxhash
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsg.backends.posix import PosixRepository
from dsg.server.agent import Agent
from dsg.server.audit import AuditLog
from dsg.wire.protocol import PROTOCOL_VERSION
from dsg.wire.sshstart import FRAME_HEAD
from dsg.workcopy.rules import ScanRules
from tests.security.agentpeer import ME

A = "task1/input/a.csv"
OPS = [
    "hello", "head", "history", "exists", "create", "unlock", "abort", "bye", "destroy_new",
    "tags", "list_repos", "record", "manifest", "manifest_digest", "open_file", "read_files",
    "add_tag", "lock", "begin", "put_file", "put_link", "restore", "delete", "commit", "nope",
]  # fmt: skip
HOSTILE_PATHS = [
    A, "task1/input/b.csv", ".git/config", "Makefile", "../../etc/passwd", "/etc/passwd",
    "task1/input/../../x", "task1/input/A.csv", "task1/input/\u202ecod.exe", "task1/input/",
    "task1/input/x\x00y", "x" * 5000, "task1/input/\uff0e\uff0e/x", "",
]  # fmt: skip


def frame(kind: str, payload: bytes) -> bytes:
    return FRAME_HEAD.pack(len(payload), ord(kind)) + payload


def msg(d: Any) -> bytes:
    # json, not orjson: it writes what a hostile client may send (integers past 64 bits, NaN)
    return frame("J", json.dumps(d).encode())


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.sampled_from(HOSTILE_PATHS),
    st.sampled_from(["s1", "s2", "s0", "s99999999999", "tx-abcdef", "tx-", "a" * 200]),
    st.text(max_size=40),
    st.lists(st.sampled_from(HOSTILE_PATHS), max_size=5),
    st.dictionaries(st.sampled_from(["user", "tx", "x"]), st.text(max_size=10), max_size=3),
)
FIELDS = ["path", "paths", "snapshot", "parent", "tx", "size", "mtime_ns", "hash", "target",
          "message", "author", "author_name", "owner", "timeout", "name", "shape", "project"]  # fmt: skip

requests = st.builds(
    lambda op, extra: {"op": op, **extra},
    st.sampled_from(OPS),
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=5),
)


def valid_session(data: bytes) -> list[bytes]:
    """The frames of an honest write session (lock, begin, one upload, commit)."""
    put = {"op": "put_file", "path": "task1/input/b.csv", "size": len(data), "mtime_ns": 0,
           "hash": xxhash.xxh3_128_hexdigest(data)}  # fmt: skip
    return [
        msg({"op": "lock", "owner": {"user": "ann@hrdag.org", "tx": "tx-abcdef"}, "timeout": 1}),
        msg({"op": "begin", "parent": "s1", "tx": "tx-abcdef"}),
        msg(put),
        frame("D", data),
        frame("E", b""),
        msg({"op": "commit", "message": "m", "author": "ann@hrdag.org", "author_name": "Ann"}),
    ]


@st.composite
def sessions(draw: st.DrawFn) -> tuple[str, bytes]:
    role = draw(st.sampled_from(["read", "write"]))
    hello = {"op": "hello", "version": PROTOCOL_VERSION, "project": "proj"}
    if draw(st.booleans()):
        hello = draw(st.dictionaries(st.sampled_from(["op", "version", "project", "client",
                                                      "repo_path", "x"]), values, max_size=5))  # fmt: skip
    parts = [msg(hello)]
    kind = draw(st.sampled_from(["requests", "mutated", "garbage"]))
    if kind == "requests":
        for req in draw(st.lists(requests, max_size=8)):
            parts.append(msg(req))
            if req["op"] == "put_file" and draw(st.booleans()):
                parts += [frame("D", draw(st.binary(max_size=64))), frame("E", b"")]
    elif kind == "mutated":
        honest = valid_session(draw(st.binary(max_size=32)))
        i = draw(st.integers(0, len(honest) - 1))
        blob = bytearray(honest[i])
        for _ in range(draw(st.integers(1, 4))):
            if blob:
                j = draw(st.integers(0, len(blob) - 1))
                blob[j] = draw(st.integers(0, 255))
        honest[i] = bytes(blob)
        cut = draw(st.integers(0, len(honest)))
        parts += honest[:cut]
    else:
        parts.append(draw(st.binary(max_size=200)))
    if draw(st.booleans()):
        parts.append(struct.pack(">IB", draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 255))))
    return role, b"".join(parts)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    top = tmp_path_factory.mktemp("fuzz")
    repo = PosixRepository(top / "repos" / "proj", "proj")
    (top / "repos").mkdir()
    repo.create(ScanRules())
    from dsg.backends.base import LockOwner

    with repo.lock(LockOwner(user="ann@hrdag.org", tx="tx-000001"), 5):
        txn = repo.begin(None, "tx-000001")
        data = b"evidence\n"
        txn.put_file(A, io.BytesIO(data), len(data), 0, xxhash.xxh3_128_digest(data))
        txn.commit("first", "ann@hrdag.org", "Ann")
    (top / "logs").mkdir()
    return top, repo, repo.record("s1"), repo.manifest_digest("s1")


def run_agent(top: Path, role: str, stream: bytes) -> tuple[int, bytes]:
    access = top / "access.yml"
    access.write_text(yaml.safe_dump({"projects": {"proj": {
        "type": "posix", "mountpoint": str(top / "repos" / "proj"), "users": {ME: role}}},
        "limits": {"lock_idle_seconds": 30}}))  # fmt: skip
    out = io.BytesIO()
    agent = Agent(io.BytesIO(stream), out, access, top / "logs" / "agent.jsonl",
                  AuditLog.in_dir(top / "logs"))  # fmt: skip
    return agent.serve(), out.getvalue()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(session=sessions())
def test_no_input_crashes_the_agent_or_changes_history(served, session) -> None:
    top, repo, s1, s1_digest = served
    role, stream = session
    code = run_agent(top, role, stream)[0]  # an exception here is the failure
    assert code in (0, 1, 2)
    assert repo.record("s1") == s1 and repo.manifest_digest("s1") == s1_digest
    with repo.open_file("s1", A) as f:
        assert f.read() == b"evidence\n"
    assert not any((top / "repos" / "proj" / "txn").iterdir()), "a staged transaction was left"
    head = repo.head()
    for path in repo.manifest(head).paths:  # whatever was committed stayed inside the shape
        assert ScanRules().tracks(path), path


def test_the_fuzzer_reaches_commits(served) -> None:
    """The honest session the mutations start from really commits (so mutations near it
    exercise the write path), and a read member's copy of it is refused."""
    top, repo, *_ = served
    before = repo.head()
    code, out = run_agent(top, "write", msg({"op": "hello", "version": PROTOCOL_VERSION,
                                             "project": "proj"}) + b"".join(valid_session(b"b\n")))  # fmt: skip
    assert code == 0 and repo.head() != before, out
    code, out = run_agent(top, "read", msg({"op": "hello", "version": PROTOCOL_VERSION,
                                            "project": "proj"}) + b"".join(valid_session(b"c\n")))  # fmt: skip
    assert b"permission_denied" in out
