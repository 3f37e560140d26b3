"""Alert delivery for `dsg admin health --alert`: state changes by email and webhook.

The core is pure: :func:`transitions` compares what a channel was last told (per check: status,
since when, when it was last notified) with the current :class:`~dsg.admin.health.Report` and says
what changed (a new problem, a changed severity, a recovery to OK, a check no longer reported)
and which still-failing checks are due for a reminder (`repeat_hours`); :func:`compose` turns
that into a subject and a body (check lines and the summary: never file contents).

Then delivery: email through the local MTA (`sendmail -t -oi`) or an SMTP relay (smtplib), and
a webhook (an HTTP POST of JSON, urllib). Each channel keeps its own section of the state file,
advanced only after that channel's delivery succeeded: a failed delivery is sent again by the
next run, and a channel that worked is not sent a duplicate. The state file is written
atomically (temporary file, fsync, rename) under an flock, so overlapping runs (cron) do not
send twice. Failures never pass silently: each becomes an `alerts` check, UNKNOWN.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import smtplib
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from dsg import __version__
from dsg.admin.health import AlertsConfig, Check, EmailAlerts, Report, Status, WebhookAlerts
from dsg.admin.metrics import write_atomic

# The pseudo-check of a run whose checks could not run at all (e.g. no access file).
RUN_CHECK = "health_run"
# The pseudo-check that reports delivery and state-file failures.
ALERTS_CHECK = "alerts"
CHANNELS = ("email", "webhook")
SUBJECT_MAX = 200
RUNBOOK = 'What to do for each check: the "Alerts" section of docs/operations.md (dsg).'


class Kind(StrEnum):
    problem = "problem"  # OK (or never seen) -> not OK
    changed = "changed"  # one non-OK status -> another
    recovery = "recovery"  # not OK -> OK
    repeat = "repeat"  # still not OK, and repeat_hours have passed since the last notice
    gone = "gone"  # was not OK, and is no longer reported (project or pool removed)


def key(check: str, target: str) -> str:
    return f"{check} {target}"


@dataclass(frozen=True)
class CheckState:
    """What a channel was last told about one check."""

    check: str
    target: str
    status: Status
    since: datetime  # when this status was first seen
    last_notified: datetime | None = None  # when the channel was last sent this check


ChannelState = dict[str, CheckState]


@dataclass(frozen=True)
class Transition:
    kind: Kind
    check: str
    target: str
    status: Status  # now (OK for a recovery, and for a check that is gone)
    previous: Status  # what the channel knew (OK for a check it never saw)
    since: datetime  # when `status` began
    previous_since: datetime | None  # when `previous` began (None: never seen)
    message: str

    def short(self) -> str:
        """For the subject."""
        name = f"{self.check} {self.target}"
        match self.kind:
            case Kind.problem:
                return f"{name} {self.status.name}"
            case Kind.changed | Kind.recovery:
                return f"{name} {self.status.name} (was {self.previous.name})"
            case Kind.repeat:
                return f"{name} still {self.status.name}"
            case Kind.gone:
                return f"{name} no longer checked"
        raise AssertionError(self.kind)

    def line(self) -> str:
        """For the body: the check's line, and what it was."""
        label = "GONE" if self.kind == Kind.gone else self.status.name
        text = f"{label:<8} {self.check:<13} {self.target}: {self.message}"
        was = f"{self.previous.name} since {_when(self.previous_since)}"
        match self.kind:
            case Kind.changed:
                text += f" (was {was})"
            case Kind.recovery:
                text += f" (recovered; was {was})"
            case Kind.repeat:
                text += f" (still; since {_when(self.since)})"
            case Kind.gone:
                text += f" (was {was})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "check": self.check,
            "target": self.target,
            "status": self.status.name,
            "previous": self.previous.name,
            "since": self.since.isoformat(),
            "previous_since": self.previous_since.isoformat() if self.previous_since else None,
            "message": self.message,
        }


def _when(t: datetime | None) -> str:
    return t.isoformat(timespec="seconds") if t else "?"


# --- pure: what changed ----------------------------------------------------------------------


def transitions(
    previous: Mapping[str, CheckState],
    checks: Sequence[Check],
    now: datetime,
    *,
    repeat: timedelta | None = None,
    complete: bool = True,
) -> tuple[list[Transition], ChannelState]:
    """What to tell a channel that knows `previous`, and what it knows once told.

    A check the channel never saw counts as OK before. Nothing is reported for a check whose
    status did not change, unless it is not OK and `repeat` has passed since it was last
    notified. With `complete` False (the checks could not run), checks missing from `checks`
    keep their state; otherwise a missing check that was not OK is reported `gone` (or, for
    the `health_run` pseudo-check, recovered: the checks run again).
    """
    found: list[Transition] = []
    state: ChannelState = {}
    for c in checks:
        k = key(c.check, c.target)
        if k in state:
            continue
        prev = previous.get(k)
        before = prev.status if prev else Status.OK
        before_since = prev.since if prev else None
        if c.status != before:
            if c.status == Status.OK:
                kind = Kind.recovery
            elif before == Status.OK:
                kind = Kind.problem
            else:
                kind = Kind.changed
            found.append(
                Transition(kind, c.check, c.target, c.status, before, now, before_since, c.message)
            )
            state[k] = CheckState(c.check, c.target, c.status, now, now)
        elif prev is None:  # first seen, and OK: nothing to say
            state[k] = CheckState(c.check, c.target, c.status, now)
        elif c.status != Status.OK and repeat is not None and _due(prev, now, repeat):
            found.append(
                Transition(
                    Kind.repeat,
                    c.check,
                    c.target,
                    c.status,
                    before,
                    prev.since,
                    prev.since,
                    c.message,
                )
            )
            state[k] = replace(prev, last_notified=now)
        else:
            state[k] = prev
    for k, prev in previous.items():
        if k in state:
            continue
        if not complete:
            state[k] = prev
        elif prev.status != Status.OK:
            if prev.check == RUN_CHECK:
                kind, message = Kind.recovery, "the checks run again"
            else:
                kind, message = Kind.gone, "no longer checked (removed from the access file?)"
            found.append(
                Transition(
                    kind, prev.check, prev.target, Status.OK, prev.status, now, prev.since, message
                )
            )
    return found, state


def _due(prev: CheckState, now: datetime, repeat: timedelta) -> bool:
    return now - (prev.last_notified or prev.since) >= repeat


# --- pure: the message -----------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    subject: str
    body: str


def compose(
    changes: Sequence[Transition], report: Report, host: str, prefix: str = "DSG HEALTH"
) -> Message:
    """Subject `<prefix> <STATUS> on <host>: <check> <target> <STATUS>; ...`; the body has
    every changed check's line and the summary (check messages only: no file contents)."""
    head = f"{prefix} {report.status.name} on {host}: "
    parts = [t.short() for t in changes]
    subject = head + "; ".join(parts)
    if len(subject) > SUBJECT_MAX:
        for n in range(len(parts) - 1, 0, -1):
            subject = head + "; ".join(parts[:n]) + f"; and {len(parts) - n} more"
            if len(subject) <= SUBJECT_MAX:
                break
        else:
            subject = head + f"{len(parts)} changes"
    body = "\n".join(
        [
            f"dsg admin health on {host}, {_when(report.now)}: {report.status.name}",
            "",
            "Changed since the last alert:" if len(changes) != 1 else "Changed:",
            *(f"  {t.line()}" for t in changes),
            "",
            report.summary(),
            "",
            RUNBOOK,
            "",
        ]
    )
    return Message(subject, body)


def webhook_payload(
    changes: Sequence[Transition], report: Report, host: str, message: Message
) -> dict[str, Any]:
    """The JSON document a webhook receives. `text` suits Slack/Mattermost-style hooks."""
    return {
        "source": "dsg admin health",
        "host": host,
        "status": report.status.name,
        "exit_code": int(report.status),
        "now": report.now.isoformat(),
        "subject": message.subject,
        "summary": report.summary(),
        "changes": [t.to_dict() for t in changes],
        "text": f"{message.subject}\n\n{message.body}",
    }


def email_message(cfg: EmailAlerts, message: Message, host: str, status: Status) -> EmailMessage:
    m = EmailMessage()
    m["From"] = cfg.from_ or f"dsg@{host}"
    m["To"] = ", ".join(cfg.to)
    m["Subject"] = message.subject
    m["Date"] = formatdate(localtime=True)
    m["Message-ID"] = make_msgid("dsg-health", domain=host)
    m["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    m["X-DSG-Health-Status"] = status.name
    plain = message.body.isascii() and all(len(x) <= 998 for x in message.body.splitlines())
    # Readable as it is when it can be (7bit); else the library picks quoted-printable/base64.
    m.set_content(message.body, cte="7bit" if plain else None)
    return m


def redact_url(url: str) -> str:
    """A webhook URL to show: scheme and host only (hook URLs often carry a secret path)."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return shown + ("/…" if parts.path.strip("/") or parts.query else "/")


def destination(channel: str, cfg: EmailAlerts | WebhookAlerts) -> str:
    if isinstance(cfg, EmailAlerts):
        via = f"SMTP {cfg.smtp_host}:{cfg.smtp_port}" if cfg.smtp_host else cfg.sendmail
        return f"{', '.join(cfg.to)} via {via}"
    return f"POST {redact_url(cfg.url)}"


# --- delivery (I/O) --------------------------------------------------------------------------


class DeliveryError(Exception):
    """A channel could not deliver; the message is safe to show (no secrets)."""


def _why(e: BaseException) -> str:
    if isinstance(e, smtplib.SMTPResponseException):
        text = e.smtp_error.decode(errors="replace") if isinstance(e.smtp_error, bytes) else ""
        return f"{e.smtp_code} {text}".strip()
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        return "refused " + ", ".join(
            f"{rcpt} ({code})" for rcpt, (code, _) in e.recipients.items()
        )
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower() if e.strerror[:1].isupper() else e.strerror
    return str(e) or type(e).__name__


def send_sendmail(path: str, message: EmailMessage, timeout: float) -> None:
    """Pipe the message to the local MTA: recipients from the headers (-t), a line with a
    single dot is not the end (-oi)."""
    try:
        proc = subprocess.run(
            [path, "-t", "-oi"],
            input=message.as_bytes(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise DeliveryError(
            f"{path} does not exist (install a local MTA, or set smtp_host)"
        ) from None
    except subprocess.TimeoutExpired:
        raise DeliveryError(f"{path} did not finish within {timeout:g}s") from None
    except OSError as e:
        raise DeliveryError(f"cannot run {path}: {_why(e)}") from None
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        detail = f": {said[-1][:300]}" if said else ""
        raise DeliveryError(f"{path} -t -oi exited with status {proc.returncode}{detail}")


def send_smtp(host: str, port: int, message: EmailMessage, timeout: float, helo: str) -> None:
    try:
        with smtplib.SMTP(host, port, timeout=timeout, local_hostname=helo) as smtp:
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as e:
        raise DeliveryError(f"SMTP {host}:{port}: {_why(e)}") from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST would arrive as a GET without the payload: fail instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post_webhook(cfg: WebhookAlerts, payload: Mapping[str, Any]) -> int:
    """POST the JSON payload; any 2xx is success (redirects are not followed). Returns the
    HTTP status. Proxies come from the environment (http_proxy, https_proxy, no_proxy)."""
    headers = {"Content-Type": "application/json", "User-Agent": f"dsg/{__version__}"}
    headers.update(cfg.headers)
    req = urllib.request.Request(cfg.url, data=orjson.dumps(payload), headers=headers)
    shown = redact_url(cfg.url)
    try:
        opener = urllib.request.build_opener(_NoRedirects)
        with opener.open(req, timeout=cfg.timeout_seconds) as resp:
            resp.read(65536)
            return int(resp.status)
    except urllib.error.HTTPError as e:
        moved = " (redirects are not followed: give the final URL)" if 300 <= e.code < 400 else ""
        raise DeliveryError(f"POST {shown}: HTTP {e.code} {e.reason}{moved}") from None
    except urllib.error.URLError as e:
        reason = e.reason if isinstance(e.reason, BaseException) else OSError(str(e.reason))
        raise DeliveryError(f"POST {shown}: {_why(reason)}") from None
    except (OSError, http.client.HTTPException) as e:
        raise DeliveryError(f"POST {shown}: {_why(e)}") from None


def deliver(
    cfg: EmailAlerts | WebhookAlerts,
    changes: Sequence[Transition],
    report: Report,
    host: str,
    message: Message,
) -> None:
    if isinstance(cfg, EmailAlerts):
        try:
            mail = email_message(cfg, message, host, report.status)
        except ValueError as e:  # e.g. a line break in a header from a target's name
            raise DeliveryError(f"cannot build the email: {e}") from None
        if cfg.smtp_host:
            send_smtp(cfg.smtp_host, cfg.smtp_port, mail, cfg.timeout_seconds, host)
        else:
            assert cfg.sendmail is not None
            send_sendmail(cfg.sendmail, mail, cfg.timeout_seconds)
    else:
        post_webhook(cfg, webhook_payload(changes, report, host, message))


# --- the state file --------------------------------------------------------------------------


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    check: str
    target: str
    status: Literal["OK", "WARNING", "CRITICAL", "UNKNOWN"]
    since: AwareDatetime
    last_notified: AwareDatetime | None = None


class _StateFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: Literal[1]
    channels: dict[str, dict[str, _Entry]]


class StateError(Exception):
    pass


def read_state(path: Path) -> tuple[dict[str, ChannelState], str | None]:
    """(state per channel, a note when the file was unusable and is started afresh).

    A missing file is an empty state; a file that cannot be read raises StateError.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, None
    except OSError as e:
        raise StateError(f"cannot read the alert state {path}: {_why(e)}") from None
    try:
        doc = _StateFile.model_validate(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValidationError) as e:
        first = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        return {}, (
            f"the alert state {path} was not valid ({first}): started afresh, so current "
            "problems are sent again"
        )
    out: dict[str, ChannelState] = {}
    for channel, entries in doc.channels.items():
        out[channel] = {
            k: CheckState(e.check, e.target, Status[e.status], e.since, e.last_notified)
            for k, e in entries.items()
        }
    return out, None


def dump_state(state: Mapping[str, ChannelState], updated: datetime) -> str:
    doc = {
        "version": 1,
        "updated": updated.isoformat(),
        "channels": {
            channel: {
                k: {
                    "check": s.check,
                    "target": s.target,
                    "status": s.status.name,
                    "since": s.since.isoformat(),
                    "last_notified": s.last_notified.isoformat() if s.last_notified else None,
                }
                for k, s in sorted(entries.items())
            }
            for channel, entries in sorted(state.items())
        },
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One alert run at a time per state file (a lock file beside it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StateError(f"cannot lock the alert state {path}: {_why(e)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- one alert run ---------------------------------------------------------------------------


@dataclass
class Delivery:
    channel: str
    destination: str
    result: Literal["sent", "failed", "nothing"]  # nothing: no change to report
    changes: list[Transition] = field(default_factory=list)
    subject: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "destination": self.destination,
            "result": self.result,
            "subject": self.subject,
            "changes": [t.to_dict() for t in self.changes],
            "error": self.error,
        }

    def line(self) -> str:
        head = f"{'ALERT':<8} {self.channel:<13} {self.destination}: "
        if self.result == "sent":
            n = len(self.changes)
            return head + f"sent {n} change{'s' if n != 1 else ''}: {self.subject}"
        if self.result == "failed":
            return head + f"NOT SENT: {self.error}"
        return head + "nothing changed since the last alert"


@dataclass
class Outcome:
    deliveries: list[Delivery] = field(default_factory=list)
    problems: list[Check] = field(default_factory=list)  # `alerts` checks, UNKNOWN


def host_name(cfg: AlertsConfig) -> str:
    return cfg.host or socket.gethostname()


def run_alerts(cfg: AlertsConfig, report: Report, *, complete: bool = True) -> Outcome:
    """Send each configured channel what changed since it was last told; advance a channel's
    state only when its delivery succeeded. Never raises for delivery or state trouble:
    that comes back as `problems` (UNKNOWN checks named `alerts`)."""
    host = host_name(cfg)
    path = Path(cfg.state_file)
    repeat = timedelta(hours=cfg.repeat_hours) if cfg.repeat_hours is not None else None
    channels: dict[str, EmailAlerts | WebhookAlerts] = {
        name: c for name in CHANNELS if (c := getattr(cfg, name)) is not None
    }
    outcome = Outcome()
    try:
        with locked(path):
            state, note = read_state(path)
            if note:
                outcome.problems.append(Check(ALERTS_CHECK, "state", Status.UNKNOWN, note))
            after: dict[str, ChannelState] = {}
            for name, ch in channels.items():
                previous = state.get(name, {})
                changes, known = transitions(
                    previous, report.checks, report.now, repeat=repeat, complete=complete
                )
                dest = destination(name, ch)
                if not changes:
                    after[name] = known
                    outcome.deliveries.append(Delivery(name, dest, "nothing"))
                    continue
                prefix = ch.subject_prefix if isinstance(ch, EmailAlerts) else "DSG HEALTH"
                message = compose(changes, report, host, prefix)
                try:
                    deliver(ch, changes, report, host, message)
                except DeliveryError as e:
                    if name in state:
                        after[name] = state[name]  # not advanced: the next run sends again
                    outcome.deliveries.append(
                        Delivery(name, dest, "failed", changes, message.subject, str(e))
                    )
                    outcome.problems.append(
                        Check(
                            ALERTS_CHECK,
                            name,
                            Status.UNKNOWN,
                            f"not sent: {e} (the next --alert run tries again)",
                        )
                    )
                    continue
                after[name] = known
                outcome.deliveries.append(Delivery(name, dest, "sent", changes, message.subject))
            if after != state or note:
                try:
                    write_atomic(path, dump_state(after, report.now))
                except OSError as e:
                    outcome.problems.append(
                        Check(
                            ALERTS_CHECK,
                            "state",
                            Status.UNKNOWN,
                            f"cannot write the alert state {path}: {_why(e)} (what was sent "
                            "now is sent again by the next run)",
                        )
                    )
    except StateError as e:
        # Without the state every run would send everything again: send nothing, say so.
        outcome.deliveries = [
            Delivery(name, destination(name, ch), "failed", error=str(e))
            for name, ch in channels.items()
        ]
        outcome.problems.append(
            Check(ALERTS_CHECK, "state", Status.UNKNOWN, f"{e}: no alert was sent")
        )
    return outcome


def failed_run(error: str, host: str, now: datetime) -> Report:
    """The report of a run whose checks could not run (alerted as `health_run`)."""
    return Report([Check(RUN_CHECK, host, Status.UNKNOWN, f"the checks cannot run: {error}")], now)
