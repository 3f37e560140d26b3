"""Prometheus metrics for a repository host (`dsg admin metrics`).

Rendered in the Prometheus text exposition format (version 0.0.4) and written atomically
(a temporary file in the same directory, then rename(2)), so node_exporter's textfile
collector (`--collector.textfile.directory`) never reads a half-written file. The
temporary name starts with a dot and does not end in `.prom`, so the collector ignores it.

Per project (label `project`), from the head snapshot's record:

    dsg_project_up                          1 when the repository could be read, else 0
    dsg_project_head_snapshot               N of the head sN (0: empty repository)
    dsg_project_snapshots                   committed snapshots present (gauge: can drop)
    dsg_project_last_sync_timestamp_seconds when the head was committed (Unix time)
    dsg_project_bytes                       bytes of data in the head snapshot
    dsg_project_files                       entries (files and links) in the head snapshot

Per pool (label `pool`; the pools of the access file's zfs projects, plus any configured):

    dsg_pool_up                             1 when `zpool list` answered, else 0
    dsg_pool_health                         1 ONLINE, 0 anything else (label `health`)
    dsg_pool_capacity_ratio                 zpool's CAP / 100
    dsg_pool_size_bytes, dsg_pool_allocated_bytes, dsg_pool_free_bytes
    dsg_pool_fragmentation_ratio            free-space fragmentation (OpenZFS; absent on zfs-fuse)
    dsg_pool_last_scrub_timestamp_seconds   when the last scrub completed
    dsg_pool_scrub_errors                   errors the last scrub/resilver reported
    dsg_pool_data_errors                    permanent data errors (`errors:` of zpool status)

Per project dataset and sanoid retention class (label `retention_class`):

    dsg_autosnap_last_timestamp_seconds     newest autosnap_* snapshot (freshness per class)

Per project, from the audit log (`--audit-log`; counters since its last rotation):

    dsg_transactions_total                  sync transactions (label `outcome`: committed, aborted)
    dsg_transaction_bytes_total             file data moved (label `direction`: in, out)
    dsg_transaction_files_changed_total     files and links put or deleted by commits
    dsg_access_denied_total                 requests refused by role
    dsg_last_transaction_seconds            duration of the last committing session
    dsg_last_transaction_timestamp_seconds  when it ended

Per project and backup target (labels `project`, `name`, `mode`; the health
configuration's `replication_targets`: named push targets and pulls by backup hosts),
from this primary's holds (the target's `dsg-backup-<name>` hold marks the newest snapshot
it confirmed), so every target is seen from here without a credential for its host:

    dsg_backup_confirmed_snapshot           N of the newest sN the target confirmed (0: none)
    dsg_backup_confirmed_lag_seconds        age of the oldest sN it has not confirmed (0: in sync)

(absent for a target whose holds cannot be listed: zfs-fuse), and
`dsg_metrics_generated_timestamp_seconds`. On zfs-fuse pool sizes come from rounded
`zpool list` output (no `-p`), so they are approximate there.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from dsg.admin.health import ReplicationTarget, held_state, parse_scrub, pools_of, read_project
from dsg.server.access import AccessFile
from dsg.zfs.ops import Zfs, ZfsError

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "untyped")


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


@dataclass
class Family:
    """One metric: name, HELP text, TYPE and its samples."""

    name: str
    help: str
    type: str = "gauge"
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append(Sample(labels, value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The text exposition format; raises ValueError on an invalid metric or label name."""
    lines: list[str] = []
    seen: set[str] = set()
    for fam in families:
        if not METRIC_NAME.fullmatch(fam.name) or fam.name in seen or fam.type not in TYPES:
            raise ValueError(f"invalid or repeated metric: {fam.name!r} ({fam.type})")
        seen.add(fam.name)
        lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        for s in fam.samples:
            for key in s.labels:
                if not LABEL_NAME.fullmatch(key) or key.startswith("__"):
                    raise ValueError(f"invalid label name {key!r} on {fam.name}")
            labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in s.labels.items())
            lines.append(
                f"{fam.name}{{{labels}}} {format_value(s.value)}"
                if labels
                else f"{fam.name} {format_value(s.value)}"
            )
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to `path` via a temporary file in the same directory and rename(2)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def transaction_families(records: Iterable[dict[str, Any]]) -> list[Family]:
    """Per-project transaction metrics from audit records (pure): commits and aborts, data
    moved in and out, files changed, and the last committing session's duration. Counters
    restart with the audit log's rotation, which Prometheus' rate() handles as a reset."""
    tx = Family("dsg_transactions_total", "Sync transactions by outcome", "counter")
    moved = Family("dsg_transaction_bytes_total", "File data moved, by direction", "counter")
    changed = Family("dsg_transaction_files_changed_total", "Files put or deleted", "counter")
    denied = Family("dsg_access_denied_total", "Requests refused by role", "counter")
    last = Family("dsg_last_transaction_seconds", "Duration of the last committing session")
    last_at = Family(
        "dsg_last_transaction_timestamp_seconds", "When the last committing session ended"
    )
    counts: dict[tuple[str, str], float] = {}
    data: dict[tuple[str, str], float] = {}
    files: dict[str, float] = {}
    deny: dict[str, float] = {}
    latest: dict[str, tuple[str, float]] = {}
    for r in records:
        project, action = str(r.get("project") or ""), r.get("action")
        if not project:
            continue
        if action == "sync.commit":
            counts[project, "committed"] = counts.get((project, "committed"), 0) + 1
            data[project, "in"] = data.get((project, "in"), 0) + float(r.get("bytes_in") or 0)
            n = sum(float(r.get(k) or 0) for k in ("files_put", "links_put", "deleted"))
            files[project] = files.get(project, 0) + n
        elif action == "sync.abort":
            counts[project, "aborted"] = counts.get((project, "aborted"), 0) + 1
        elif action == "access.denied":
            deny[project] = deny.get(project, 0) + 1
        elif action == "session.close":
            data[project, "out"] = data.get((project, "out"), 0) + float(r.get("bytes_read") or 0)
            if r.get("commits") and isinstance(r.get("seconds"), int | float):
                latest[project] = (str(r.get("ts", "")), float(r["seconds"]))
    for (project, outcome), v in sorted(counts.items()):
        tx.add(v, project=project, outcome=outcome)
    for (project, direction), v in sorted(data.items()):
        moved.add(v, project=project, direction=direction)
    for project, v in sorted(files.items()):
        changed.add(v, project=project)
    for project, v in sorted(deny.items()):
        denied.add(v, project=project)
    for project, (ts, secs) in sorted(latest.items()):
        last.add(secs, project=project)
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
            last_at.add(round(when.timestamp(), 3), project=project)
    return [tx, moved, changed, denied, last, last_at]


_SCAN_ERRORS = re.compile(r"with (\d+) errors?")
_DATA_ERRORS = re.compile(r"^\s*errors:\s*(?P<text>.*)$", re.MULTILINE)
# sanoid's names: autosnap_<YYYY-MM-DD>_<HH:MM:SS>_<class>
_AUTOSNAP = re.compile(r"autosnap_\d{4}-\d{2}-\d{2}_\d{2}:\d{2}:\d{2}_(?P<cls>[a-z]+)")


def scan_errors(status_text: str) -> int | None:
    """Errors the last scrub or resilver reported ("... with N errors ..."), if any ran."""
    for line in status_text.splitlines():
        if line.strip().startswith(("scan:", "scrub:")):
            m = _SCAN_ERRORS.search(line)
            return int(m.group(1)) if m else None
    return None


def data_errors(status_text: str) -> int | None:
    """Permanent data errors from `zpool status` ("No known data errors" -> 0)."""
    m = _DATA_ERRORS.search(status_text)
    if m is None:
        return None
    text = m["text"].strip().lower()
    if text.startswith("no known data errors"):
        return 0
    n = re.match(r"(\d+)", text)
    return int(n.group(1)) if n else None


def autosnap_freshness(snaps: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Newest creation time per sanoid retention class, from (snapshot name, creation)."""
    newest: dict[str, int] = {}
    for name, created in snaps:
        m = _AUTOSNAP.fullmatch(name)
        if m and created > newest.get(m["cls"], -1):
            newest[m["cls"]] = created
    return newest


def read_audit(path: Path) -> Iterator[dict[str, Any]]:
    """Records of an audit log; unparsable lines are skipped (a torn last line)."""
    with open(path, "rb") as f:
        for line in f:
            with contextlib.suppress(orjson.JSONDecodeError):
                rec = orjson.loads(line)
                if isinstance(rec, dict):
                    yield rec


def collect(
    access: AccessFile,
    *,
    zfs: Zfs | None = None,
    pools: Sequence[str] = (),
    now: datetime | None = None,
    audit_log: Path | None = None,
    targets: Sequence[ReplicationTarget] = (),
) -> list[Family]:
    """Read every project and pool; a failure shows as `_up 0`, never as an exception."""
    zfs = zfs or Zfs.from_env()
    now = now or datetime.now(UTC)
    up = Family("dsg_project_up", "1 when the project's repository could be read, else 0")
    head = Family("dsg_project_head_snapshot", "Number N of the head snapshot sN (0: empty)")
    total = Family("dsg_project_snapshots", "Committed snapshots in the repository", "gauge")
    last = Family(
        "dsg_project_last_sync_timestamp_seconds",
        "When the head snapshot was committed, seconds since the Unix epoch",
    )
    nbytes = Family("dsg_project_bytes", "Bytes of data in the head snapshot")
    files = Family("dsg_project_files", "Files and links in the head snapshot")
    autosnap = Family(
        "dsg_autosnap_last_timestamp_seconds",
        "Newest retention (sanoid) snapshot of the project dataset, per class",
    )
    for name, p in sorted(access.projects.items()):
        if p.dataset:
            with contextlib.suppress(ZfsError, ValueError):
                snaps = zfs.list_snapshots(p.dataset)
                for cls, created in sorted(autosnap_freshness(
                    (s.snapname, s.creation) for s in snaps
                ).items()):  # fmt: skip
                    autosnap.add(created, project=name, retention_class=cls)
        st = read_project(name, p, zfs, count=True)
        up.add(1 if st.readable else 0, project=name)
        if not st.readable:
            continue
        head.add(int(st.head[1:]) if st.head else 0, project=name)
        total.add(st.snapshots, project=name)
        if st.created_at is not None:
            last.add(st.created_at.timestamp(), project=name)
        if st.total_bytes is not None:
            nbytes.add(st.total_bytes, project=name)
        if st.entry_count is not None:
            files.add(st.entry_count, project=name)

    confirmed = Family(
        "dsg_backup_confirmed_snapshot",
        "Newest sN the backup target confirmed (its hold on this primary; 0: none)",
        "gauge",
    )
    confirmed_lag = Family(
        "dsg_backup_confirmed_lag_seconds",
        "Age of the oldest snapshot the backup target has not confirmed (0: in sync)",
        "gauge",
    )
    for name, p in sorted(access.projects.items()):
        for t in targets:
            if not p.dataset or not t.covers(name):
                continue
            try:
                held = held_state(zfs, p.dataset, t.tag)
            except (ZfsError, ValueError):
                continue  # zfs-fuse cannot list holds; a missing dataset shows in _up
            labels = {"project": name, "name": t.label, "mode": t.mode}
            confirmed.add(int(held.confirmed[1:]) if held.confirmed else 0, **labels)
            confirmed_lag.add(round(held.lag_seconds(now), 3), **labels)

    pool_up = Family("dsg_pool_up", "1 when zpool reported on the pool, else 0")
    health = Family("dsg_pool_health", "1 when the pool is ONLINE, else 0 (label: its state)")
    cap = Family("dsg_pool_capacity_ratio", "Pool capacity used, 0..1 (zpool CAP / 100)")
    size = Family("dsg_pool_size_bytes", "Pool size in bytes")
    alloc = Family("dsg_pool_allocated_bytes", "Pool space allocated in bytes")
    free = Family("dsg_pool_free_bytes", "Pool space free in bytes")
    frag = Family("dsg_pool_fragmentation_ratio", "Free-space fragmentation, 0..1 (OpenZFS)")
    scrubbed = Family("dsg_pool_last_scrub_timestamp_seconds", "When the last scrub completed")
    scrub_err = Family("dsg_pool_scrub_errors", "Errors the last scrub or resilver reported")
    data_err = Family("dsg_pool_data_errors", "Permanent data errors zpool status reports")
    for pool in pools_of(access, pools):
        try:
            s = zfs.pool_status(pool)
        except (ZfsError, ValueError):
            pool_up.add(0, pool=pool)
            health.add(0, pool=pool, health="UNKNOWN")
            continue
        pool_up.add(1, pool=pool)
        health.add(1 if s.health == "ONLINE" else 0, pool=pool, health=s.health)
        cap.add(s.capacity / 100, pool=pool)
        size.add(s.size, pool=pool)
        alloc.add(s.allocated, pool=pool)
        free.add(s.free, pool=pool)
        with contextlib.suppress(ZfsError, ValueError):  # zfs-fuse has no `frag`
            value = zfs.zpool("list", "-H", "-o", "frag", pool).strip().rstrip("%")
            if value not in ("", "-"):
                frag.add(float(value) / 100, pool=pool)
        try:
            text = zfs.zpool("status", pool)
        except (ZfsError, ValueError):
            continue
        info = parse_scrub(text)
        if info.finished is not None:
            scrubbed.add(round(info.finished.timestamp(), 3), pool=pool)
        if (n := scan_errors(text)) is not None:
            scrub_err.add(n, pool=pool)
        if (n := data_errors(text)) is not None:
            data_err.add(n, pool=pool)

    generated = Family(
        "dsg_metrics_generated_timestamp_seconds", "When these metrics were collected"
    )
    generated.add(round(now.timestamp(), 3))
    audit: list[Family] = []
    if audit_log is not None and audit_log.is_file():
        audit = transaction_families(read_audit(audit_log))
    return [
        *audit,
        up,
        head,
        total,
        last,
        nbytes,
        files,
        autosnap,
        confirmed,
        confirmed_lag,
        pool_up,
        health,
        cap,
        size,
        alloc,
        free,
        frag,
        scrubbed,
        scrub_err,
        data_err,
        generated,
    ]
