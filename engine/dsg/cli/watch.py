"""`dsg watch`: the optional file watcher (Linux) that lets a status with nothing changed
skip the walk of the tree. Printing and argument handling only; the watcher is in
`dsg.workcopy.watch`."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from dsg.cli.common import JsonOpt, err, out, run
from dsg.core.errors import EXIT_ERROR, EXIT_OK, UsageError
from dsg.workcopy import watch as watch_mod
from dsg.workcopy.config import find_project_root
from dsg.workcopy.workspace import Workspace

commands = typer.Typer()

STOP_WAIT = 5.0  # seconds `--stop` waits for the watcher to be gone


@commands.command()
def watch(
    stop: Annotated[
        bool, typer.Option("--stop", help="stop the watcher running for this working copy")
    ] = False,
    status: Annotated[
        bool, typer.Option("--status", help="report whether a watcher runs here, and its counts")
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Watch the working copy for changes (Linux, inotify) so that 'dsg status' with nothing
    changed answers without walking the tree.

    Runs in the foreground until stopped (Ctrl-C, SIGTERM or 'dsg watch --stop'); run it
    under nohup or a systemd user unit to keep it. Optional: without a watcher, or when it
    has lost events or stopped, status walks the tree as always. One watcher per working
    copy. Exits 0 when stopped; with --status, 0 when a healthy watcher answers, 1 when none
    does (or it is unhealthy).
    """
    code = EXIT_OK

    def body() -> dict[str, Any]:
        nonlocal code
        if stop and status:
            raise UsageError("use --stop or --status, not both")
        ws = Workspace(find_project_root())
        if status:
            reply = watch_mod.request(ws.dir, "status")
            if reply is None or reply.get("ok") is not True:
                code = EXIT_ERROR
                if not json_mode:
                    out.print(f"no watcher answers for {ws.root}: status walks the tree")
                return {"running": False}
            doc = {k: v for k, v in reply.items() if k != "ok"}
            code = EXIT_OK if doc.get("healthy") is True else EXIT_ERROR
            if not json_mode:
                state = "healthy" if code == EXIT_OK else f"unhealthy: {doc.get('problem')}"
                out.print(
                    f"watcher pid {doc.get('pid')} for {doc.get('root')}: {state}\n"
                    f"  epoch {doc.get('epoch')}, since {doc.get('started')}\n"
                    f"  {doc.get('watches')} directories watched, {doc.get('events')} events,"
                    f" {doc.get('changes')} changes, {doc.get('overflows')} overflows,"
                    f" {doc.get('rewatches')} re-watches"
                )
            return doc
        if stop:
            reply = watch_mod.request(ws.dir, "stop")
            if reply is None or reply.get("stopping") is not True:
                if not json_mode:
                    out.print(f"no watcher answers for {ws.root}")
                return {"stopped": False}
            deadline = time.monotonic() + STOP_WAIT
            while (ws.dir / watch_mod.SOCKET).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not json_mode:
                out.print(f"stopped the watcher (pid {reply.get('pid')}) for {ws.root}")
            return {"stopped": True, "pid": reply.get("pid")}
        ws.ensure_dir()
        w = watch_mod.Watcher(ws.root)

        def ready(w: watch_mod.Watcher) -> None:
            if not json_mode:
                state = "" if w.healthy else f" (unhealthy: {w.problem}; retrying)"
                err.print(
                    f"watching {ws.root}: {len(w.wds)} directories{state}. "
                    "Ctrl-C or 'dsg watch --stop' stops it."
                )

        w.run(on_ready=ready)
        if not json_mode:
            err.print(f"stopped watching {ws.root}" + (f": {w.problem}" if w.problem else ""))
        return {"stopped": True, **w.status(), "running": False}

    run("watch", json_mode, body, exit_code=lambda: code)
