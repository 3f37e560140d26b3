"""Admin commands (health, metrics), registered on the main app as `dsg admin ...`.

Both run on the repository host and find the projects in the access file. Printing and
argument handling only; the work is in `health.py`, `alerts.py` and `metrics.py`.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.text import Text

from dsg.admin.health import (
    DEFAULT_HEALTH_CONFIG,
    Status,
    load_health_config,
    parse_time,
    run_checks,
)
from dsg.cli.common import JsonOpt, emit_json, err, out, run
from dsg.core.errors import ConfigError, DsgError, UsageError
from dsg.server.access import DEFAULT_ACCESS_FILE, AccessFile, load_access

if TYPE_CHECKING:
    from dsg.admin.alerts import Outcome

commands = typer.Typer()

AccessOpt = Annotated[
    str,
    typer.Option(
        "--access-file", help="projects to check (default $DSG_ACCESS_FILE or /etc/dsg/access.yml)"
    ),
]
ConfigOpt = Annotated[
    str,
    typer.Option("--config", help="thresholds (YAML; default /etc/dsg/health.yml if present)"),
]


def _access(path: str) -> AccessFile:
    return load_access(Path(path or os.environ.get("DSG_ACCESS_FILE", "") or DEFAULT_ACCESS_FILE))


STYLES = {
    Status.OK: "green",
    Status.WARNING: "yellow",
    Status.CRITICAL: "bold red",
    Status.UNKNOWN: "magenta",
}


@commands.command()
def health(
    config: ConfigOpt = "",
    access_file: AccessOpt = "",
    now: Annotated[
        str, typer.Option("--now", help="evaluate as if it were this ISO 8601 time (tests)")
    ] = "",
    alert: Annotated[
        bool,
        typer.Option(
            "--alert",
            help="send what changed since the last alert to the config's 'alerts:' channels "
            "(email, webhook) and update its state file",
        ),
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Check pools, snapshots, scrubs and locks (exit 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN).

    The first line is the summary (Nagios), then one line per check. With --alert, state
    changes are delivered too; a delivery that failed is an UNKNOWN `alerts` check.
    """
    from dsg.admin import alerts  # smtplib, urllib: only for this command

    try:
        when = datetime.now(UTC)
        if now:
            try:
                when = parse_time(now)
            except ValueError as e:
                raise UsageError(f"--now: not an ISO 8601 time: {now!r}") from e
        cfg = load_health_config(Path(config) if config else None)
        if alert and cfg.alerts is None:
            if config or DEFAULT_HEALTH_CONFIG.is_file():
                why = f"{config or DEFAULT_HEALTH_CONFIG} has no 'alerts:' section"
            else:
                why = f"no alerts are configured (no --config, no {DEFAULT_HEALTH_CONFIG})"
            raise ConfigError(
                f"--alert: {why}",
                hint="add one (see the Alerts section of docs/operations.md), or give --config",
            )
    except DsgError as e:
        _health_unknown(e, json_mode, None)
    try:
        report = run_checks(_access(access_file), cfg, now=when)
    except DsgError as e:
        outcome = None
        if alert:  # the checks cannot run at all: that is news too
            assert cfg.alerts is not None
            failed = alerts.failed_run(e.message, alerts.host_name(cfg.alerts), when)
            outcome = alerts.run_alerts(cfg.alerts, failed, complete=False)
        _health_unknown(e, json_mode, outcome)
    outcome = None
    if alert:
        assert cfg.alerts is not None
        outcome = alerts.run_alerts(cfg.alerts, report)
        report.checks += outcome.problems  # failures rank as UNKNOWN in the status
    deliveries = [d.to_dict() for d in outcome.deliveries] if outcome else None
    if json_mode:
        emit_json(
            {
                "ok": report.status == Status.OK,
                "command": "admin health",
                **report.to_dict(),
                "alerts": deliveries,
            }
        )
    else:
        print(report.plugin_line())
        sys.stdout.flush()
        for c in report.checks:
            out.print(Text(c.line(), style=STYLES[c.status]))
        _print_deliveries(outcome)
    raise typer.Exit(int(report.status))


def _health_unknown(e: DsgError, json_mode: bool, outcome: Outcome | None) -> NoReturn:
    """A health run that could not check: UNKNOWN to the monitoring system, whatever the cause."""
    if json_mode:
        emit_json(
            {
                "ok": False,
                "command": "admin health",
                "status": "UNKNOWN",
                "exit_code": int(Status.UNKNOWN),
                "error": e.to_dict(),
                "alerts": [d.to_dict() for d in outcome.deliveries] if outcome else None,
            }
        )
    else:
        print(f"DSG HEALTH UNKNOWN - {e.message}")
        sys.stdout.flush()
        if outcome:
            for c in outcome.problems:
                out.print(Text(c.line(), style=STYLES[c.status]))
            _print_deliveries(outcome)
        if e.hint:
            err.print(Text(f"hint: {e.hint}", style="yellow"))
    raise typer.Exit(int(Status.UNKNOWN)) from None


def _print_deliveries(outcome: Outcome | None) -> None:
    for d in outcome.deliveries if outcome else ():
        style = "bold red" if d.result == "failed" else "cyan" if d.result == "sent" else ""
        out.print(Text(d.line(), style=style))


@commands.command()
def metrics(
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="write here atomically (e.g. node_exporter's textfile directory/dsg.prom); "
            "default: stdout",
        ),
    ] = "",
    config: ConfigOpt = "",
    access_file: AccessOpt = "",
    audit_log: Annotated[
        str,
        typer.Option(
            "--audit-log",
            help="transaction metrics from this audit log (default "
            "$DSG_LOG_DIR/audit.jsonl or /var/log/dsg/audit.jsonl, if present)",
        ),
    ] = "",
    json_mode: JsonOpt = False,
) -> None:
    """Per-project, per-pool and per-transaction metrics in the Prometheus text format."""
    from dsg.admin import metrics as m

    def body() -> dict[str, Any]:
        cfg = load_health_config(Path(config) if config else None)
        audit = (
            Path(audit_log)
            if audit_log
            else Path(os.environ.get("DSG_LOG_DIR", "/var/log/dsg")) / "audit.jsonl"
        )
        families = m.collect(
            _access(access_file),
            pools=cfg.pools,
            audit_log=audit,
            targets=cfg.replication_targets,
        )
        text = m.render(families)
        samples = sum(len(f.samples) for f in families)
        if output:
            m.write_atomic(Path(output), text)
            if not json_mode:
                out.print(f"wrote {samples} samples to {output}")
            return {"output": output, "samples": samples}
        if not json_mode:
            sys.stdout.write(text)
            sys.stdout.flush()
        return {"output": None, "samples": samples, "text": text}

    run("admin metrics", json_mode, body)


@commands.command("upgrade-repo")
def upgrade_repo(
    path: Annotated[Path, typer.Argument(help="the posix repository's directory")],
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run/--no-dry-run", help="only say what would be converted (default)"),
    ] = True,
    json_mode: JsonOpt = False,
) -> None:
    """Convert a posix repository of format 1 (a hard-linked tree per snapshot, O(files)
    per commit) to format 2 (content-addressed objects, O(changes) per commit), in place.

    Takes the repository's write lock; syncs wait meanwhile. Every distinct file content is
    hash-checked once. Resumable: run it again after an interruption."""
    from dsg.backends.base import LockOwner
    from dsg.backends.posix import REPO_FORMAT, PosixRepository
    from dsg.fs.log import new_tx

    def body() -> dict[str, Any]:
        root = path.absolute()
        repo = PosixRepository(root, root.name)
        owner = LockOwner(user=f"admin:{os.getuid()}", tx=new_tx(), operation="upgrade")
        doc = repo.upgrade(owner, dry_run=dry_run)
        if not json_mode:
            if doc.get("reason"):
                out.print(f"{root}: {doc['reason']}; nothing to do")
            else:
                verb = "would convert" if dry_run else "converted"
                msg = (
                    f"{root}: {verb} {doc['snapshots']} snapshot(s), {doc['objects']} distinct "
                    f"file content(s), {doc['bytes'] / 2**20:.1f} MiB to {REPO_FORMAT}"
                )
                out.print(msg + ("; run with --no-dry-run to do it" if dry_run else ""))
        return doc

    run("admin upgrade-repo", json_mode, body)


@commands.command("set-shape")
def set_shape(
    project: Annotated[str, typer.Argument(help="the project, as named in the access file")],
    data_dir: Annotated[
        list[str] | None,
        typer.Option("--data-dir", help="a data directory name (repeat; '*' for all)"),
    ] = None,
    ignore_name: Annotated[list[str] | None, typer.Option("--ignore-name")] = None,
    ignore_suffix: Annotated[list[str] | None, typer.Option("--ignore-suffix")] = None,
    access_file: AccessOpt = "",
    log_dir: Annotated[str, typer.Option("--log-dir", help="default /var/log/dsg")] = "",
    json_mode: JsonOpt = False,
) -> None:
    """Show, or record, the data directories and ignore rules a project's repository accepts
    (its shape). Only here, on the repository host: a member's .dsgconfig.yml never widens it.
    Without --data-dir it prints the recorded shape. Audited."""
    from dsg.backends.base import LockOwner
    from dsg.backends.registry import open_local
    from dsg.fs.log import new_tx
    from dsg.server.audit import AuditLog
    from dsg.workcopy.rules import DEFAULT_IGNORE_NAMES, DEFAULT_IGNORE_SUFFIXES, ScanRules

    def body() -> dict[str, Any]:
        access = _access(access_file)
        p = access.projects.get(project)
        if p is None:
            raise UsageError(f"no project {project!r} in the access file")
        repo = open_local(p.type, Path(p.mountpoint), project, p.pool)
        old = repo.shape()
        if not data_dir:
            shape = old
            if not json_mode:
                out.print(
                    f"{project}: " + (f"data dirs {shape.describe()}" if shape else "no shape")
                )
            return {"project": project, "shape": _shape_doc(shape)}
        shape = ScanRules(
            frozenset(data_dir),
            frozenset(ignore_name if ignore_name is not None else DEFAULT_IGNORE_NAMES),
            tuple(ignore_suffix if ignore_suffix is not None else DEFAULT_IGNORE_SUFFIXES),
        )
        shape = ScanRules.from_json(shape.to_json(), origin="the new shape")  # checked alike
        owner = LockOwner(user=f"admin:{os.getuid()}", tx=new_tx(), operation="set-shape")
        with repo.lock(owner, 60):
            repo.set_shape(shape)
        audit = AuditLog.in_dir(Path(log_dir or os.environ.get("DSG_LOG_DIR", "/var/log/dsg")))
        audit.record(
            "project.set-shape",
            project=project,
            login=os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid()),
            data_dirs=sorted(shape.data_dirs),
            previous=sorted(old.data_dirs) if old else None,
        )
        if not json_mode:
            out.print(f"{project}: data dirs now {shape.describe()}")
        return {"project": project, "shape": _shape_doc(shape), "previous": _shape_doc(old)}

    run("admin set-shape", json_mode, body)


def _shape_doc(shape: Any) -> dict[str, Any] | None:
    if shape is None:
        return None
    return {
        "data_dirs": sorted(shape.data_dirs),
        "ignore_names": sorted(shape.names),
        "ignore_suffixes": list(shape.suffixes),
    }
