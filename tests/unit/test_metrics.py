"""Pure parts of `dsg admin health` and `dsg admin metrics`: threshold evaluation, pool
health mapping, `zpool status` scrub parsing, the config model, Prometheus rendering
(checked line by line against the text exposition format) and the atomic write."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dsg.admin.health import (
    Check,
    HealthConfig,
    Report,
    ScrubInfo,
    Status,
    evaluate_pool,
    evaluate_scrub,
    evaluate_snapshot_age,
    load_health_config,
    parse_scrub,
    parse_time,
    pool_health_status,
    threshold,
    worst,
)
from dsg.admin.metrics import Family, format_value, render, write_atomic
from dsg.core.errors import ConfigError
from dsg.zfs.ops import PoolStatus

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

# --- thresholds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, Status.OK), (79.9, Status.OK), (80, Status.WARNING), (89, Status.WARNING),
     (90, Status.CRITICAL), (100, Status.CRITICAL)],
)  # fmt: skip
def test_threshold(value: float, expected: Status) -> None:
    assert threshold(value, 80, 90) is expected


def test_threshold_with_a_limit_missing() -> None:
    assert threshold(1e9, None, None) is Status.OK
    assert threshold(95, 80, None) is Status.WARNING
    assert threshold(95, None, 90) is Status.CRITICAL


def test_worst_ranks_unknown_between_ok_and_warning() -> None:
    assert worst([]) is Status.OK
    assert worst([Status.OK, Status.UNKNOWN]) is Status.UNKNOWN
    assert worst([Status.UNKNOWN, Status.WARNING]) is Status.WARNING
    assert worst([Status.WARNING, Status.CRITICAL, Status.UNKNOWN]) is Status.CRITICAL


@pytest.mark.parametrize(
    ("health", "expected"),
    [("ONLINE", Status.OK), ("DEGRADED", Status.WARNING), ("FAULTED", Status.CRITICAL),
     ("UNAVAIL", Status.CRITICAL), ("SUSPENDED", Status.CRITICAL), ("online", Status.OK)],
)  # fmt: skip
def test_pool_health_status(health: str, expected: Status) -> None:
    assert pool_health_status(health) is expected


def _pool(cap: int, health: str = "ONLINE") -> PoolStatus:
    return PoolStatus("tank", 1000, cap * 10, 1000 - cap * 10, cap, health, True)


def test_evaluate_pool() -> None:
    cfg = HealthConfig()
    h, c = evaluate_pool(_pool(85, "DEGRADED"), cfg)
    assert (h.check, h.status) == ("pool_health", Status.WARNING)
    assert (c.check, c.status, c.value, c.warn, c.crit) == (
        "pool_capacity", Status.WARNING, 85, 80, 90,
    )  # fmt: skip
    assert "85% used" in c.message
    assert evaluate_pool(_pool(91), cfg)[1].status is Status.CRITICAL
    assert evaluate_pool(_pool(10), cfg)[1].status is Status.OK


def test_snapshot_age() -> None:
    cfg = HealthConfig(snapshot_age_warn_hours=24, snapshot_age_crit_hours=48)
    age = lambda h: evaluate_snapshot_age("p", "s3", NOW - timedelta(hours=h), NOW, cfg)  # noqa: E731
    assert age(1).status is Status.OK
    assert age(30).status is Status.WARNING
    assert age(49).status is Status.CRITICAL
    assert age(30).value == 30.0
    assert "s3 is 30.0 hours old" in age(30).message
    assert evaluate_snapshot_age("p", None, None, NOW, cfg).status is Status.OK


# --- zpool status scrub line -------------------------------------------------------------

FUSE_DONE = """  pool: dsglab
 state: ONLINE
 scrub: scrub completed after 0h0m with 0 errors on Sun Nov 29 21:23:08 2026
config:
"""
FUSE_NONE = "  pool: dsglab\n state: ONLINE\n scrub: none requested\nconfig:\n"
FUSE_RUNNING = " scrub: scrub in progress for 0h0m, 10.00% done, 0h1m to go\n"
ZOL_DONE = "  pool: tank\n state: ONLINE\n  scan: scrub repaired 0B in 00:00:01 with 0 errors on Sun Nov  1 00:24:02 2026\n"
ZOL_RUNNING = "  scan: scrub in progress since Sun Nov  1 00:24:02 2026\n"
ZOL_RESILVER = "  scan: resilvered 1.2G in 00:10:00 with 0 errors on Sun Nov  1 00:24:02 2026\n"
ZOL_CANCELED = "  scan: scrub canceled on Sun Nov  1 00:24:02 2026\n"


def test_parse_scrub_formats() -> None:
    done = parse_scrub(FUSE_DONE, tz=UTC)
    assert done.state == "completed"
    assert done.finished == datetime(2026, 11, 29, 21, 23, 8, tzinfo=UTC)
    zol = parse_scrub(ZOL_DONE, tz=UTC)
    assert (zol.state, zol.finished) == ("completed", datetime(2026, 11, 1, 0, 24, 2, tzinfo=UTC))
    assert parse_scrub(FUSE_NONE).state == "none"
    assert parse_scrub(FUSE_RUNNING).state == "in_progress"
    assert parse_scrub(ZOL_RUNNING).state == "in_progress"
    assert parse_scrub(ZOL_RESILVER).state == "resilver"
    assert parse_scrub(ZOL_CANCELED).state == "canceled"
    assert parse_scrub("garbage").state == "unknown"


def test_parse_scrub_reads_local_time_by_default() -> None:
    info = parse_scrub(FUSE_DONE)
    assert info.finished is not None and info.finished.tzinfo is not None


def test_evaluate_scrub() -> None:
    cfg = HealthConfig(scrub_age_warn_days=35, scrub_age_crit_days=60)
    done = ScrubInfo("completed", NOW - timedelta(days=40), "...")
    assert evaluate_scrub("tank", done, NOW, cfg, zfs_fuse=False).status is Status.WARNING
    old = ScrubInfo("completed", NOW - timedelta(days=61), "...")
    assert evaluate_scrub("tank", old, NOW, cfg, zfs_fuse=True).status is Status.CRITICAL
    fresh = ScrubInfo("completed", NOW - timedelta(days=1), "...")
    assert evaluate_scrub("tank", fresh, NOW, cfg, zfs_fuse=False).status is Status.OK
    none = ScrubInfo("none", None, "none requested")
    fuse = evaluate_scrub("tank", none, NOW, cfg, zfs_fuse=True)
    assert fuse.status is Status.UNKNOWN and "zfs-fuse" in fuse.message
    assert evaluate_scrub("tank", none, NOW, cfg, zfs_fuse=False).status is Status.CRITICAL
    running = ScrubInfo("in_progress", None, "scrub in progress")
    assert evaluate_scrub("tank", running, NOW, cfg, zfs_fuse=False).status is Status.OK
    odd = ScrubInfo("resilver", None, "resilvered")
    assert evaluate_scrub("tank", odd, NOW, cfg, zfs_fuse=False).status is Status.UNKNOWN


def test_report_summary_and_dict() -> None:
    rep = Report(
        [
            Check("pool_health", "tank", Status.OK, "pool is ONLINE"),
            Check("pool_capacity", "tank", Status.CRITICAL, "95% used", 95, 80, 90),
            Check("stale_lock", "p", Status.WARNING, "stale"),
        ],
        NOW,
    )
    assert rep.status is Status.CRITICAL
    first = rep.summary()
    assert first.startswith("DSG HEALTH CRITICAL - 3 checks: 1 critical, 1 warning, 1 ok")
    assert first.index("pool_capacity") < first.index("stale_lock")  # worst first
    doc = rep.to_dict()
    assert (doc["status"], doc["exit_code"], len(doc["checks"])) == ("CRITICAL", 2, 3)
    assert "\n" not in first


def test_parse_time() -> None:
    assert parse_time("2026-11-29T12:00:00Z") == NOW
    assert parse_time("2026-11-29T12:00:00") == NOW
    assert parse_time("2026-11-29T13:00:00+01:00") == NOW
    with pytest.raises(ValueError):
        parse_time("yesterday")


# --- config ------------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = HealthConfig()
    assert (cfg.capacity_warn_percent, cfg.capacity_crit_percent) == (80, 90)
    assert (cfg.snapshot_age_warn_hours, cfg.snapshot_age_crit_hours) == (168, 720)
    assert (cfg.scrub_age_warn_days, cfg.scrub_age_crit_days) == (35, 60)
    assert cfg.stale_locks and cfg.pools == []


def test_config_file(tmp_path: Path) -> None:
    f = tmp_path / "health.yml"
    f.write_text(
        "capacity_warn_percent: 50\nscrub_age_warn_days: null\nscrub_age_crit_days: null\n"
    )
    cfg = load_health_config(f)
    assert cfg.capacity_warn_percent == 50 and cfg.scrub_age_crit_days is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("capacity_warn_percent: 95\n", "above capacity_crit_percent"),
        ("capacity_crit_percent: 120\n", "capacity_crit_percent"),
        ("snapshot_age_hours: 3\n", "unknown key"),
        ("scrub_age_warn_days: -1\n", "scrub_age_warn_days"),
        ("[1, 2]\n", "mapping"),
    ],
)
def test_config_errors(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "health.yml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_health_config(f)


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_health_config(tmp_path / "nope.yml")


# --- Prometheus text format --------------------------------------------------------------

# https://prometheus.io/docs/instrumenting/exposition_formats/ (text format 0.0.4)
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)"
SAMPLE_RE = re.compile(rf"(?P<name>{NAME})(?:\{{(?:{LABEL}(?:,{LABEL})*)?\}})? {VALUE}(?: -?\d+)?")
HELP_RE = re.compile(rf"# HELP (?P<name>{NAME}) (?:[^\\\n]|\\[\\n])*")
TYPE_RE = re.compile(rf"# TYPE (?P<name>{NAME}) (?:counter|gauge|histogram|summary|untyped)")


def assert_valid_exposition(text: str) -> list[str]:
    """Every line valid; HELP/TYPE precede their samples; one block per metric name."""
    assert text.endswith("\n")
    names: list[str] = []
    current = None
    for line in text.splitlines():
        if m := HELP_RE.fullmatch(line):
            assert m["name"] not in names, f"metric {m['name']} appears twice"
            names.append(m["name"])
            current = m["name"]
        elif m := TYPE_RE.fullmatch(line):
            assert m["name"] == current, line
        elif m := SAMPLE_RE.fullmatch(line):
            assert m["name"] == current, f"sample outside its block: {line}"
        else:
            raise AssertionError(f"not a valid exposition line: {line!r}")
    return names


def test_render_is_valid_exposition() -> None:
    fam = Family("dsg_project_bytes", "Bytes of data\nin the head \\ snapshot")
    fam.add(1200, project="killings")
    fam.add(0, project='we"ird\\name\nx')
    ratio = Family("dsg_pool_capacity_ratio", "ratio")
    ratio.add(0.93, pool="tank")
    ts = Family("dsg_metrics_generated_timestamp_seconds", "when")
    ts.add(1795987494.603)
    empty = Family("dsg_project_files", "no samples yet")
    total = Family("dsg_project_snapshots_total", "count", "counter")
    total.add(12, project="killings")
    text = render([fam, ratio, ts, empty, total])
    names = assert_valid_exposition(text)
    assert names == [
        "dsg_project_bytes",
        "dsg_pool_capacity_ratio",
        "dsg_metrics_generated_timestamp_seconds",
        "dsg_project_files",
        "dsg_project_snapshots_total",
    ]
    assert 'dsg_project_bytes{project="killings"} 1200\n' in text
    assert 'dsg_project_bytes{project="we\\"ird\\\\name\\nx"} 0\n' in text
    assert "# HELP dsg_project_bytes Bytes of data\\nin the head \\\\ snapshot\n" in text
    assert 'dsg_pool_capacity_ratio{pool="tank"} 0.93\n' in text
    assert "dsg_metrics_generated_timestamp_seconds 1795987494.603\n" in text
    assert "# TYPE dsg_project_snapshots_total counter\n" in text


@pytest.mark.parametrize(
    ("value", "text"),
    [(3, "3"), (3.0, "3"), (0.5, "0.5"), (float("nan"), "NaN"), (float("inf"), "+Inf"),
     (float("-inf"), "-Inf"), (2**60, repr(float(2**60)))],
)  # fmt: skip
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text
    assert re.fullmatch(VALUE, text)


@pytest.mark.parametrize(
    "family",
    [Family("dsg-bad", "x"), Family("1dsg", "x"), Family("dsg_ok", "x", "histogramish")],
)
def test_render_refuses_bad_metric(family: Family) -> None:
    with pytest.raises(ValueError):
        render([family])


@pytest.mark.parametrize("label", ["bad-label", "__reserved", "1x"])
def test_render_refuses_bad_label(label: str) -> None:
    fam = Family("dsg_ok", "x")
    fam.add(1, **{label: "v"})
    with pytest.raises(ValueError):
        render([fam])


def test_render_refuses_repeated_metric() -> None:
    with pytest.raises(ValueError, match="repeated"):
        render([Family("dsg_a", "x"), Family("dsg_a", "y")])


def test_write_atomic(tmp_path: Path) -> None:
    target = tmp_path / "dsg.prom"
    target.write_text("old\n")
    inode = target.stat().st_ino
    write_atomic(target, "dsg_x 1\n")
    assert target.read_text() == "dsg_x 1\n"
    assert target.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert os.listdir(tmp_path) == ["dsg.prom"]  # no temporary file left


def test_write_atomic_failure_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "dsg.prom"
    target.write_text("old\n")
    (tmp_path / "sub").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "sub", "x\n")  # rename onto a directory fails
    assert target.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["dsg.prom", "sub"]


def test_transaction_metrics_from_audit_records() -> None:
    from dsg.admin.metrics import render, transaction_families

    recs = [
        {"action": "session.open", "project": "p", "login": "a"},
        {"action": "sync.commit", "project": "p", "bytes_in": 100, "files_put": 2, "deleted": 1},
        {"action": "session.close", "project": "p", "seconds": 1.5, "commits": ["s2"],
         "bytes_read": 10, "ts": "2026-11-29T10:00:00.000Z"},
        {"action": "sync.abort", "project": "p"},
        {"action": "session.close", "project": "p", "seconds": 9.0, "bytes_read": 5},
        {"action": "access.denied", "project": "q", "request": "hello"},
        {"action": "sync.commit", "project": "q", "bytes_in": 7, "files_put": 1},
        {"action": "session.list"},
    ]  # fmt: skip
    text = render(transaction_families(recs))
    assert_valid_exposition(text)
    for line in (
        'dsg_transactions_total{project="p",outcome="committed"} 1',
        'dsg_transactions_total{project="p",outcome="aborted"} 1',
        'dsg_transaction_bytes_total{project="p",direction="in"} 100',
        'dsg_transaction_bytes_total{project="p",direction="out"} 15',
        'dsg_transaction_files_changed_total{project="p"} 3',
        'dsg_access_denied_total{project="q"} 1',
        'dsg_last_transaction_seconds{project="p"} 1.5',  # the session without commits is not it
        'dsg_last_transaction_timestamp_seconds{project="p"} 1795946400',
    ):
        assert line in text.splitlines(), (line, text)


ZFS_FUSE_STATUS = """  pool: tank
 state: ONLINE
 scrub: scrub completed after 0h0m with 2 errors on Sun Nov 29 22:40:01 2026
config:

\tNAME        STATE     READ WRITE CKSUM
\ttank        ONLINE       0     0     0

errors: 3 data errors, use '-v' for a list
"""
OPENZFS_STATUS = """  pool: tank
 state: ONLINE
  scan: scrub repaired 0B in 00:00:01 with 0 errors on Sun Nov 29 22:40:01 2026
config:

errors: No known data errors
"""


def test_pool_status_parsing_for_scrub_and_data_errors() -> None:
    from dsg.admin.metrics import data_errors, scan_errors

    assert (scan_errors(ZFS_FUSE_STATUS), data_errors(ZFS_FUSE_STATUS)) == (2, 3)
    assert (scan_errors(OPENZFS_STATUS), data_errors(OPENZFS_STATUS)) == (0, 0)
    never = " scrub: none requested\nerrors: No known data errors\n"
    assert (scan_errors(never), data_errors(never)) == (None, 0)
    assert data_errors("no such line") is None


def test_autosnap_freshness_per_retention_class() -> None:
    from dsg.admin.metrics import autosnap_freshness

    snaps = [
        ("s1", 50),
        ("autosnap_2026-11-29_10:00:00_hourly", 100),
        ("autosnap_2026-11-29_11:00:00_hourly", 200),
        ("autosnap_2026-11-29_00:00:00_daily", 150),
        ("autosnap_bogus_daily", 999),  # not sanoid's name format
        ("s2", 300),
    ]
    assert autosnap_freshness(snaps) == {"hourly": 200, "daily": 150}


def test_the_nagios_line_carries_perfdata() -> None:
    report = Report(
        [
            Check("pool_health", "tank", Status.OK, "pool is ONLINE"),
            Check("pool_capacity", "tank", Status.CRITICAL, "95% used", 95, 80, 90),
            Check("snapshot_age", "it's=x", Status.OK, "fresh", 3600.5, 86400, None),
        ]
    )
    line = report.plugin_line()
    summary, _, perf = line.partition(" | ")
    assert summary == report.summary() and "|" not in summary
    assert re.findall(r"'(?:[^']|'')*'=\S*", perf) == [
        "'pool_capacity tank'=95;80;90",
        "'snapshot_age it''s_x'=3600.5;86400",
    ]
    assert report.to_dict()["perfdata"] == perf
    assert Report([Check("pool_health", "tank", Status.OK, "ok")]).plugin_line().count("|") == 0
