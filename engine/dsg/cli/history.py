"""History and integrity commands (blame, validate-*, clean), registered on the main app.

Printing and argument handling only; the work is in `history.py` and `validate.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Annotated, Any

import typer
from rich.text import Text

from dsg.admin import validate
from dsg.backends.base import Repository
from dsg.backends.registry import open_repository
from dsg.cli.common import (
    JsonOpt,
    out,
    project,
    project_relative,
    run,
    stack,
    transfer_progress,
)
from dsg.core.errors import DsgError, UsageError, WorkingCopyError
from dsg.core.manifest import SnapshotRecord
from dsg.core.paths import show, show_text
from dsg.sync import history
from dsg.sync.refs import resolve_ref

commands = typer.Typer()


def _short(h: str | None) -> str:
    return h[:16] if h else "-"


def _records(repo: Repository) -> list[SnapshotRecord]:
    """The history, newest first; stops at a parent link that does not go back in time
    (a damaged link must not loop; 'dsg validate-chain' reports it)."""
    out: list[SnapshotRecord] = []
    for rec in repo.history():
        if out and rec.number >= out[-1].number:
            break
        out.append(rec)
    return out


# --- blame ---------------------------------------------------------------------------------


@commands.command()
def blame(
    path: Annotated[str, typer.Argument(help="file path (relative to the project or cwd)")],
    json_mode: JsonOpt = False,
) -> None:
    """Every version of a file across the repository's history, newest first."""

    def body() -> dict[str, Any]:
        ws, config = project()
        rel = project_relative(ws.root, path)
        repo = stack.enter_context(closing(open_repository(config)))
        records = _records(repo)
        versions, reads = history.blame(rel, records, repo.manifest)
        if not versions:
            raise WorkingCopyError(
                f"{show(rel)} is in no snapshot of the repository",
                hint="paths are relative to the project root; 'dsg list-files' lists them",
            )
        if not json_mode:
            out.print(Text(f"{show(rel)}: {len(versions)} change(s)", style="bold"))
            out.print(
                f"{'snapshot':<9} {'event':<8} {'user':<24} {'time':<26} {'hash':<16}  message"
            )
            for v in versions:
                e = v.entry
                what = "-" if e is None else (f"-> {e.target}" if e.is_link else _short(e.hash_hex))
                out.print(
                    Text(
                        show_text(
                            f"{v.snapshot:<9} {v.event:<8} {v.user:<24} {v.time:<26} "
                            f"{what:<16}  {v.message}"
                        )
                    )
                )
        return {
            "path": rel,
            "head": records[0].id if records else None,
            "versions": [v.to_dict() for v in versions],
            "manifests_read": reads,
        }

    run("blame", json_mode, body)


# --- validate-config -----------------------------------------------------------------------


@commands.command("validate-config")
def validate_config_cmd(json_mode: JsonOpt = False) -> None:
    """Check .dsgconfig.yml and your dsg.yml; exit 1 when either is invalid."""

    def body() -> dict[str, Any]:
        rep = validate.validate_config()
        if not json_mode:
            out.print(f"project config: {rep.project_file or '(not found)'}")
            out.print(f"user config:    {', '.join(rep.user_files) or '(not found)'}")
            for p in rep.problems:
                style = "red" if p.severity == "error" else "yellow"
                out.print(Text(f"  {p}", style=style))
        if rep.errors:
            raise validate_error(
                f"{len(rep.errors)} configuration error(s): "
                + "; ".join(str(p) for p in rep.errors),
                rep.to_dict(),
            )
        if not json_mode:
            out.print(Text("configuration is valid", style="green"))
        return rep.to_dict()

    run("validate-config", json_mode, body)


class ValidationFailed(DsgError):
    """A check found a problem (exit 1); `details` carries the full report."""

    kind = "validation_failed"


def validate_error(message: str, details: dict[str, Any]) -> ValidationFailed:
    return ValidationFailed(message, details=details)


# --- validate-file -------------------------------------------------------------------------


@commands.command("validate-file")
def validate_file_cmd(
    path: Annotated[str, typer.Argument(help="file path (relative to the project or cwd)")],
    snapshot: Annotated[
        str,
        typer.Option(
            "--snapshot", "-s", metavar="REF", help="compare with this snapshot (default: base)"
        ),
    ] = "",
    json_mode: JsonOpt = False,
) -> None:
    """Re-hash a local file and compare it with the base (or a snapshot's) manifest entry."""

    def body() -> dict[str, Any]:
        ws, config = project()
        rel = project_relative(ws.root, path)
        repo = stack.enter_context(closing(open_repository(config))) if snapshot else None
        snap = resolve_ref(repo, snapshot) if repo is not None else None
        check = validate.validate_file(ws, rel, repo, snap)
        if check.expected is None:
            raise WorkingCopyError(f"{show(rel)} is not in {check.against}")
        doc = check.to_dict()
        if not json_mode:
            out.print(f"{show(rel)} against {check.against}:")
            out.print(f"  expected    {_fmt(check.expected)}")
            out.print(f"  local       {_fmt(check.local)}")
            if check.repository is not None:
                out.print(f"  repository  {_fmt(check.repository)}")
        if not check.match:
            why = []
            if check.local != check.expected:
                why.append("the local file differs" if check.local else "the local file is missing")
            if check.repository is not None and check.repository != check.expected:
                why.append(f"the repository's copy in {snap} does not match its manifest")
            raise validate_error(f"{show(rel)}: mismatch ({'; '.join(why)})", doc)
        if not json_mode:
            out.print(Text("match", style="green"))
        return doc

    run("validate-file", json_mode, body)


def _fmt(d: dict[str, Any] | None) -> str:
    if d is None:
        return "(absent)"
    if d.get("type") == "link":
        return f"link -> {d.get('target')}"
    if d.get("type") == "file":
        return f"{d['size']} bytes, xxh3-128 {d['hash']}"
    return str(d.get("type"))


# --- validate-snapshot ---------------------------------------------------------------------


@contextmanager
def _progress_bar(
    enabled: bool, label: str
) -> Iterator[tuple[Callable[[validate.SnapshotCheck], None], Callable[[int], None]] | None]:
    with transfer_progress(enabled, label) as t:
        if t is None:
            yield None
            return

        def start(c: validate.SnapshotCheck) -> None:
            t.start(c.files_verified, c.files_total, c.bytes_verified, c.bytes_total)

        def one_file(n: int) -> None:
            t(n)
            t.file_done()

        yield start, one_file


@commands.command("validate-snapshot")
def validate_snapshot_cmd(
    snapshot: Annotated[
        str,
        typer.Option(
            "--snapshot", "-s", metavar="REF", help="sN, a tag or head~N (default: the head)"
        ),
    ] = "",
    max_duration: Annotated[
        float | None,
        typer.Option("--max-duration", help="stop after about this many seconds; resumable"),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="ignore saved progress and start over")
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Re-read a snapshot's files and check them (and its manifest) against the record.

    Every file is read from the repository and its size and xxh3-128 hash compared with
    the manifest entry; the manifest's digest is compared with the snapshot's record.
    """

    def body() -> dict[str, Any]:
        if max_duration is not None and max_duration < 0:
            raise UsageError("--max-duration must be 0 or more seconds")
        ws, config = project()
        repo = stack.enter_context(closing(open_repository(config)))
        snap = resolve_ref(repo, snapshot) if snapshot else repo.head()
        if snap is None:
            raise WorkingCopyError(f"repository {config.name} has no snapshots yet")
        with _progress_bar(not json_mode, f"validating {snap}") as bar:
            check = validate.validate_snapshot(
                repo,
                snap,
                ws.dir,
                max_duration=max_duration,
                restart=restart,
                on_start=bar[0] if bar else None,
                on_file=bar[1] if bar else None,
            )
        doc = check.to_dict()
        if not json_mode:
            resumed = f" (resumed after {check.resumed_from})" if check.resumed_from else ""
            out.print(
                f"{snap}: {check.status}; {check.files_verified} of {check.files_total} files "
                f"verified{resumed}, {check.bytes_verified} bytes; "
                f"{check.links} link(s) not read"
            )
            if not check.complete:
                out.print("run 'dsg validate-snapshot' again to continue")
        if not check.ok:
            lines = []
            if check.digest_problem:
                lines.append(f"  manifest: {check.digest_problem}")
            for m in check.mismatches:
                lines.append(
                    f"  {show(m.path)}: {m.problem}: expected {_fmt(m.expected)}, got {_fmt(m.got)}"
                )
            raise validate_error(
                f"snapshot {snap} does not match its manifest ({check.status}):\n"
                + "\n".join(lines),
                doc,
            )
        if not json_mode and check.outside_shape:
            shown = ", ".join(show(p) for p in check.outside_shape[:5])
            out.print(
                Text(
                    f"warning: {len(check.outside_shape)} path(s) of {snap} are outside the "
                    f"project's data dirs or hidden ({shown}); dsg never applies them to a "
                    "working copy",
                    style="yellow",
                )
            )
        if not json_mode and check.complete:
            out.print(Text(f"{snap} is intact", style="green"))
        return doc

    run("validate-snapshot", json_mode, body)


# --- validate-chain ------------------------------------------------------------------------


@commands.command("validate-chain")
def validate_chain_cmd(json_mode: JsonOpt = False) -> None:
    """Check the history s1 .. head: ids, parents, chain hashes, manifest digests.

    Also checks that the snapshot this working copy synced to is unchanged.
    """

    def body() -> dict[str, Any]:
        ws, config = project()
        repo = stack.enter_context(closing(open_repository(config)))
        check = validate.validate_chain(repo, ws.base_record())
        doc = check.to_dict()
        if check.problems:
            first = check.problems[0]
            listing = "\n".join(f"  {p.snapshot} [{p.check}]: {p.message}" for p in check.problems)
            raise validate_error(
                f"history is broken at {first.snapshot} ({first.check}): {first.message}\n"
                + listing,
                doc,
            )
        if not json_mode:
            out.print(
                Text(
                    f"history intact: {check.checked} snapshot(s), s1 .. {check.head or '(empty)'}",
                    style="green",
                )
            )
        return doc

    run("validate-chain", json_mode, body)


# --- clean ---------------------------------------------------------------------------------


@commands.command()
def clean(
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run/--no-dry-run", help="only list (default); --no-dry-run deletes"),
    ] = True,
    json_mode: JsonOpt = False,
) -> None:
    """List (or with --no-dry-run, delete) removable local state; never tracked data.

    Conflict copies, stale temp files, validate progress files, stale snapshot mounts.
    """

    def body() -> dict[str, Any]:
        ws, _ = project()
        items = validate.clean(ws, dry_run)
        if not json_mode:
            verb = "would remove" if dry_run else "removed"
            for it in items:
                state = verb if (dry_run or it.removed) else it.note
                note = f" ({it.note})" if it.note and (dry_run or it.removed) else ""
                out.print(Text(f"  {state:<13} {it.kind:<18} {show(it.path)}{note}"))
            total = sum(it.bytes for it in items)
            out.print(f"{len(items)} item(s), {total} bytes" + (" (dry run)" if dry_run else ""))
            if dry_run and items:
                out.print("run 'dsg clean --no-dry-run' to delete them")
        failed = [it for it in items if not dry_run and not it.removed]
        doc = {"dry_run": dry_run, "items": [it.to_dict() for it in items]}
        if failed:
            raise WorkingCopyError(
                f"{len(failed)} item(s) could not be removed: "
                + "; ".join(f"{show(it.path)}: {it.note}" for it in failed),
                details=doc,
            )
        return doc

    run("clean", json_mode, body)
