"""Pure parts of `dsg admin health --alert`: transitions between what a channel was told and
the current report, repeats, the message, the webhook payload and email headers, the state
file (round trip, corrupt file, atomic write) and the `alerts:` configuration."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsg.admin.alerts import (
    RUN_CHECK,
    SUBJECT_MAX,
    CheckState,
    compose,
    dump_state,
    email_message,
    failed_run,
    key,
    read_state,
    redact_url,
    transitions,
    webhook_payload,
)
from dsg.admin.health import (
    DEFAULT_SENDMAIL,
    EmailAlerts,
    HealthConfig,
    Report,
    Status,
    load_health_config,
)
from dsg.admin.health import Check as C
from dsg.core.errors import ConfigError

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
OK, WARN, CRIT, UNK = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN


def cap(status: Status, pool: str = "tank") -> C:
    return C("pool_capacity", pool, status, f"{status.name.lower()} capacity")


def lock(status: Status, project: str = "killings") -> C:
    return C("stale_lock", project, status, f"lock {status.name.lower()}")


def kinds(changes) -> list[tuple[str, str, str, str]]:
    return [(t.kind.value, t.check, t.previous.name, t.status.name) for t in changes]


# --- transitions ---------------------------------------------------------------------------


def test_first_run_reports_problems_only() -> None:
    changes, state = transitions({}, [cap(WARN), lock(OK)], NOW)
    assert kinds(changes) == [("problem", "pool_capacity", "OK", "WARNING")]
    assert changes[0].previous_since is None and changes[0].since == NOW
    assert state[key("pool_capacity", "tank")] == CheckState(
        "pool_capacity", "tank", WARN, NOW, NOW
    )
    assert state[key("stale_lock", "killings")] == CheckState("stale_lock", "killings", OK, NOW)


def test_no_change_reports_nothing_and_keeps_since() -> None:
    _, state = transitions({}, [cap(WARN), lock(OK)], NOW)
    changes, again = transitions(state, [cap(WARN), lock(OK)], NOW + 5 * HOUR)
    assert changes == [] and again == state


def test_severity_change_and_recovery() -> None:
    _, s1 = transitions({}, [cap(WARN)], NOW)
    changes, s2 = transitions(s1, [cap(CRIT)], NOW + HOUR)
    assert kinds(changes) == [("changed", "pool_capacity", "WARNING", "CRITICAL")]
    assert changes[0].previous_since == NOW and s2[key("pool_capacity", "tank")].since == NOW + HOUR
    assert "(was WARNING since 2026-11-29T12:00:00+00:00)" in changes[0].line()

    changes, s3 = transitions(s2, [cap(UNK)], NOW + 2 * HOUR)  # down in severity is news too
    assert kinds(changes) == [("changed", "pool_capacity", "CRITICAL", "UNKNOWN")]

    changes, s4 = transitions(s3, [cap(OK)], NOW + 3 * HOUR)
    assert kinds(changes) == [("recovery", "pool_capacity", "UNKNOWN", "OK")]
    assert changes[0].line().startswith("OK       pool_capacity tank: ok capacity (recovered;")
    assert s4[key("pool_capacity", "tank")].status == OK
    assert transitions(s4, [cap(OK)], NOW + 4 * HOUR)[0] == []


def test_repeat_when_due_and_never_with_null() -> None:
    _, s = transitions({}, [cap(CRIT), lock(OK)], NOW, repeat=24 * HOUR)
    assert transitions(s, [cap(CRIT), lock(OK)], NOW + 23 * HOUR, repeat=24 * HOUR)[0] == []
    changes, s2 = transitions(s, [cap(CRIT), lock(OK)], NOW + 24 * HOUR, repeat=24 * HOUR)
    assert kinds(changes) == [("repeat", "pool_capacity", "CRITICAL", "CRITICAL")]
    assert (
        changes[0].since == NOW and "(still; since 2026-11-29T12:00:00+00:00)" in changes[0].line()
    )
    st = s2[key("pool_capacity", "tank")]
    assert (st.since, st.last_notified) == (NOW, NOW + 24 * HOUR)
    # The next repeat counts from the last notice, not from the start.
    assert transitions(s2, [cap(CRIT)], NOW + 47 * HOUR, repeat=24 * HOUR)[0] == []
    assert len(transitions(s2, [cap(CRIT)], NOW + 48 * HOUR, repeat=24 * HOUR)[0]) == 1
    # null: never again; OK checks are never repeated.
    assert transitions(s, [cap(CRIT)], NOW + 1000 * HOUR, repeat=None)[0] == []


def test_a_check_that_disappears() -> None:
    _, s = transitions({}, [cap(WARN), lock(OK, "a"), lock(WARN, "b")], NOW)
    changes, s2 = transitions(s, [cap(WARN)], NOW + HOUR)
    assert kinds(changes) == [("gone", "stale_lock", "WARNING", "OK")]  # the OK one quietly
    assert changes[0].line().startswith("GONE     stale_lock    b: no longer checked")
    assert set(s2) == {key("pool_capacity", "tank")}


def test_a_run_that_could_not_check_keeps_the_others() -> None:
    _, s = transitions({}, [cap(WARN), lock(OK)], NOW)
    failed = failed_run("the repository host has no access file", "dsg1", NOW + HOUR)
    changes, s2 = transitions(s, failed.checks, failed.now, complete=False)
    assert kinds(changes) == [("problem", RUN_CHECK, "OK", "UNKNOWN")]
    assert s2[key("pool_capacity", "tank")] == s[key("pool_capacity", "tank")]
    # When the checks run again, the run check recovers (not "gone") and the rest is as it was.
    changes, _ = transitions(s2, [cap(WARN), lock(OK)], NOW + 2 * HOUR)
    assert kinds(changes) == [("recovery", RUN_CHECK, "UNKNOWN", "OK")]
    assert changes[0].message == "the checks run again"


# A model of one channel: what the receiver has been told (per check, OK when never told),
# driven through random reports and deliveries that fail at random.
statuses = st.sampled_from(list(Status))
names = st.sampled_from([("pool_capacity", "tank"), ("pool_health", "tank"),
                         ("snapshot_age", "a"), ("stale_lock", "a"), ("stale_lock", "b")])  # fmt: skip
reports = st.dictionaries(names, statuses, max_size=5)
steps = st.lists(st.tuples(reports, st.booleans(), st.integers(0, 3000)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_every_change_reaches_the_receiver_exactly_once(run) -> None:
    state: dict[str, CheckState] = {}
    told: dict[tuple[str, str], Status] = {}
    now = NOW
    for statuses_now, delivered, minutes in run:
        now += timedelta(minutes=minutes)
        checks = [C(c, t, s, "m") for (c, t), s in statuses_now.items()]
        changes, after = transitions(state, checks, now)
        for t in changes:  # every message is news to the receiver
            assert t.previous == told.get((t.check, t.target), OK) != t.status
        if not changes or delivered:
            for t in changes:
                told[(t.check, t.target)] = t.status
            state = after
            # The receiver now knows every current problem, and nothing stale.
            problems = {k: s for k, s in told.items() if s != OK}
            assert problems == {k: s for k, s in statuses_now.items() if s != OK}
            assert transitions(state, checks, now)[0] == []  # idempotent
        # else: delivery failed, state not advanced; the next step must still tell it


@given(reports, reports)
def test_nothing_is_reported_exactly_when_the_problems_are_the_same(a, b) -> None:
    _, state = transitions({}, [C(c, t, s, "m") for (c, t), s in a.items()], NOW)
    changes, _ = transitions(state, [C(c, t, s, "m") for (c, t), s in b.items()], NOW + HOUR)

    def bad(r):
        return {k: s for k, s in r.items() if s != OK}

    assert (changes == []) == (bad(a) == bad(b))


# --- the message ---------------------------------------------------------------------------


def report(*checks: C) -> Report:
    return Report(list(checks), NOW)


def test_subject_and_body() -> None:
    r = report(cap(CRIT), lock(WARN), C("snapshot_age", "killings", OK, "fresh"))
    _, s = transitions({}, [cap(WARN)], NOW - HOUR)
    changes, _ = transitions(s, r.checks, NOW)
    msg = compose(changes, r, "dsg1.hrdag.org")
    assert msg.subject == (
        "DSG HEALTH CRITICAL on dsg1.hrdag.org: pool_capacity tank CRITICAL (was WARNING); "
        "stale_lock killings WARNING"
    )
    lines = msg.body.splitlines()
    assert lines[0] == "dsg admin health on dsg1.hrdag.org, 2026-11-29T12:00:00+00:00: CRITICAL"
    assert (
        "  CRITICAL pool_capacity tank: critical capacity (was WARNING since 2026-11-29T11:00:00+00:00)"
        in lines
    )
    assert "  WARNING  stale_lock    killings: lock warning" in lines
    assert r.summary() in lines
    assert not any("snapshot_age" in x for x in lines if x != r.summary())  # unchanged: not listed
    assert "Alerts" in msg.body  # the runbook pointer


def test_long_subjects_are_cut_with_a_count() -> None:
    checks = [lock(CRIT, f"project-with-a-long-name-{i}") for i in range(30)]
    changes, _ = transitions({}, checks, NOW)
    msg = compose(changes, report(*checks), "dsg1", prefix="[dsg]")
    assert len(msg.subject) <= SUBJECT_MAX
    assert msg.subject.startswith("[dsg] CRITICAL on dsg1: stale_lock project-with-a-long-name-0 ")
    assert msg.subject.endswith(" more")
    assert msg.body.count("CRITICAL stale_lock") == 30  # the body has them all


def test_webhook_payload_is_json_with_the_changes() -> None:
    r = report(cap(CRIT))
    changes, _ = transitions({}, r.checks, NOW)
    msg = compose(changes, r, "dsg1")
    doc = orjson.loads(orjson.dumps(webhook_payload(changes, r, "dsg1", msg)))
    assert doc["host"] == "dsg1" and doc["status"] == "CRITICAL" and doc["exit_code"] == 2
    assert doc["subject"] == msg.subject and doc["text"].startswith(msg.subject + "\n\n")
    assert doc["changes"] == [
        {"kind": "problem", "check": "pool_capacity", "target": "tank", "status": "CRITICAL",
         "previous": "OK", "since": NOW.isoformat(), "previous_since": None,
         "message": "critical capacity"},
    ]  # fmt: skip


def test_email_headers() -> None:
    cfg = EmailAlerts(to=["ops@hrdag.org", "pat@hrdag.org"], subject_prefix="[dsg]")
    r = report(cap(WARN))
    changes, _ = transitions({}, r.checks, NOW)
    m = email_message(cfg, compose(changes, r, "dsg1", cfg.subject_prefix), "dsg1", r.status)
    parsed = email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
    assert parsed["To"] == "ops@hrdag.org, pat@hrdag.org"
    assert parsed["From"] == "dsg@dsg1"
    assert parsed["Subject"] == "[dsg] WARNING on dsg1: pool_capacity tank WARNING"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-DSG-Health-Status"] == "WARNING"
    assert "WARNING  pool_capacity tank: warning capacity" in parsed.get_content()


def test_redacted_webhook_url() -> None:
    assert (
        redact_url("https://hooks.example.org/services/T0/B0/secret")
        == "https://hooks.example.org/…"
    )
    assert redact_url("http://user:pw@127.0.0.1:8080/") == "http://127.0.0.1:8080/"
    assert redact_url("https://h.example.org?token=x") == "https://h.example.org/…"


# --- the state file ------------------------------------------------------------------------


def test_state_round_trip(tmp_path: Path) -> None:
    _, s = transitions({}, [cap(WARN), lock(OK)], NOW)
    path = tmp_path / "state.json"
    path.write_text(dump_state({"email": s, "webhook": {}}, NOW))
    assert read_state(path) == ({"email": s, "webhook": {}}, None)
    assert read_state(tmp_path / "none.json") == ({}, None)


@pytest.mark.parametrize("text", ["{", "[]", '{"version": 2, "channels": {}}',
                                  '{"version": 1, "channels": {"email": {"x": {"status": "BAD"}}}}',
                                  '{"version": 1, "channels": {"email": {"x": {"check": "c", "target": "t", '
                                  '"status": "OK", "since": "2026-11-29T12:00:00"}}}}'])  # fmt: skip
def test_a_corrupt_state_starts_afresh_and_says_so(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    state, note = read_state(path)
    assert state == {} and note is not None and "started afresh" in note and str(path) in note


# --- configuration -------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> HealthConfig:
    f = tmp_path / "health.yml"
    f.write_text(text)
    return load_health_config(f)


def test_alerts_config_defaults(tmp_path: Path) -> None:
    assert HealthConfig().alerts is None
    cfg = load(tmp_path, "alerts:\n  email:\n    to: [ops@hrdag.org]\n").alerts
    assert cfg is not None and cfg.email is not None and cfg.webhook is None
    assert cfg.state_file == "/var/lib/dsg/health-state.json" and cfg.repeat_hours == 24
    assert (cfg.email.transport, cfg.email.sendmail) == ("sendmail", DEFAULT_SENDMAIL)
    assert cfg.email.subject_prefix == "DSG HEALTH" and cfg.email.from_ is None

    cfg = load(
        tmp_path,
        "alerts:\n  repeat_hours: null\n  email:\n    to: [ops@hrdag.org]\n    from: dsg@hrdag.org\n"
        "    smtp_host: mail.hrdag.org\n    smtp_port: 587\n"
        "  webhook:\n    url: https://hooks.example.org/x\n    headers: {Authorization: Bearer t}\n",
    ).alerts
    assert cfg is not None and cfg.repeat_hours is None
    assert cfg.email is not None and cfg.email.transport == "smtp" and cfg.email.sendmail is None
    assert cfg.email.from_ == "dsg@hrdag.org" and cfg.email.smtp_port == 587
    assert cfg.webhook is not None and cfg.webhook.timeout_seconds == 10
    assert cfg.webhook.headers == {"Authorization": "Bearer t"}


@pytest.mark.parametrize(
    ("alerts", "needle"),
    [
        ("{}", "alerts (line 1): give email, webhook or both"),
        ("webhook: {url: 'ftp://h/x'}", "alerts.webhook.url (line 2): the scheme must be http or https (got 'ftp')"),
        ("webhook: {url: 'hooks.example.org/x'}", "alerts.webhook.url (line 2): the scheme must be http or https"),
        ("webhook: {url: 'https:///x'}", "alerts.webhook.url (line 2): not a URL with a host"),
        ("webhook: {url: 'http://h:99999/'}", "alerts.webhook.url (line 2): bad port"),
        ("webhook: {url: 'http://h/', timeout_seconds: 0}", "alerts.webhook.timeout_seconds"),
        ("webhook: {url: 'http://h/', headers: {'X Bad': v}}", "alerts.webhook.headers (line 2): not an HTTP header name"),
        ("webhook: {url: 'http://h/', method: PUT}", "alerts.webhook.method (line 2): unknown key"),
        ("email: {to: []}", "alerts.email.to (line 2): give at least one address"),
        ("email: {to: ops@hrdag.org}", "alerts.email.to"),
        ("email: {to: ['Ops <ops@hrdag.org>']}", "alerts.email.to (line 2): not an email address: 'Ops <ops@hrdag.org>'"),
        ("email: {to: [ops@hrdag.org], from: nobody}", "alerts.email.from (line 2): not an email address: 'nobody'"),
        ("email: {to: [a@b.org], sendmail: sendmail}", "alerts.email.sendmail (line 2): must be an absolute path"),
        ("email: {to: [a@b.org], sendmail: /usr/sbin/sendmail, smtp_host: m}", "give either sendmail"),
        ("email: {to: [a@b.org], smtp_port: 587}", "smtp_port needs smtp_host"),
        ("email: {to: [a@b.org], subject_prefix: \"a\\nBcc: x@y.org\"}", "alerts.email.subject_prefix (line 2): subject_prefix must be one line"),
        ("email: {to: [a@b.org]}\n  state_file: health-state.json", "alerts.state_file (line 3): must be an absolute file path"),
        ("email: {to: [a@b.org]}\n  repeat_hours: 0", "alerts.repeat_hours (line 3)"),
        ("email: {to: [a@b.org]}\n  slack: {}", "alerts.slack (line 3): unknown key"),
    ],
)  # fmt: skip
def test_alerts_config_errors_name_the_field(tmp_path: Path, alerts: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as e:
        load(tmp_path, f"alerts:\n  {alerts}\n")
    assert needle in e.value.message, e.value.message
