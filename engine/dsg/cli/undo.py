"""Undo commands: restore (files back in the working copy), revert (a snapshot undone by a
new one) and rm (files taken out of the project on purpose). Printing and argument handling
only; the work is in `dsg.sync.undo`."""

from __future__ import annotations

import sys
from contextlib import closing
from typing import Annotated, Any

import typer
from rich.text import Text

from dsg.backends.registry import open_repository
from dsg.cli.common import JsonOpt, out, project, project_relative, run, stack, transfer_progress
from dsg.core.errors import UsageError
from dsg.core.paths import show
from dsg.sync import undo
from dsg.sync.refs import resolve_ref
from dsg.workcopy.config import load_user_config

commands = typer.Typer()

SHOWN = 20  # paths listed in the human output; --json lists them all


def _listing(paths: list[str]) -> str:
    more = f"\n  ... and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return "\n".join(f"  {show(p)}" for p in paths[:SHOWN]) + more


@commands.command()
def restore(
    paths: Annotated[
        list[str], typer.Argument(help="files or directories (relative to the project or cwd)")
    ],
    snapshot: Annotated[
        str,
        typer.Option(
            "--snapshot", "-s", metavar="REF", help="sN, a tag, head or head~N (default: base)"
        ),
    ] = "",
    force: Annotated[
        bool, typer.Option("--force", help="replace local edits without keeping a copy")
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Put files or directories back in your working copy as a snapshot had them.

    Without --snapshot: as they were at your last sync (discards local edits, brings back
    files you deleted). A local edit is kept as a conflict copy first, unless --force.
    Files the snapshot did not have are left as they are. Nothing changes in the repository
    until you run 'dsg sync'.
    """

    def body() -> dict[str, Any]:
        ws, config = project()
        user = load_user_config()
        repo = stack.enter_context(closing(open_repository(config)))
        rels = [project_relative(ws.root, p) if p not in (".", "") else "" for p in paths]
        snap = resolve_ref(repo, snapshot) if snapshot else None
        with transfer_progress(not json_mode, "restoring") as prog:
            res = undo.restore(ws, repo, user, rels, snap, force=force, progress=prog)
        if not json_mode:
            out.print(
                f"Restored {len(res.restored)} file(s) from {res.snapshot}; "
                f"{res.unchanged} already as in {res.snapshot}."
            )
            for b in res.backups:
                out.print(Text(f"  kept your version as {show(b)}", style="yellow"))
            if res.extra:
                out.print(
                    Text(
                        f"{len(res.extra)} file(s) here were not in {res.snapshot} and are left "
                        f"as they are:\n{_listing(res.extra)}",
                        style="yellow",
                    )
                )
            if res.untracked:
                out.print(
                    Text(
                        f"{len(res.untracked)} path(s) of {res.snapshot} are outside this "
                        f"copy's data dirs and were not written:\n{_listing(res.untracked)}",
                        style="yellow",
                    )
                )
            if res.restored:
                out.print("'dsg status' shows what the next 'dsg sync' will send.")
        return res.to_dict()

    run("restore", json_mode, body)


@commands.command()
def revert(
    ref: Annotated[str, typer.Argument(metavar="REF", help="sN, a tag, head or head~N")],
    message: Annotated[str, typer.Option("-m", "--message", help="snapshot message")] = "",
    allow_mass_delete: Annotated[
        bool, typer.Option("--allow-mass-delete", help="allow deleting many files")
    ] = False,
    lock_timeout: Annotated[
        float | None, typer.Option("--lock-timeout", help="seconds to wait for the repository lock")
    ] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Make a new snapshot that undoes snapshot REF (the history keeps both).

    Every file REF changed goes back to how REF's parent had it; files changed again after
    REF stop the revert (nothing is committed). Your working copy is then brought to the new
    snapshot, unless it has local changes: then 'dsg sync' combines them.
    """

    def body() -> dict[str, Any]:
        ws, config = project()
        user = load_user_config()
        repo = stack.enter_context(closing(open_repository(config)))
        snap = resolve_ref(repo, ref)
        with transfer_progress(not json_mode, "reverting") as prog:
            res = undo.revert(
                ws,
                repo,
                user,
                snap,
                message=message or None,
                allow_mass_delete=allow_mass_delete,
                lock_timeout=lock_timeout,
                progress=prog,
            )
        if not json_mode:
            if res.committed is None:
                out.print(f"Nothing to revert: what {snap} changed is already undone.")
            else:
                n = len(res.changes)
                out.print(f"Committed {res.committed.id}: reverts {snap} ({n} file(s)).")
                _print_working_copy(res)
        return res.to_dict()

    run("revert", json_mode, body)


@commands.command("rm")
def rm_cmd(
    paths: Annotated[
        list[str], typer.Argument(help="files or directories (relative to the project or cwd)")
    ],
    message: Annotated[str, typer.Option("-m", "--message", help="snapshot message")] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list what would be removed; change nothing")
    ] = False,
    lock_timeout: Annotated[
        float | None, typer.Option("--lock-timeout", help="seconds to wait for the repository lock")
    ] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Remove files or directories from the project on purpose, for everyone.

    One new snapshot without them (the history keeps them: 'dsg restore PATH -s sN' brings
    them back); your working copy then syncs to it. This is also how a directory that is no
    longer in data_dirs leaves the repository: a sync never deletes it by itself. Asks for
    confirmation on a terminal; elsewhere it needs --yes.
    """

    def body() -> dict[str, Any]:
        ws, config = project()
        user = load_user_config()
        repo = stack.enter_context(closing(open_repository(config)))
        rels = [project_relative(ws.root, p) if p not in (".", "") else "" for p in paths]
        plan = undo.remove(ws, repo, user, rels, dry_run=True)
        summary = _rm_summary(plan.paths, plan.head)
        if dry_run:
            if not json_mode:
                out.print(summary)
            return {"dry_run": True, **plan.to_dict()}
        if not yes:
            if json_mode or not sys.stdin.isatty():
                raise UsageError(
                    f"dsg rm asks before it deletes; {summary}",
                    hint="run it again with --yes (or on a terminal, to be asked)",
                    details=plan.to_dict(),
                )
            out.print(summary)
            if not typer.confirm("Remove them from the project for everyone?", default=False):
                raise UsageError("nothing was removed")
        with transfer_progress(not json_mode, "removing") as prog:
            res = undo.remove(
                ws,
                repo,
                user,
                rels,
                message=message or None,
                lock_timeout=lock_timeout,
                progress=prog,
            )
        if not json_mode:
            assert res.committed is not None
            out.print(f"Committed {res.committed.id}: {len(res.paths)} file(s) removed.")
            _print_working_copy(res)
        return res.to_dict()

    run("rm", json_mode, body)


def _rm_summary(paths: list[str], head: str | None) -> str:
    from dsg.sync.ops import where

    examples, dirs = where(paths)
    in_dirs = ", ".join(f"{show(d)}/ ({n})" for d, n in dirs)
    return (
        f"{len(paths)} file(s) of {head} would be removed from the repository, in "
        f"{in_dirs}; e.g. " + ", ".join(show(p) for p in examples)
    )


def _print_working_copy(res: Any) -> None:
    """After a commit made for the user (revert, rm): where their working copy stands."""
    if res.pending_local:
        out.print(
            Text(
                "Your working copy has local changes: run 'dsg sync' to combine "
                f"them with {res.committed.id}.",
                style="yellow",
            )
        )
    elif res.working_copy is not None:
        out.print(f"Your working copy is at {res.working_copy.snapshot}.")
        for b in res.working_copy.backups:
            out.print(Text(f"  kept your version as {show(b)}", style="yellow"))
