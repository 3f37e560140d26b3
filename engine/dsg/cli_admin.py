"""Admin commands (health, metrics), registered on the main app as `dsg admin ...`.

Both run on the repository host and find the projects in the access file. Printing and
argument handling only; the work is in `health.py` and `metrics.py`.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from .access import DEFAULT_ACCESS_FILE, AccessFile, load_access
from .cli import JsonOpt, app, emit_json, err, out, run
from .errors import DsgError, UsageError
from .health import Status, load_health_config, parse_time, run_checks

admin_app = typer.Typer(
    name="admin",
    help="(On the repository host) health checks and metrics for monitoring.",
    no_args_is_help=True,
)
app.add_typer(admin_app, name="admin")

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


@admin_app.command()
def health(
    config: ConfigOpt = "",
    access_file: AccessOpt = "",
    now: Annotated[
        str, typer.Option("--now", help="evaluate as if it were this ISO 8601 time (tests)")
    ] = "",
    json_mode: JsonOpt = False,
) -> None:
    """Check pools, snapshots, scrubs and locks (exit 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN).

    The first line is the summary (Nagios), then one line per check.
    """
    try:
        when = datetime.now(UTC)
        if now:
            try:
                when = parse_time(now)
            except ValueError as e:
                raise UsageError(f"--now: not an ISO 8601 time: {now!r}") from e
        cfg = load_health_config(Path(config) if config else None)
        report = run_checks(_access(access_file), cfg, now=when)
    except DsgError as e:
        # A check that cannot run is UNKNOWN to the monitoring system, whatever the cause.
        if json_mode:
            emit_json(
                {
                    "ok": False,
                    "command": "admin health",
                    "status": "UNKNOWN",
                    "exit_code": int(Status.UNKNOWN),
                    "error": e.to_dict(),
                }
            )
        else:
            print(f"DSG HEALTH UNKNOWN - {e.message}")
            if e.hint:
                err.print(Text(f"hint: {e.hint}", style="yellow"))
        raise typer.Exit(int(Status.UNKNOWN)) from None
    if json_mode:
        emit_json({"ok": report.status == Status.OK, "command": "admin health", **report.to_dict()})
    else:
        print(report.summary())
        sys.stdout.flush()
        for c in report.checks:
            out.print(Text(c.line(), style=STYLES[c.status]))
    raise typer.Exit(int(report.status))


@admin_app.command()
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
    json_mode: JsonOpt = False,
) -> None:
    """Per-project and per-pool metrics in the Prometheus text format."""
    from . import metrics as m

    def body() -> dict[str, Any]:
        cfg = load_health_config(Path(config) if config else None)
        families = m.collect(_access(access_file), pools=cfg.pools)
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
