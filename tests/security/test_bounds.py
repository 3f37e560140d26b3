"""Logs a member's input can reach never grow by more than a bounded line (issue 19, item 5):
the audit log is kept for ten years and an agent that cannot audit refuses sessions."""

from __future__ import annotations

from pathlib import Path

import orjson

from dsg.fs.log import MAX_EVENT, EventLog
from dsg.server.audit import MAX_RECORD, format_record


def test_an_audit_record_is_bounded_whatever_its_fields() -> None:
    line = format_record("session.open", {"client": "x" * 1_000_000, "login": "ann"})
    assert len(line) <= MAX_RECORD + 1
    rec = orjson.loads(line)
    assert rec["login"] == "ann" and len(rec["client"]) < 300
    many = format_record("sync.commit", {f"k{i}": "v" * 200 for i in range(100)})
    assert len(many) <= MAX_RECORD + 1 and orjson.loads(many)["truncated"] is True


def test_an_event_log_line_is_bounded(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "agent.jsonl", "tx-1", "serve")
    log("refused", reason="r" * 1_000_000, paths=["p" * 1000] * 10_000)
    data = (tmp_path / "agent.jsonl").read_bytes()
    assert len(data) <= MAX_EVENT + 1
    assert orjson.loads(data)["event"] == "refused"
