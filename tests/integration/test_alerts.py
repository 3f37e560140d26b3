"""`dsg admin health --alert` through the real command, against real receivers.

Webhooks go to an HTTP server on 127.0.0.1 in a thread (http.server); email goes to a real
SMTP server (aiosmtpd) or through the sendmail path to a small script standing in for the
MTA binary. The health states are real: a stale lock left in a posix repository's lock file,
snapshot age through the injected clock (`--now`), an access file that is missing. No test
waits for time to pass: the command returns only after the receiver has recorded the
request (the receivers record before they answer).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller

from dsg.backends.base import LockOwner
from tests.conftest import RepoSpace
from tests.helpers import Researcher
from tests.integration.test_health import NO_SCRUB, access_for, dsg, health, lock_file

SNAP = "snapshot_age_warn_hours: 24\nsnapshot_age_crit_hours: 48\n"


@pytest.fixture
def backend() -> str:
    """Alert logic does not depend on the backend: posix repositories only (no zfs lab)."""
    return "posix"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- receivers -----------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    answered: int


@dataclass
class Hook:
    """A webhook receiver on 127.0.0.1: records every POST, answers `status`."""

    port: int = field(default_factory=free_port)
    status: int = 200
    requests: list[Request] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/T0/s3cret-token"

    @property
    def delivered(self) -> list[Request]:
        return [r for r in self.requests if r.answered == 200]

    def start(self) -> None:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                hook.requests.append(Request(self.path, dict(self.headers), body, hook.status))
                self.send_response(hook.status)
                if 300 <= hook.status < 400:
                    self.send_header("Location", hook.url)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: nothing listens on the port any more (connection refused)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    h.start()
    yield h
    h.stop()


class Inbox:
    """An aiosmtpd handler: keeps every message; refuses recipients while `refuse` is set."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.refuse = False

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(e.content, policy=email.policy.default)  # type: ignore[misc]
            for e in self.envelopes
        ]


@dataclass
class Smtpd:
    inbox: Inbox = field(default_factory=Inbox)
    port: int = field(default_factory=free_port)
    controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtpd() -> Iterator[Smtpd]:
    s = Smtpd()
    s.start()
    yield s
    s.stop()


# A stand-in for the MTA binary (/usr/sbin/sendmail on a real host): it records its arguments
# and the message it reads on stdin, one file per call, and fails the way an MTA that cannot
# queue does (exit 75, EX_TEMPFAIL) while a file named `fail` exists beside it.
SENDMAIL = """#!/bin/sh
dir="$(dirname "$0")"
if [ -e "$dir/fail" ]; then echo "sendmail: cannot queue the message: disk full" >&2; exit 75; fi
n=$(ls "$dir" | grep -c '^msg\\.')
printf '%s\\n' "$*" > "$dir/args.$n"
cat > "$dir/msg.$n"
"""


@pytest.fixture
def sendmail(tmp_path: Path) -> Path:
    d = tmp_path / "mta"
    d.mkdir()
    script = d / "sendmail"
    script.write_text(SENDMAIL)
    script.chmod(0o755)
    return script


def sent_mail(script: Path) -> list[email.message.EmailMessage]:
    d = script.parent
    n = len(list(d.glob("msg.*")))
    return [
        email.message_from_bytes((d / f"msg.{i}").read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for i in range(n)
    ]


# --- helpers -------------------------------------------------------------------------------


def config(
    tmp: Path,
    *,
    webhook: str = "",
    email: str = "",
    repeat: str = "null",
    host: str | None = "dsgtest",
) -> str:
    text = NO_SCRUB + SNAP + "alerts:\n"
    text += f"  state_file: {tmp}/state/health-state.json\n  repeat_hours: {repeat}\n"
    if host:
        text += f"  host: {host}\n"
    if webhook:
        text += (
            f"  webhook:\n    url: {webhook}\n    timeout_seconds: 5\n"
            "    headers: {X-Dsg-Token: t0ken}\n"
        )
    if email:
        text += "  email:\n" + "".join(f"    {line}\n" for line in email.splitlines())
    return text


NO_PROXY = {"no_proxy": "127.0.0.1,localhost"}  # the receivers are local, whatever the env


def alert(tmp: Path, cfg: str, access: dict, *args: str) -> tuple[int, dict]:
    return health(tmp, cfg, access, "--alert", *args, env=NO_PROXY)


def leave_stale_lock(space: RepoSpace) -> None:
    owner = LockOwner(user="alice@hrdag.org", tx="tx-dead", pid=999999)
    lock_file(space).write_bytes(orjson.dumps(owner.to_dict()))  # a writer died holding it


def clear_lock(space: RepoSpace) -> None:
    lock_file(space).write_bytes(b"")  # what the next sync does


def changes(body_or_delivery: dict) -> list[tuple[str, str, str, str]]:
    return [
        (c["kind"], c["check"], c["previous"], c["status"]) for c in body_or_delivery["changes"]
    ]


def channel(doc: dict, name: str) -> dict:
    (d,) = [d for d in doc["alerts"] if d["channel"] == name]
    return d


def alert_checks(doc: dict) -> list[dict]:
    return [c for c in doc.get("checks", []) if c["check"] == "alerts"]


def state(tmp: Path) -> dict:
    path = tmp / "state" / "health-state.json"
    return json.loads(path.read_text())["channels"] if path.exists() else {}


def later(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


# --- webhook -------------------------------------------------------------------------------


def test_webhook_problem_once_then_change_then_recovery(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path, hook: Hook
) -> None:
    access, cfg = access_for(space), config(tmp_path, webhook=hook.url)

    code, doc = alert(tmp_path, cfg, access)  # all OK: nothing to say
    assert code == 0 and hook.requests == []
    assert channel(doc, "webhook")["result"] == "nothing"
    assert state(tmp_path)["webhook"]["stale_lock proj"]["status"] == "OK"

    leave_stale_lock(space)
    code, doc = alert(tmp_path, cfg, access)
    assert code == 1 and len(hook.requests) == 1
    req = hook.requests[0]
    assert req.path == "/hooks/T0/s3cret-token"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Dsg-Token"] == "t0ken"
    assert req.body["subject"] == "DSG HEALTH WARNING on dsgtest: stale_lock proj WARNING"
    assert req.body["status"] == "WARNING" and req.body["host"] == "dsgtest"
    assert changes(req.body) == [("problem", "stale_lock", "OK", "WARNING")]
    assert "alice@hrdag.org" in req.body["changes"][0]["message"]
    assert req.body["summary"] == doc["summary"] and doc["summary"] in req.body["text"]
    sent = channel(doc, "webhook")
    assert sent["result"] == "sent" and sent["subject"] == req.body["subject"]
    assert sent["destination"] == f"POST http://127.0.0.1:{hook.port}/…"
    assert "s3cret" not in json.dumps(doc)  # the hook URL's secret path is never shown
    assert state(tmp_path)["webhook"]["stale_lock proj"]["status"] == "WARNING"

    code, doc = alert(tmp_path, cfg, access)  # no change: nothing sent
    assert code == 1 and len(hook.requests) == 1
    assert channel(doc, "webhook") == {
        "channel": "webhook", "destination": f"POST http://127.0.0.1:{hook.port}/…",
        "result": "nothing", "subject": None, "changes": [], "error": None,
    }  # fmt: skip

    code, doc = alert(tmp_path, cfg, access, "--now", later(30))  # snapshot 30 hours old
    assert code == 1 and len(hook.requests) == 2
    assert changes(hook.requests[1].body) == [("problem", "snapshot_age", "OK", "WARNING")]

    code, doc = alert(tmp_path, cfg, access, "--now", later(50))
    assert code == 2 and len(hook.requests) == 3
    body = hook.requests[2].body
    assert changes(body) == [("changed", "snapshot_age", "WARNING", "CRITICAL")]
    assert body["subject"] == (
        "DSG HEALTH CRITICAL on dsgtest: snapshot_age proj CRITICAL (was WARNING)"
    )

    clear_lock(space)  # and back to the real clock: the snapshot is fresh
    code, doc = alert(tmp_path, cfg, access)
    assert code == 0 and len(hook.requests) == 4
    body = hook.requests[3].body
    assert body["status"] == "OK"
    assert sorted(changes(body)) == [
        ("recovery", "snapshot_age", "CRITICAL", "OK"),
        ("recovery", "stale_lock", "WARNING", "OK"),
    ]
    assert body["subject"].startswith("DSG HEALTH OK on dsgtest: ")

    code, doc = alert(tmp_path, cfg, access)
    assert code == 0 and len(hook.requests) == 4
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "health-state.json",
        "health-state.json.lock",
    ]  # fmt: skip  (no temporary file left)


def test_without_alert_nothing_is_sent_and_the_state_is_untouched(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path, hook: Hook
) -> None:
    access, cfg = access_for(space), config(tmp_path, webhook=hook.url)
    leave_stale_lock(space)
    code, doc = health(tmp_path, cfg, access)
    assert (code, doc["alerts"]) == (1, None)
    assert hook.requests == [] and not (tmp_path / "state").exists()
    code, doc = alert(tmp_path, cfg, access)
    assert code == 1 and len(hook.delivered) == 1


def test_webhook_down_is_reported_and_retried(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path
) -> None:
    hook = Hook()  # not started: nothing listens on its port
    access, cfg = access_for(space), config(tmp_path, webhook=hook.url)
    leave_stale_lock(space)

    code, doc = alert(tmp_path, cfg, access)
    assert code == 1  # still the health status: a failed delivery ranks as UNKNOWN, below it
    d = channel(doc, "webhook")
    assert d["result"] == "failed" and "connection refused" in d["error"]
    assert changes(d) == [("problem", "stale_lock", "OK", "WARNING")]
    (c,) = alert_checks(doc)
    assert (c["target"], c["status"]) == ("webhook", "UNKNOWN")
    assert "not sent" in c["message"] and "alerts webhook: not sent" in doc["summary"]
    assert state(tmp_path) == {}  # not advanced

    try:
        hook.start()
        hook.status = 500  # up, but failing
        code, doc = alert(tmp_path, cfg, access)
        assert code == 1 and len(hook.requests) == 1 and hook.delivered == []
        assert "HTTP 500" in channel(doc, "webhook")["error"]
        assert state(tmp_path) == {}

        hook.status = 302  # a redirected POST would lose its payload: a failure too
        code, doc = alert(tmp_path, cfg, access)
        assert len(hook.requests) == 2 and hook.delivered == []
        assert channel(doc, "webhook")["error"].endswith(
            "HTTP 302 Found (redirects are not followed: give the final URL)"
        )
        assert state(tmp_path) == {}

        hook.status = 200
        code, doc = alert(tmp_path, cfg, access)  # the same alert, delivered now
        assert code == 1 and len(hook.delivered) == 1 and alert_checks(doc) == []
        assert changes(hook.delivered[0].body) == [("problem", "stale_lock", "OK", "WARNING")]
        assert state(tmp_path)["webhook"]["stale_lock proj"]["status"] == "WARNING"
        code, doc = alert(tmp_path, cfg, access)
        assert len(hook.delivered) == 1 and channel(doc, "webhook")["result"] == "nothing"
    finally:
        hook.stop()

    # A recovery that cannot be delivered: the host is OK, the run is not (UNKNOWN, exit 3).
    clear_lock(space)
    acc, conf = tmp_path / "access.yml", tmp_path / "health.yml"
    proc = dsg(
        "admin", "health", "--alert", "--config", str(conf), "--access-file", str(acc), env=NO_PROXY
    )
    assert proc.returncode == 3, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("DSG HEALTH UNKNOWN - 3 checks: 1 unknown, 2 ok - alerts webhook:")
    assert (
        f"UNKNOWN  alerts        webhook: not sent: POST http://127.0.0.1:{hook.port}/…: "
        "connection refused (the next --alert run tries again)"
    ) in lines
    assert lines[-1].startswith(
        f"ALERT    webhook       POST http://127.0.0.1:{hook.port}/…: NOT SENT"
    )
    assert state(tmp_path)["webhook"]["stale_lock proj"]["status"] == "WARNING"

    try:
        hook.start()
        code, doc = alert(tmp_path, cfg, access)
        assert code == 0 and len(hook.delivered) == 2
        assert changes(hook.delivered[1].body) == [("recovery", "stale_lock", "WARNING", "OK")]
    finally:
        hook.stop()


def test_webhook_that_does_not_answer_times_out(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path
) -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        cfg = config(tmp_path, webhook=f"http://127.0.0.1:{port}/hook").replace(
            "timeout_seconds: 5", "timeout_seconds: 0.5"
        )
        leave_stale_lock(space)
        code, doc = alert(tmp_path, cfg, access_for(space))
    assert code == 1
    d = channel(doc, "webhook")
    assert d["result"] == "failed" and d["error"] == f"POST http://127.0.0.1:{port}/…: timed out"
    assert state(tmp_path) == {}


def test_repeat_after_repeat_hours(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path, hook: Hook
) -> None:
    access, cfg = access_for(space), config(tmp_path, webhook=hook.url, repeat="1")
    leave_stale_lock(space)
    start = datetime.now(UTC)
    at = {h: (start + timedelta(hours=h)).isoformat() for h in (0, 0.5, 2, 2.5, 3)}
    alert(tmp_path, cfg, access, "--now", at[0])
    alert(tmp_path, cfg, access, "--now", at[0.5])
    assert len(hook.delivered) == 1
    code, _ = alert(tmp_path, cfg, access, "--now", at[2])
    assert code == 1 and len(hook.delivered) == 2
    body = hook.delivered[1].body
    assert changes(body) == [("repeat", "stale_lock", "WARNING", "WARNING")]
    assert body["subject"] == "DSG HEALTH WARNING on dsgtest: stale_lock proj still WARNING"
    assert body["changes"][0]["since"] == datetime.fromisoformat(at[0]).isoformat()
    alert(tmp_path, cfg, access, "--now", at[2.5])
    assert len(hook.delivered) == 2  # the next one counts from the last notice
    alert(tmp_path, cfg, access, "--now", at[3])
    assert len(hook.delivered) == 3


def test_checks_that_cannot_run_are_alerted(tmp_path: Path, hook: Hook) -> None:
    cfg = tmp_path / "health.yml"
    cfg.write_text(config(tmp_path, webhook=hook.url))
    acc = tmp_path / "access.yml"
    args = ("admin", "health", "--alert", "--json", "--config", str(cfg), "--access-file", str(acc))
    proc = dsg(*args, env=NO_PROXY)  # no access file yet
    doc = json.loads(proc.stdout)
    assert (
        proc.returncode == 3
        and doc["status"] == "UNKNOWN"
        and "no access file" in doc["error"]["message"]
    )
    assert channel(doc, "webhook")["result"] == "sent" and len(hook.delivered) == 1
    body = hook.delivered[0].body
    assert changes(body) == [("problem", "health_run", "OK", "UNKNOWN")]
    assert body["changes"][0]["target"] == "dsgtest" and "no access file" in body["text"]

    proc = dsg(*args, env=NO_PROXY)  # still broken: nothing new
    assert proc.returncode == 3 and len(hook.delivered) == 1

    acc.write_text(
        json.dumps({"projects": {"ghost": {"type": "posix", "mountpoint": str(tmp_path / "g")}}})
    )
    proc = dsg(*args, env=NO_PROXY)
    assert proc.returncode == 1 and len(hook.delivered) == 2
    assert sorted(changes(hook.delivered[1].body)) == [
        ("problem", "snapshot_age", "OK", "WARNING"),  # no dsg repository there
        ("recovery", "health_run", "UNKNOWN", "OK"),
    ]


def test_alert_needs_a_valid_alerts_section(tmp_path: Path) -> None:
    code, doc = health(tmp_path, NO_SCRUB, {"projects": {}}, "--alert")
    assert code == 3 and doc["error"]["message"].endswith("has no 'alerts:' section")

    bad = NO_SCRUB + "alerts:\n  webhook:\n    url: ftp://hooks.example.org/x\n"
    code, doc = health(tmp_path, bad, {"projects": {}}, "--alert")
    assert code == 3
    assert (
        "alerts.webhook.url (line 5): the scheme must be http or https (got 'ftp')"
        in doc["error"]["message"]
    )
    code, doc = health(tmp_path, bad, {"projects": {}})  # the config is invalid without --alert too
    assert code == 3


# --- email ---------------------------------------------------------------------------------


def test_email_over_smtp(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path, smtpd: Smtpd
) -> None:
    mail = (
        "to: [ops@example.org, pat@example.org]\nfrom: dsg-health@example.org\n"
        f"subject_prefix: '[dsg]'\nsmtp_host: 127.0.0.1\nsmtp_port: {smtpd.port}\ntimeout_seconds: 5"
    )
    access, cfg = access_for(space), config(tmp_path, email=mail)
    leave_stale_lock(space)
    code, doc = alert(tmp_path, cfg, access)
    assert code == 1 and channel(doc, "email")["result"] == "sent"
    (env,) = smtpd.inbox.envelopes
    assert env.mail_from == "dsg-health@example.org"
    assert env.rcpt_tos == ["ops@example.org", "pat@example.org"]
    (msg,) = smtpd.inbox.messages()
    assert msg["Subject"] == "[dsg] WARNING on dsgtest: stale_lock proj WARNING"
    assert msg["To"] == "ops@example.org, pat@example.org"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_content()
    assert "  WARNING  stale_lock    proj: stale: alice@hrdag.org" in body
    assert doc["summary"] in body.splitlines()
    assert channel(doc, "email")["destination"] == (
        f"ops@example.org, pat@example.org via SMTP 127.0.0.1:{smtpd.port}"
    )

    alert(tmp_path, cfg, access)
    assert len(smtpd.inbox.envelopes) == 1  # no change, no mail

    smtpd.stop()
    clear_lock(space)
    code, doc = alert(tmp_path, cfg, access)
    assert code == 3  # OK host, undelivered recovery
    assert channel(doc, "email")["error"] == f"SMTP 127.0.0.1:{smtpd.port}: connection refused"
    assert state(tmp_path)["email"]["stale_lock proj"]["status"] == "WARNING"

    smtpd.start()
    smtpd.inbox.refuse = True  # up, refusing the recipients
    code, doc = alert(tmp_path, cfg, access)
    assert code == 3 and len(smtpd.inbox.envelopes) == 1
    assert "550" in channel(doc, "email")["error"]

    smtpd.inbox.refuse = False
    code, doc = alert(tmp_path, cfg, access)
    assert code == 0 and len(smtpd.inbox.envelopes) == 2
    assert (
        smtpd.inbox.messages()[1]["Subject"]
        == "[dsg] OK on dsgtest: stale_lock proj OK (was WARNING)"
    )
    assert "(recovered; was WARNING since " in smtpd.inbox.messages()[1].get_content()
    alert(tmp_path, cfg, access)
    assert len(smtpd.inbox.envelopes) == 2


def test_email_through_sendmail(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path, sendmail: Path
) -> None:
    cfg = config(tmp_path, email=f"to: [ops@example.org]\nsendmail: {sendmail}", host=None)
    access = access_for(space)
    leave_stale_lock(space)
    code, doc = alert(tmp_path, cfg, access)
    assert code == 1 and channel(doc, "email")["destination"] == f"ops@example.org via {sendmail}"
    (msg,) = sent_mail(sendmail)
    assert (sendmail.parent / "args.0").read_text() == "-t -oi\n"
    host = socket.gethostname()  # the default host name
    assert msg["Subject"] == f"DSG HEALTH WARNING on {host}: stale_lock proj WARNING"
    assert msg["To"] == "ops@example.org" and msg["From"] == f"dsg@{host}"

    (sendmail.parent / "fail").touch()
    clear_lock(space)
    code, doc = alert(tmp_path, cfg, access)
    assert code == 3 and len(sent_mail(sendmail)) == 1
    assert channel(doc, "email")["error"] == (
        f"{sendmail} -t -oi exited with status 75: sendmail: cannot queue the message: disk full"
    )
    (sendmail.parent / "fail").unlink()
    code, doc = alert(tmp_path, cfg, access)
    assert code == 0 and len(sent_mail(sendmail)) == 2
    assert (
        sent_mail(sendmail)[1]["Subject"]
        == f"DSG HEALTH OK on {host}: stale_lock proj OK (was WARNING)"
    )


def test_missing_sendmail_is_reported(tmp_path: Path) -> None:
    cfg = config(tmp_path, email=f"to: [ops@example.org]\nsendmail: {tmp_path}/no/sendmail")
    access = {"projects": {"ghost": {"type": "posix", "mountpoint": str(tmp_path / "g")}}}
    code, doc = alert(tmp_path, cfg, access)
    assert code == 1
    assert channel(doc, "email")["error"] == (
        f"{tmp_path}/no/sendmail does not exist (install a local MTA, or set smtp_host)"
    )


# --- both channels -------------------------------------------------------------------------


def test_each_channel_keeps_its_own_state(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path, sendmail: Path
) -> None:
    hook = Hook()  # down at first
    cfg = config(tmp_path, webhook=hook.url, email=f"to: [ops@example.org]\nsendmail: {sendmail}")
    access = access_for(space)
    leave_stale_lock(space)
    code, doc = alert(tmp_path, cfg, access)
    assert code == 1
    assert [(d["channel"], d["result"]) for d in doc["alerts"]] == [
        ("email", "sent"),
        ("webhook", "failed"),
    ]
    assert len(sent_mail(sendmail)) == 1
    assert set(state(tmp_path)) == {"email"}

    with contextlib.ExitStack() as stack:
        hook.start()
        stack.callback(hook.stop)
        code, doc = alert(tmp_path, cfg, access)
        assert [(d["channel"], d["result"]) for d in doc["alerts"]] == [
            ("email", "nothing"),
            ("webhook", "sent"),
        ]
        assert len(sent_mail(sendmail)) == 1  # no duplicate mail
        assert changes(hook.delivered[0].body) == [("problem", "stale_lock", "OK", "WARNING")]
        assert {ch: s["stale_lock proj"]["status"] for ch, s in state(tmp_path).items()} == {
            "email": "WARNING", "webhook": "WARNING",
        }  # fmt: skip


def test_an_unusable_state_file_sends_nothing_and_says_so(tmp_path: Path, hook: Hook) -> None:
    (tmp_path / "state" / "health-state.json").mkdir(parents=True)  # cannot be read as a file
    access = {"projects": {"ghost": {"type": "posix", "mountpoint": str(tmp_path / "g")}}}
    code, doc = alert(tmp_path, config(tmp_path, webhook=hook.url), access)
    assert code == 1 and hook.requests == []  # WARNING (no repository) stays the status
    (c,) = alert_checks(doc)
    assert (c["target"], c["status"]) == ("state", "UNKNOWN")
    assert (
        c["message"].startswith("cannot read the alert state ")
        and "no alert was sent" in c["message"]
    )
    assert channel(doc, "webhook")["result"] == "failed"
