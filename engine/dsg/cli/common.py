"""What every command shares: the consoles, `--json` output, error-to-exit-code mapping,
the working copy at hand, progress bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.text import Text

from dsg.core.errors import EXIT_OK, DsgError, LocalIOError, UsageError
from dsg.core.paths import show_text
from dsg.workcopy.config import (
    PROJECT_CONFIG,
    ProjectConfig,
    find_project_root,
    load_project_config,
)
from dsg.workcopy.workspace import Workspace

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def emit_json(doc: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(doc, default=str) + b"\n")
    sys.stdout.flush()


stack = ExitStack()  # resources a command body opens (repositories); closed by run()


def run(command: str, json_mode: bool, fn: Callable[[], dict[str, Any] | None]) -> None:
    """Run a command body; map errors to messages and exit codes."""
    try:
        try:
            with stack:
                doc = fn() or {}
        except OSError as e:  # the local disk: full, read-only, a quota
            raise LocalIOError.from_oserror(e) from e
    except DsgError as e:
        if json_mode:
            emit_json({"ok": False, "command": command, "error": e.to_dict()})
        else:
            err.print(Text(f"dsg {command}: {show_lines(e.message)}", style="bold red"))
            if e.hint:
                err.print(Text(f"hint: {show_lines(e.hint)}", style="yellow"))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        if not json_mode:
            err.print("interrupted; run the command again to finish (nothing is lost)")
        raise typer.Exit(130) from None
    if json_mode:
        emit_json({"ok": True, "command": command, **doc})
    raise typer.Exit(EXIT_OK)


def show_lines(text: str) -> str:
    """`show_text` line by line: an error may span lines; no line may hold an escape."""
    return "\n".join(map(show_text, text.split("\n")))


def project() -> tuple[Workspace, ProjectConfig]:
    root = find_project_root()
    config = load_project_config(root / PROJECT_CONFIG)
    return Workspace(root, config), config


@contextmanager
def transfer_progress(enabled: bool, label: str) -> Iterator[Callable[[int], None] | None]:
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    ) as prog:
        task = prog.add_task(label, total=None)
        yield lambda n: prog.advance(task, n)


def print_problems(problems: list) -> None:
    for p in problems:
        style = "red" if p.blocking else "yellow"
        out.print(Text(f"  {'blocked' if p.blocking else 'warning'}: {p}", style=style))


def project_relative(root: Path, p: str) -> str:
    """A path given on the command line, as a path relative to the project root."""
    cand = Path(p)
    absolute = cand if cand.is_absolute() else Path.cwd() / cand
    norm = os.path.normpath(absolute)
    prefix = str(root) + "/"
    if not norm.startswith(prefix):
        raise UsageError(f"{p} is outside the project at {root}")
    return norm.removeprefix(prefix)


def snapshot_arg(value: str) -> str:
    v = value.strip()
    if v.isdigit():
        v = f"s{v}"
    if not (v.startswith("s") and v[1:].isdigit() and int(v[1:]) > 0):
        raise UsageError(f"--snapshot {value!r}: expected s1, s2, ... (or a number)")
    return v
