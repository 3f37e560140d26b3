"""Health checks for a repository host, with Nagios semantics (`dsg admin health`).

Every check yields OK, WARNING, CRITICAL or UNKNOWN (exit codes 0, 1, 2, 3); the command's
status is the worst of them, ranked CRITICAL > WARNING > UNKNOWN > OK (so a check that
cannot run never hides a real problem, and never passes for OK).

| check | per | OK / WARNING / CRITICAL | UNKNOWN when |
|---|---|---|---|
| `pool_health` | pool | ONLINE / DEGRADED / anything else | zpool fails, pool not found |
| `pool_capacity` | pool | below warn / at or above warn / at or above crit | same |
| `scrub_age` | pool | last completed scrub younger than warn / crit | no scrub time (zfs-fuse) |
| `snapshot_age` | project | newest @sN younger than warn / crit (hours) | repository unreadable |
| `stale_lock` | project | lock free or held / holder note left, no flock held | cannot open |
| `encryption` | zfs project | unencrypted or key loaded / - / key not loaded | zfs get fails |
| `replication` | project (and target) | copy lags less than warn / crit (hours) | zfs fails |

Replication is measured two ways. `backup_target` (the unnamed push target, on this host or
over SSH) compares the copy itself with the project. `replication_targets` measures every
other target, pushed or pulled, from this primary's own holds: each run that copies a
snapshot moves the target's hold (`dsg-backup-<name>`) to the newest snapshot the copy has
(a pulling backup host asks the primary's pull account to), so the primary sees how far
each target is behind without any credential for the backup hosts. A hold says what the
target confirmed, not that the copy is still there: the backup host's own metrics and
restore drills show that.

Thresholds come from a YAML file (:class:`HealthConfig`, defaults there; its `alerts:`
section, :class:`AlertsConfig`, says where `--alert` sends state changes: see alerts.py); the
projects and their pools from the access file (`/etc/dsg/access.yml`). The clock is injected
(`now`), so tests can age snapshots and scrubs without waiting. The pure parts (threshold
evaluation, `zpool status` parsing) are separate functions; the I/O parts catch their own
failures and turn them into UNKNOWN (or CRITICAL for a repository whose history is broken).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dsg.backends.base import LockOwner, Repository
from dsg.backends.registry import open_local
from dsg.core.errors import ConfigError, DsgError, RepositoryError, RepositoryNotFound
from dsg.core.manifest import snap_number
from dsg.fs.yamlfile import explain, load_yaml
from dsg.server.access import AccessFile, ProjectAccess
from dsg.zfs.ops import (
    KeyState,
    PoolStatus,
    Zfs,
    ZfsError,
    ZfsUnsupported,
    check_dataset_name,
    check_snapshot_name,
)

DEFAULT_HEALTH_CONFIG = Path("/etc/dsg/health.yml")


class Status(IntEnum):
    """Nagios plugin states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


# How bad a state is, for "the worst of": UNKNOWN ranks above OK and below WARNING.
SEVERITY = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=SEVERITY.__getitem__, default=Status.OK)


# --- configuration ---------------------------------------------------------------------------

DEFAULT_STATE_FILE = "/var/lib/dsg/health-state.json"
DEFAULT_SENDMAIL = "/usr/sbin/sendmail"
_ADDRESS = re.compile(r"[^@\s<>,;\"()\[\]\\]+@[^@\s<>,;\"()\[\]\\.][^@\s<>,;\"()\[\]\\]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


def _one_line(value: str, what: str) -> str:
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"{what} must be one line")
    return value


def _address(value: str) -> str:
    value = value.strip()
    if not _ADDRESS.fullmatch(value):
        raise ValueError(
            f"not an email address: {value!r} (give a plain address like ops@example.org)"
        )
    return value


class EmailAlerts(BaseModel):
    """Mail through the local MTA (`sendmail`, the default) or an SMTP relay (`smtp_host`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    to: list[str]
    from_: str | None = Field(None, alias="from")  # default dsg@<host>
    subject_prefix: str = "DSG HEALTH"
    sendmail: str | None = None  # default /usr/sbin/sendmail unless smtp_host is given
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    timeout_seconds: float = Field(30, gt=0, le=600)

    @field_validator("to")
    @classmethod
    def _to(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one address")
        return [_address(a) for a in v]

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str | None) -> str | None:
        return None if v is None else _address(v)

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return _one_line(v, "subject_prefix")

    @field_validator("sendmail")
    @classmethod
    def _sendmail(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"must be an absolute path (got {v!r})")
        return v

    @field_validator("smtp_host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c.isspace() or c == "/" for c in v)):
            raise ValueError(f"not a host name: {v!r}")
        return v

    @model_validator(mode="after")
    def _transport(self) -> EmailAlerts:
        if self.sendmail is not None and self.smtp_host is not None:
            raise ValueError("give either sendmail (the local MTA) or smtp_host, not both")
        if "smtp_port" in self.model_fields_set and self.smtp_host is None:
            raise ValueError("smtp_port needs smtp_host")
        if self.smtp_host is None and self.sendmail is None:
            object.__setattr__(self, "sendmail", DEFAULT_SENDMAIL)
        return self

    @property
    def transport(self) -> str:
        return "smtp" if self.smtp_host else "sendmail"


class WebhookAlerts(BaseModel):
    """An HTTP(S) POST of a JSON document per alert."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    timeout_seconds: float = Field(10, gt=0, le=600)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"the scheme must be http or https (got {parts.scheme or 'none'!r})")
        if not parts.hostname or any(c.isspace() for c in v):
            raise ValueError("not a URL with a host")
        try:
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as e:
            raise ValueError(f"bad port: {e}") from None
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"not an HTTP header name: {name!r}")
            _one_line(value, f"header {name}")
        return v


class AlertsConfig(BaseModel):
    """Where `dsg admin health --alert` sends state changes, and where it remembers them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state_file: str = DEFAULT_STATE_FILE
    # Re-notify a check still failing after this many hours (null: only on changes).
    repeat_hours: float | None = Field(24, gt=0)
    # The host's name in alerts (default: socket.gethostname()).
    host: str | None = None
    email: EmailAlerts | None = None
    webhook: WebhookAlerts | None = None

    @field_validator("state_file")
    @classmethod
    def _state(cls, v: str) -> str:
        if not v.startswith("/") or v.endswith("/"):
            raise ValueError(f"must be an absolute file path (got {v!r})")
        return v

    @field_validator("host")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        return None if v is None else _one_line(v, "host")

    @model_validator(mode="after")
    def _channels(self) -> AlertsConfig:
        if self.email is None and self.webhook is None:
            raise ValueError("give email, webhook or both")
        return self


HOLD_PREFIX = "dsg-backup-"  # = backup.HOLD_PREFIX (backup is imported lazily, as below)
_TARGET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class ReplicationTarget(BaseModel):
    """A backup target measured from this primary's holds: a named target (push or pull:
    hold tag dsg-backup-<name>), or the unnamed push target by its parent dataset (hold tag
    dsg-backup-<its pool>)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    target: str | None = None
    mode: Literal["push", "pull"] = "pull"
    # The projects copied there; empty: every zfs project of the access file.
    projects: list[str] = Field(default_factory=list, max_length=10000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _TARGET_NAME.fullmatch(v):
            raise ValueError(f"target name {v[:40]!r}: use 1-32 of a-z, 0-9 and '-'")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        return None if v is None else check_dataset_name(v)

    @field_validator("projects")
    @classmethod
    def _projects(cls, v: list[str]) -> list[str]:
        for p in v:
            if not _PROJECT_NAME.fullmatch(p):
                raise ValueError(f"not a project name: {p[:60]!r}")
        return v

    @model_validator(mode="after")
    def _one(self) -> ReplicationTarget:
        if (self.name is None) == (self.target is None):
            raise ValueError("give the target's name, or the unnamed push target's dataset")
        return self

    @property
    def tag(self) -> str:
        return HOLD_PREFIX + (self.name or (self.target or "").split("/")[0])

    @property
    def label(self) -> str:
        return self.name or (self.target or "")

    def covers(self, project: str) -> bool:
        return not self.projects or project in self.projects


class HealthConfig(BaseModel):
    """Thresholds. A check whose two thresholds are both null is skipped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity_warn_percent: float = Field(80, ge=0, le=100)
    capacity_crit_percent: float = Field(90, ge=0, le=100)
    snapshot_age_warn_hours: float | None = Field(24 * 7, gt=0)
    snapshot_age_crit_hours: float | None = Field(24 * 30, gt=0)
    scrub_age_warn_days: float | None = Field(35, gt=0)
    scrub_age_crit_days: float | None = Field(60, gt=0)
    stale_locks: bool = True
    # Pools to check besides those of the access file's zfs projects.
    pools: list[str] = Field(default_factory=list)
    # Delivery of state changes (`--alert`); none without this section.
    alerts: AlertsConfig | None = None
    # Replication lag (`dsg admin backup`): the backup parent dataset (<target>/<project>),
    # on this host or on `backup_host` over SSH with `backup_prefix` (e.g. "sudo -n").
    backup_target: str | None = None
    backup_host: str | None = None
    backup_prefix: str = ""
    replication_lag_warn_hours: float | None = Field(26, gt=0)
    replication_lag_crit_hours: float | None = Field(72, gt=0)
    # Every other target (named push targets, pulls by backup hosts), from this host's holds.
    replication_targets: list[ReplicationTarget] = Field(default_factory=list, max_length=64)

    @field_validator("replication_targets")
    @classmethod
    def _distinct(cls, v: list[ReplicationTarget]) -> list[ReplicationTarget]:
        tags = [t.tag for t in v]
        if len(set(tags)) != len(tags):
            raise ValueError(f"two targets share a hold tag: {sorted(tags)}")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> HealthConfig:
        for what in (
            "capacity_%s_percent",
            "snapshot_age_%s_hours",
            "scrub_age_%s_days",
            "replication_lag_%s_hours",
        ):
            warn, crit = getattr(self, what % "warn"), getattr(self, what % "crit")
            if warn is not None and crit is not None and warn > crit:
                raise ValueError(f"{what % 'warn'} ({warn:g}) is above {what % 'crit'} ({crit:g})")
        return self


def load_health_config(path: Path | None) -> HealthConfig:
    """`path` must exist when given; with None, the default file is read if present."""
    if path is None:
        if not DEFAULT_HEALTH_CONFIG.is_file():
            return HealthConfig()
        path = DEFAULT_HEALTH_CONFIG
    if not path.is_file():
        raise ConfigError(f"health check configuration {path} does not exist")
    data, text = load_yaml(path)
    try:
        return HealthConfig.model_validate(data)
    except ValidationError as e:
        raise explain(path, text, e, {}) from e


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    # pool_health, pool_capacity, scrub_age, snapshot_age, stale_lock, encryption, replication
    check: str
    target: str  # the pool or project
    status: Status
    message: str
    value: float | None = None
    warn: float | None = None
    crit: float | None = None

    def line(self) -> str:
        return f"{self.status.name:<8} {self.check:<13} {self.target}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "target": self.target,
            "status": self.status.name,
            "message": self.message,
            "value": self.value,
            "warn": self.warn,
            "crit": self.crit,
        }


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def status(self) -> Status:
        return worst(c.status for c in self.checks)

    def summary(self) -> str:
        """The Nagios first line: the state, counts, and what is wrong."""
        bad = [c for c in self.checks if c.status != Status.OK]
        bad.sort(key=lambda c: -SEVERITY[c.status])
        counts = ", ".join(
            f"{n} {s.name.lower()}"
            for s in (Status.CRITICAL, Status.WARNING, Status.UNKNOWN, Status.OK)
            if (n := sum(c.status == s for c in self.checks))
        )
        text = f"DSG HEALTH {self.status.name} - {len(self.checks)} checks: {counts or 'none'}"
        if bad:
            text += " - " + "; ".join(f"{c.check} {c.target}: {c.message}" for c in bad)
        return text

    def perfdata(self) -> str:
        """Nagios performance data: one `'check target'=value;warn;crit` per measured check,
        for graphing by the monitoring system (plugin guidelines' label quoting)."""
        out = []
        for c in self.checks:
            if c.value is None:
                continue
            label = f"{c.check} {c.target}".replace("'", "''").replace("=", "_")
            fields = [f"{c.value:g}"] + [("" if t is None else f"{t:g}") for t in (c.warn, c.crit)]
            out.append(f"'{label}'=" + ";".join(fields).rstrip(";"))
        return " ".join(out)

    def plugin_line(self) -> str:
        """The first line a Nagios plugin prints: the summary, then `|` and the perfdata."""
        perf = self.perfdata()
        return f"{self.summary()} | {perf}" if perf else self.summary()

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.name,
            "exit_code": int(self.status),
            "now": self.now.isoformat(),
            "summary": self.summary(),
            "perfdata": self.perfdata(),
            "checks": [c.to_dict() for c in self.checks],
        }


# --- pure evaluation -------------------------------------------------------------------------


def threshold(value: float, warn: float | None, crit: float | None) -> Status:
    """CRITICAL at or above `crit`, WARNING at or above `warn`, else OK (None: no limit)."""
    if crit is not None and value >= crit:
        return Status.CRITICAL
    if warn is not None and value >= warn:
        return Status.WARNING
    return Status.OK


def _limits(warn: float | None, crit: float | None, unit: str) -> str:
    parts = [f"{k} {v:g}{unit}" for k, v in (("warn", warn), ("crit", crit)) if v is not None]
    return f" ({', '.join(parts)})" if parts else ""


def pool_health_status(health: str) -> Status:
    """ONLINE OK, DEGRADED WARNING, anything else (FAULTED, UNAVAIL, SUSPENDED...) CRITICAL."""
    health = health.strip().upper()
    if health == "ONLINE":
        return Status.OK
    if health == "DEGRADED":
        return Status.WARNING
    return Status.CRITICAL


def evaluate_pool(pool: PoolStatus, cfg: HealthConfig) -> list[Check]:
    health = Check(
        "pool_health",
        pool.name,
        pool_health_status(pool.health),
        f"pool is {pool.health}",
    )
    cap = pool.capacity
    warn, crit = cfg.capacity_warn_percent, cfg.capacity_crit_percent
    capacity = Check(
        "pool_capacity",
        pool.name,
        threshold(cap, warn, crit),
        f"{cap}% used, {_bytes(pool.free)} free of {_bytes(pool.size)}{_limits(warn, crit, '%')}",
        value=cap,
        warn=warn,
        crit=crit,
    )
    return [health, capacity]


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ScrubInfo:
    """What `zpool status` says about scrubs: state is none / completed / in_progress /
    canceled / resilver / unknown; `finished` is when the last scrub completed."""

    state: str
    finished: datetime | None
    line: str


# zfs-fuse (Solaris 10 style):   " scrub: scrub completed after 0h0m with 0 errors on <ctime>"
# OpenZFS:                       "  scan: scrub repaired 0B in 00:00:01 with 0 errors on <ctime>"
_SCAN_LINE = re.compile(r"^\s*(?:scan|scrub):\s*(?P<text>.*)$", re.MULTILINE)
_ON_DATE = re.compile(r"\bon\s+(?P<date>\w{3}\s+\w{3}\s+\d{1,2}\s+\d{1,2}:\d{2}:\d{2}\s+\d{4})\s*$")


def parse_scrub(status_text: str, tz: Any = None) -> ScrubInfo:
    """Parse the scan/scrub line of `zpool status` (times there are in local time; `tz` a
    tzinfo to read them in, default the system's)."""
    m = _SCAN_LINE.search(status_text)
    if m is None:
        return ScrubInfo("unknown", None, "")
    text = m["text"].strip()
    low = text.lower()
    if low.startswith("none requested"):
        return ScrubInfo("none", None, text)
    if "in progress" in low:
        return ScrubInfo("in_progress", None, text)
    if low.startswith("resilver"):
        return ScrubInfo("resilver", None, text)
    if "cancel" in low or "stopped" in low:
        return ScrubInfo("canceled", None, text)
    date = _ON_DATE.search(text)
    if low.startswith("scrub") and date:
        naive = datetime.strptime(" ".join(date["date"].split()), "%a %b %d %H:%M:%S %Y")
        if tz is None:
            finished = datetime.fromtimestamp(time.mktime(naive.timetuple()), UTC)
        else:
            finished = naive.replace(tzinfo=tz).astimezone(UTC)
        return ScrubInfo("completed", finished, text)
    return ScrubInfo("unknown", None, text)


def evaluate_scrub(
    pool: str, info: ScrubInfo, now: datetime, cfg: HealthConfig, *, zfs_fuse: bool
) -> Check:
    warn, crit = cfg.scrub_age_warn_days, cfg.scrub_age_crit_days
    if info.state == "completed" and info.finished is not None:
        days = (now - info.finished).total_seconds() / 86400
        return Check(
            "scrub_age",
            pool,
            threshold(days, warn, crit),
            f"last scrub completed {days:.1f} days ago{_limits(warn, crit, 'd')}",
            value=round(days, 3),
            warn=warn,
            crit=crit,
        )
    if info.state == "in_progress":
        return Check("scrub_age", pool, Status.OK, f"scrub in progress ({info.line})")
    if info.state == "none" and zfs_fuse:
        return Check(
            "scrub_age",
            pool,
            Status.UNKNOWN,
            "zfs-fuse reports 'none requested': it forgets the last scrub when the pool is "
            "imported again or the daemon restarts, so the scrub age cannot be known "
            "(set scrub_age_warn_days and scrub_age_crit_days to null to skip this check)",
        )
    if info.state == "none":
        return Check(
            "scrub_age",
            pool,
            threshold(float("inf"), warn, crit),
            "pool has never been scrubbed ('zpool scrub' it; schedule it monthly)",
            warn=warn,
            crit=crit,
        )
    return Check(
        "scrub_age",
        pool,
        Status.UNKNOWN,
        f"no completed scrub time in 'zpool status' ({info.line or 'no scan line'})",
    )


def evaluate_snapshot_age(
    project: str, head: str | None, created_at: datetime | None, now: datetime, cfg: HealthConfig
) -> Check:
    warn, crit = cfg.snapshot_age_warn_hours, cfg.snapshot_age_crit_hours
    if head is None or created_at is None:
        return Check("snapshot_age", project, Status.OK, "no snapshots yet (empty repository)")
    hours = (now - created_at).total_seconds() / 3600
    return Check(
        "snapshot_age",
        project,
        threshold(hours, warn, crit),
        f"newest snapshot {head} is {hours:.1f} hours old{_limits(warn, crit, 'h')}",
        value=round(hours, 3),
        warn=warn,
        crit=crit,
    )


def evaluate_encryption(project: str, dataset: str, key: KeyState) -> Check:
    """Pure: an encrypted dataset whose key is not loaded is CRITICAL (it cannot be mounted,
    so its data is unreachable); anything else is OK, with the encryption state said."""
    if not key.supported:
        return Check(
            "encryption", project, Status.OK, "not encrypted (this ZFS has no native encryption)"
        )
    if not key.encrypted:
        return Check("encryption", project, Status.OK, "not encrypted")
    where = f", key from {key.keylocation}" if key.keylocation else ""
    if key.key_loaded:
        return Check(
            "encryption", project, Status.OK, f"encrypted ({key.encryption}), key loaded{where}"
        )
    root = key.encryption_root or dataset
    return Check(
        "encryption",
        project,
        Status.CRITICAL,
        f"encrypted ({key.encryption}) and the key is not loaded (keystatus "
        f"{key.keystatus or 'unknown'}{where}): the data is unreachable; load it with "
        f"`zfs load-key {root}` then `zfs mount {dataset}`",
    )


def locked_snapshot_check(project: str, dataset: str) -> Check:
    """The snapshot age of a project whose key is not loaded cannot be read."""
    return Check(
        "snapshot_age",
        project,
        Status.UNKNOWN,
        f"cannot read the repository: {dataset} is encrypted and its key is not loaded",
    )


def parse_time(text: str) -> datetime:
    """ISO 8601 (a trailing Z allowed); a time without zone is UTC."""
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# --- probes (I/O) ----------------------------------------------------------------------------


def open_project(name: str, p: ProjectAccess, zfs: Zfs) -> Repository:
    """The repository of an access-file project (as the agent opens it)."""
    return open_local(p.type, Path(p.mountpoint), name, p.pool, zfs=zfs)


def lock_path(name: str, p: ProjectAccess) -> Path:
    """Where the project's write lock lives (see backends/posix.py and backends/zfs.py)."""
    root = Path(p.mountpoint)
    if p.type == "zfs":
        return root.parent / ".dsg-locks" / f"{name}.lock"
    return root / "lock"


def probe_lock(path: Path) -> tuple[bool | None, bytes]:
    """(held, holder note) of a lock file: `held` None when there is no lock file.

    Takes the flock with LOCK_NB and releases it at once: a writer starting at that instant
    waits one poll interval (its own loop retries every 50 ms), never fails.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, b""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = False
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            held = True
        try:
            note = os.pread(fd, 4096, 0)
        finally:
            if not held:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return held, note
    finally:
        os.close(fd)


def describe_holder(note: bytes) -> str:
    try:
        return LockOwner(**orjson.loads(note)).describe()
    except (ValueError, TypeError):
        return "an unreadable holder note"


def check_lock(project: str, path: Path) -> Check:
    try:
        held, note = probe_lock(path)
    except OSError as e:
        return Check("stale_lock", project, Status.UNKNOWN, f"cannot probe {path}: {e.strerror}")
    if held is None:
        return Check("stale_lock", project, Status.OK, f"no lock file ({path})")
    if held:
        who = describe_holder(note) if note.strip() else "a writer"
        return Check("stale_lock", project, Status.OK, f"held by {who} (a sync is running)")
    if note.strip():
        return Check(
            "stale_lock",
            project,
            Status.WARNING,
            f"stale: {describe_holder(note)} left its note in {path} but no process holds "
            "the lock (the writer died; the next sync recovers its transaction)",
        )
    return Check("stale_lock", project, Status.OK, "free")


@dataclass
class ProjectState:
    """What health and metrics read of one project's repository."""

    name: str
    type: str
    head: str | None = None
    snapshots: int = 0
    created_at: datetime | None = None
    total_bytes: int | None = None
    entry_count: int | None = None
    error: DsgError | OSError | None = None

    @property
    def readable(self) -> bool:
        return self.error is None


def read_project(name: str, p: ProjectAccess, zfs: Zfs, *, count: bool = False) -> ProjectState:
    """Head, head record and (with `count`) the number of snapshots; errors are kept."""
    state = ProjectState(name, p.type or "posix")
    repo = open_project(name, p, zfs)
    try:
        state.head = repo.head()
        if state.head is not None:
            rec = repo.record(state.head)
            # an imported snapshot keeps its original date; its age counts from the import
            state.created_at = parse_time(rec.imported_at or rec.created_at)
            state.total_bytes = rec.total_bytes
            state.entry_count = rec.entry_count
            state.snapshots = _count_snapshots(repo, p, zfs) if count else snap_number(state.head)
    except (DsgError, OSError, ValueError) as e:
        state.error = e if isinstance(e, DsgError | OSError) else RepositoryError(str(e))
    finally:
        repo.close()
    return state


def _count_snapshots(repo: Repository, p: ProjectAccess, zfs: Zfs) -> int:
    """Committed snapshots s1..head actually present (zfs: @sN; posix: snapshots/sN)."""
    head = snap_number(repo.head())
    if p.type == "zfs":
        names = [s.snapname for s in zfs.list_snapshots(repo.dataset)]  # type: ignore[attr-defined]
    else:
        names = [d.name for d in (Path(p.mountpoint) / "snapshots").iterdir()]
    return sum(1 for n in names if 0 < snap_number(n) <= head and n == f"s{snap_number(n)}")


def _error_text(e: BaseException) -> str:
    return e.message if isinstance(e, DsgError) else str(e)


def snapshot_check(state: ProjectState, now: datetime, cfg: HealthConfig) -> Check:
    e = state.error
    if e is None:
        return evaluate_snapshot_age(state.name, state.head, state.created_at, now, cfg)
    if isinstance(e, ZfsError | OSError):
        status = Status.UNKNOWN  # could not look
    elif isinstance(e, RepositoryNotFound):
        status = Status.WARNING  # provisioned, not (yet) a dsg repository
    else:
        status = Status.CRITICAL  # history unreadable or broken
    return Check("snapshot_age", state.name, status, _error_text(e))


def pools_of(access: AccessFile, extra: Sequence[str] = ()) -> list[str]:
    pools = {p.pool for p in access.projects.values() if p.pool}
    return sorted(pools | set(extra))


def pool_checks(pool: str, zfs: Zfs, now: datetime, cfg: HealthConfig) -> list[Check]:
    try:
        status = zfs.pool_status(pool)
    except (ZfsError, ValueError) as e:
        why = f"cannot read the pool's status: {_error_text(e)}"
        checks = [
            Check("pool_health", pool, Status.UNKNOWN, why),
            Check("pool_capacity", pool, Status.UNKNOWN, why),
        ]
        if _scrub_enabled(cfg):
            checks.append(Check("scrub_age", pool, Status.UNKNOWN, why))
        return checks
    checks = evaluate_pool(status, cfg)
    if _scrub_enabled(cfg):
        try:
            text = zfs.zpool("status", pool)
            fuse = zfs.platform.is_zfs_fuse
            checks.append(evaluate_scrub(pool, parse_scrub(text), now, cfg, zfs_fuse=fuse))
        except (ZfsError, ValueError) as e:
            msg = f"cannot read 'zpool status': {_error_text(e)}"
            checks.append(Check("scrub_age", pool, Status.UNKNOWN, msg))
    return checks


def _scrub_enabled(cfg: HealthConfig) -> bool:
    return cfg.scrub_age_warn_days is not None or cfg.scrub_age_crit_days is not None


def run_checks(
    access: AccessFile, cfg: HealthConfig, *, zfs: Zfs | None = None, now: datetime | None = None
) -> Report:
    """All checks: per pool (health, capacity, scrub), then per project (snapshot, lock)."""
    zfs = zfs or Zfs.from_env()
    report = Report(now=now or datetime.now(UTC))
    for pool in pools_of(access, cfg.pools):
        report.checks += pool_checks(pool, zfs, report.now, cfg)
    snap_enabled = (
        cfg.snapshot_age_warn_hours is not None or cfg.snapshot_age_crit_hours is not None
    )
    for name, p in sorted(access.projects.items()):
        key = encryption_check(name, p.dataset, zfs) if p.type == "zfs" and p.dataset else None
        locked = key is not None and key.status == Status.CRITICAL
        if snap_enabled:
            if locked:
                assert p.dataset is not None
                report.checks.append(locked_snapshot_check(name, p.dataset))
            else:
                report.checks.append(snapshot_check(read_project(name, p, zfs), report.now, cfg))
        if key is not None:
            report.checks.append(key)
        if cfg.stale_locks:
            report.checks.append(check_lock(name, lock_path(name, p)))
        if cfg.backup_target and p.dataset and _lag_enabled(cfg):
            report.checks.append(replication_check(name, p.dataset, zfs, report.now, cfg))
        if p.dataset and _lag_enabled(cfg):
            for t in cfg.replication_targets:
                if t.covers(name):
                    report.checks.append(
                        held_replication_check(name, p.dataset, t, zfs, report.now, cfg)
                    )
    return report


def encryption_check(project: str, dataset: str, zfs: Zfs) -> Check:
    """`zfs get encryption,keystatus,...` of the project's dataset, evaluated."""
    try:
        return evaluate_encryption(project, dataset, zfs.key_state(dataset))
    except (ZfsError, ValueError) as e:
        msg = f"cannot read the encryption state of {dataset}: {_error_text(e)}"
        return Check("encryption", project, Status.UNKNOWN, msg)


def _lag_enabled(cfg: HealthConfig) -> bool:
    return cfg.replication_lag_warn_hours is not None or cfg.replication_lag_crit_hours is not None


def evaluate_replication(
    project: str, lag_seconds: float | None, behind: int, cfg: HealthConfig
) -> Check:
    """Pure: lag is the age of the oldest primary snapshot the backup lacks (None: no backup)."""
    warn, crit = cfg.replication_lag_warn_hours, cfg.replication_lag_crit_hours
    if lag_seconds is None:
        return Check("replication", project, Status.CRITICAL, "no backup of this project yet")
    hours = lag_seconds / 3600
    status = threshold(hours, warn, crit)
    what = "in sync" if behind == 0 else f"{behind} snapshot(s) behind, oldest {hours:.1f} h old"
    return Check(
        "replication", project, status, what + _limits(warn, crit, " h"), hours, warn, crit
    )


def replication_check(
    project: str, dataset: str, zfs: Zfs, now: datetime, cfg: HealthConfig
) -> Check:
    from dsg.admin.backup import (
        BackupDiverged,
        dsg_snapshots,
        plan_replication,
        receiver_zfs,
        snapshot_infos,
    )

    assert cfg.backup_target is not None
    target = f"{cfg.backup_target.rstrip('/')}/{project}"
    try:
        src = snapshot_infos(zfs, dataset) or []
        dst = snapshot_infos(receiver_zfs(cfg.backup_host, cfg.backup_prefix) or zfs, target)
        if dst is None:
            return evaluate_replication(project, None, 0, cfg)
        plan = plan_replication(dataset, target, src, dst)
    except BackupDiverged as e:
        return Check("replication", project, Status.CRITICAL, e.message)
    except (ZfsError, OSError, ValueError) as e:
        return Check("replication", project, Status.UNKNOWN, _error_text(e))
    missing = [s for s in dsg_snapshots(src) if s.name in {st.snapshot for st in plan.steps}]
    lag = max(0.0, now.timestamp() - missing[0].creation) if missing else 0.0
    return evaluate_replication(project, lag, len(missing), cfg)


# --- replication seen from the primary's holds ----------------------------------------------


@dataclass(frozen=True)
class HeldState:
    """A project's dsg snapshots (history order) and the newest one held under a target's tag
    (None: the target never confirmed a copy)."""

    snapshots: tuple[tuple[str, int], ...]  # (sN, creation)
    confirmed: str | None

    def missing(self) -> list[tuple[str, int]]:
        names = [n for n, _ in self.snapshots]
        if self.confirmed is None:
            return list(self.snapshots)
        return list(self.snapshots[names.index(self.confirmed) + 1 :])

    def lag_seconds(self, now: datetime) -> float:
        missing = self.missing()
        return max(0.0, now.timestamp() - missing[0][1]) if missing else 0.0


HOLDS_PER_CALL = 256  # snapshot names per `zfs holds` (argv stays far below ARG_MAX)


def held_state(zfs: Zfs, dataset: str, tag: str) -> HeldState:
    """Read the dsg snapshots of `dataset` and which of them carry `tag`. Raises ZfsError,
    ZfsUnsupported where holds cannot be listed (zfs-fuse), ValueError on odd names."""
    from dsg.admin.backup import dsg_snapshots, snapshot_infos

    infos = snapshot_infos(zfs, dataset)
    if infos is None:
        raise ValueError(f"{dataset} does not exist")
    ours = dsg_snapshots(infos)
    names = [f"{dataset}@{s.name}" for s in ours]
    if names and not zfs.platform.holds_list:
        raise ZfsUnsupported(["zfs", "holds"], -1, "zfs holds cannot be listed on zfs-fuse")
    held: set[str] = set()
    for i in range(0, len(names), HOLDS_PER_CALL):
        chunk = [check_snapshot_name(n) for n in names[i : i + HOLDS_PER_CALL]]
        for row in zfs.zfs("holds", "-H", *chunk).splitlines():
            cols = row.split("\t")
            if len(cols) >= 2 and cols[1] == tag:
                held.add(cols[0].partition("@")[2])
    confirmed = next((s.name for s in reversed(ours) if s.name in held), None)
    return HeldState(tuple((s.name, s.creation) for s in ours), confirmed)


def evaluate_held_replication(
    project: str, t: ReplicationTarget, state: HeldState, now: datetime, cfg: HealthConfig
) -> Check:
    """Pure: how far target `t` is behind, from what its hold says it confirmed."""
    where = f"{project}@{t.label}"
    warn, crit = cfg.replication_lag_warn_hours, cfg.replication_lag_crit_hours
    limits = _limits(warn, crit, " h")
    if not state.snapshots:
        return Check("replication", where, Status.OK, "no snapshot to back up yet", 0.0, warn, crit)
    if state.confirmed is None:
        hours = state.lag_seconds(now) / 3600
        return Check(
            "replication", where, Status.CRITICAL,
            f"no {t.tag} hold on any snapshot: the {t.mode} target {t.label} has never "
            f"confirmed a copy of this project (oldest snapshot {hours:.1f} h old)",
            hours, warn, crit,
        )  # fmt: skip
    missing = state.missing()
    hours = state.lag_seconds(now) / 3600
    status = threshold(hours, warn, crit)
    if missing:
        what = (
            f"confirmed up to {state.confirmed}; {len(missing)} snapshot(s) behind, oldest "
            f"{hours:.1f} h old"
        )
    else:
        what = f"in sync (confirmed {state.confirmed})"
    return Check("replication", where, status, what + limits, hours, warn, crit)


def held_replication_check(
    project: str, dataset: str, t: ReplicationTarget, zfs: Zfs, now: datetime, cfg: HealthConfig
) -> Check:
    try:
        state = held_state(zfs, dataset, t.tag)
    except ZfsUnsupported:
        msg = (
            f"cannot list the {t.tag} holds on this ZFS (zfs-fuse has no `zfs holds`): "
            f"{t.label}'s progress is not visible from here"
        )
        return Check("replication", f"{project}@{t.label}", Status.UNKNOWN, msg)
    except (ZfsError, OSError, ValueError) as e:
        return Check("replication", f"{project}@{t.label}", Status.UNKNOWN, _error_text(e))
    return evaluate_held_replication(project, t, state, now, cfg)
