"""What every command shares: the consoles, `--json` output, error-to-exit-code mapping,
the working copy at hand, progress bars."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from dsg.core.errors import EXIT_OK, DsgError, LocalIOError, UsageError
from dsg.core.paths import show_text
from dsg.fs.durable import atomic_write
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


def run(
    command: str,
    json_mode: bool,
    fn: Callable[[], dict[str, Any] | None],
    exit_code: Callable[[], int] | None = None,
) -> None:
    """Run a command body; map errors to messages and exit codes. `exit_code`, asked after
    a body that worked, may make it nonzero (`dsg status --exit-code`)."""
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
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the exit
        if not json_mode:
            err.print("interrupted; run the command again to finish (nothing is lost)")
        raise typer.Exit(130) from None
    if json_mode:
        emit_json({"ok": True, "command": command, **doc})
    raise typer.Exit(exit_code() if exit_code else EXIT_OK)


def show_lines(text: str) -> str:
    """`show_text` line by line: an error may span lines; no line may hold an escape."""
    return "\n".join(map(show_text, text.split("\n")))


def project() -> tuple[Workspace, ProjectConfig]:
    root = find_project_root()
    config = load_project_config(root / PROJECT_CONFIG)
    return Workspace(root, config), config


class Tracker:
    """A progress display's side of the engine's Progress protocol (sync/execute.py): called
    with the bytes just moved; `expect` gives the plan's totals, `file_done` counts a file."""

    def __init__(self, prog: Progress, task: Any) -> None:
        self._prog, self._task = prog, task
        self.files_done = self.files_total = 0

    def __call__(self, n: int) -> None:
        self._prog.advance(self._task, n)

    def expect(self, files: int, nbytes: int) -> None:
        self.files_total = files
        self._prog.update(self._task, total=nbytes, files=self._files())

    def file_done(self) -> None:
        self.files_done += 1
        self._prog.update(self._task, files=self._files())

    def start(self, files_done: int, files: int, bytes_done: int, nbytes: int) -> None:
        """Totals known up front, some already done (a resumed validate-snapshot)."""
        self.files_done, self.files_total = files_done, files
        self._prog.update(self._task, total=nbytes, completed=bytes_done, files=self._files())

    def _files(self) -> str:
        return f"{self.files_done}/{self.files_total} files" if self.files_total else ""


@contextmanager
def transfer_progress(enabled: bool, label: str) -> Iterator[Tracker | None]:
    """Files and bytes done of the total, rate and time left, on stderr; only on a terminal
    (never in --json, a pipe or a log file)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as prog:
        yield Tracker(prog, prog.add_task(label, total=None, files=""))


CONFLICT_COPIES = "conflict-copies.txt"  # in .dsg/: the copies dsg sync made, one a line
MAX_REMEMBERED = 10_000


def remember_conflict_copies(ws: Workspace, paths: list[str]) -> None:
    """Note the conflict copies a sync made, for `dsg status` to remind of while they last."""
    if not paths:
        return
    known = leftover_conflict_copies(ws) + [p for p in paths if "\n" not in p]
    keep = list(dict.fromkeys(known))[-MAX_REMEMBERED:]
    atomic_write(ws.dir / CONFLICT_COPIES, ("\n".join(keep) + "\n").encode())


def leftover_conflict_copies(ws: Workspace) -> list[str]:
    """The conflict copies dsg made that are still there (until 'dsg clean' or the user
    removes them)."""
    try:
        with open(ws.dir / CONFLICT_COPIES, encoding="utf-8", errors="surrogateescape") as f:
            names = f.read(MAX_REMEMBERED * 1024).splitlines()
    except OSError:
        return []
    return [n for n in names if n and os.path.lexists(ws.root / n)]


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
