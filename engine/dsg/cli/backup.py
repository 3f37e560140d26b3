"""`dsg admin backup` and `dsg admin restore-drill` (on the repository host).

Argument handling, printing, metrics files and audit records; the work is in `backup.py`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.text import Text

from dsg.admin import backup as b
from dsg.admin.metrics import Family, render, write_atomic
from dsg.cli.admin import AccessOpt, _access
from dsg.cli.common import JsonOpt, emit_json, err, out, run, transfer_progress
from dsg.core.errors import DsgError, RepositoryNotFound, UsageError
from dsg.server.audit import AuditLog
from dsg.zfs.ops import Zfs, check_dataset_name, key_location_url

TextfileOpt = Annotated[
    str,
    typer.Option(
        "--textfile-dir",
        help="write the result as Prometheus metrics here (node_exporter's textfile directory)",
    ),
]
KeyLocationOpt = Annotated[
    str,
    typer.Option(
        "--key-location",
        help="an encrypted (raw) backup: load the project's key from this file (path or "
        "file:// URL; default: the keylocation the backup carries, the primary's key file)",
    ),
]
LogDirOpt = Annotated[
    str,
    typer.Option("--log-dir", help="audit log directory (default $DSG_LOG_DIR or /var/log/dsg)"),
]


commands = typer.Typer()


def _audit(log_dir: str) -> AuditLog:
    return AuditLog.in_dir(Path(log_dir or os.environ.get("DSG_LOG_DIR", "/var/log/dsg")))


def _snap_number(name: str | None) -> float:
    m = b.SNAP_RE.fullmatch(name or "")
    return float(m.group(1)) if m else 0.0


def _previous_value(path: Path, metric: str) -> float | None:
    """A value from the metrics file a previous run wrote (keeps 'last success' across a
    failed run)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    m = re.search(rf"^{re.escape(metric)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None


NameOpt = Annotated[
    str,
    typer.Option(
        "--name",
        help="the target's name (e.g. onsite, offsite): its hold tag dsg-backup-NAME and its "
        "metrics file; default: the hold is named after the target pool",
    ),
]


@commands.command("backup")
def backup_cmd(
    projects: Annotated[
        list[str] | None, typer.Argument(help="projects (default: every zfs project)")
    ] = None,
    to: Annotated[
        str, typer.Option("--to", help="backup parent dataset: <to>/<project> receives")
    ] = "",
    to_host: Annotated[
        str, typer.Option("--to-host", help="backup host (ssh); default: this host")
    ] = "",
    to_prefix: Annotated[
        str,
        typer.Option("--to-prefix", help="prefix for zfs on the receiving side, e.g. 'sudo -n'"),
    ] = "",
    name: NameOpt = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="print the plan; change nothing")
    ] = False,
    access_file: AccessOpt = "",
    textfile_dir: TextfileOpt = "",
    log_dir: LogDirOpt = "",
    json_mode: JsonOpt = False,
) -> None:
    """Replicate project datasets to the backup pool (push): incremental, held base, an
    interrupted step resumed from its token on OpenZFS.

    Exit 0 when every project is backed up (or, with --dry-run, plannable), 1 otherwise.
    """
    if not to:
        raise_usage("--to is required (the backup parent dataset, e.g. backup/dsg)", json_mode)
    check_target = _checked(to, json_mode)
    _checked_name(name, json_mode)
    try:
        access = _access(access_file)
    except DsgError as e:
        fail("admin backup", e, json_mode)
    names = projects or [n for n, p in access.projects.items() if p.type == "zfs"]
    unknown = [n for n in names if n not in access.projects or not access.projects[n].dataset]
    if unknown:
        raise_usage(f"not zfs projects of this host: {', '.join(unknown)}", json_mode)
    zfs = Zfs.from_env()
    receiver = b.receiver_zfs(to_host, to_prefix)

    def one(project: str, on_bytes: Callable[[int], None]) -> tuple[b.Plan, b.Result]:
        source = access.projects[project].dataset
        assert source is not None
        return b.replicate(
            project, source, f"{check_target}/{project}", zfs, receiver,
            name=name or None, dry_run=dry_run, on_bytes=on_bytes,
        )  # fmt: skip

    sources = {n: access.projects[n].dataset or "" for n in names}
    _run_backups(
        "admin backup", names, sources, check_target, one,
        where=f"{to_host}:" if to_host else "", name=name, dry_run=dry_run,
        textfile_dir=textfile_dir, log_dir=log_dir, json_mode=json_mode,
    )  # fmt: skip


@commands.command("pull")
def pull_cmd(
    projects: Annotated[
        list[str] | None,
        typer.Argument(help="projects (default: every project the primary's key may send)"),
    ] = None,
    from_host: Annotated[
        str,
        typer.Option(
            "--from-host",
            help="the primary ([user@]host): its pull account's forced command answers "
            "(dsg admin send-for-backup); ssh program and options from $DSG_SSH_COMMAND",
        ),
    ] = "",
    to: Annotated[
        str, typer.Option("--to", help="backup parent dataset here: <to>/<project> receives")
    ] = "",
    to_prefix: Annotated[
        str,
        typer.Option(
            "--to-prefix",
            help="prefix for zfs here, e.g. 'runuser -u dsg-backup --' (the backup account "
            "with zfs allow receive,create,mount,hold,release,userprop,readonly,mountpoint)",
        ),
    ] = "",
    name: NameOpt = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="print the plan; change nothing")
    ] = False,
    textfile_dir: TextfileOpt = "",
    log_dir: LogDirOpt = "",
    json_mode: JsonOpt = False,
) -> None:
    """Pull project snapshots from a primary into this backup host (the primary cannot
    reach the copy): the same plan, holds, resume, metrics and audit as `dsg admin backup`.

    Exit 0 when every project is backed up (or, with --dry-run, plannable), 1 otherwise.
    """
    from dsg.admin import pull as p

    if not from_host or not to or not name:
        raise_usage(
            "--from-host (the primary), --to (the backup parent dataset) and --name (the "
            "target's name, as the primary's forced command has it) are required",
            json_mode,
        )
    target_root = _checked(to, json_mode)
    _checked_name(name, json_mode)
    try:
        origin = p.RemoteSource(from_host)
    except ValueError as e:
        raise_usage(str(e), json_mode)
    names = list(projects or [])
    if not names:
        try:
            names = origin.projects()
        except DsgError as e:
            fail("admin pull", e, json_mode)
    for n in names:
        try:
            p.check_project_name(n)
        except ValueError as e:
            raise_usage(str(e), json_mode)
    recv = Zfs(shlex.split(to_prefix)) if to_prefix else Zfs.from_env()
    tag = b.hold_tag(target_root, name)

    def one(project: str, on_bytes: Callable[[int], None]) -> tuple[b.Plan, b.Result]:
        return b.replicate_from(
            origin, project, project, f"{target_root}/{project}", recv,
            tag=tag, force=False, dry_run=dry_run, on_bytes=on_bytes,
        )  # fmt: skip

    _run_backups(
        "admin pull", names, {n: f"{from_host}:{n}" for n in names}, target_root, one,
        where="", name=name, dry_run=dry_run, textfile_dir=textfile_dir, log_dir=log_dir,
        json_mode=json_mode,
    )  # fmt: skip


def _run_backups(
    command: str,
    names: list[str],
    sources: dict[str, str],
    target_root: str,
    one: Callable[[str, Callable[[int], None]], tuple[b.Plan, b.Result]],
    *,
    where: str,
    name: str,
    dry_run: bool,
    textfile_dir: str,
    log_dir: str,
    json_mode: bool,
) -> NoReturn:
    """Back up each project with `one`, recording, printing and measuring each the same
    way for push and pull; exit 0 when all went well."""
    audit = _audit(log_dir)
    results: list[dict[str, Any]] = []
    for project in names:
        target = f"{target_root}/{project}"
        started = time.time()
        try:
            with transfer_progress(not json_mode, f"{project}") as prog:
                plan, res = one(project, prog)
            doc = {**res.to_dict(), "plan": plan.to_dict()}
        except (DsgError, ValueError) as e:
            error = e.to_dict() if isinstance(e, DsgError) else {"kind": "error", "message": str(e)}
            res = b.Result(project, sources[project], target, error=error)
            doc = {**res.to_dict(), "plan": None}
        results.append(doc)
        if not dry_run:
            audit.record(
                command.replace(" ", "."),
                login=_login(),
                project=project,
                source=res.source,
                destination=f"{where}{target}",
                name=name or None,
                outcome="ok" if res.ok else "failed",
                common=res.common,
                resumed=res.resumed,
                steps=len(res.steps),
                bytes=res.bytes,
            )
            if textfile_dir:
                _write_backup_metrics(Path(textfile_dir), res, started, name)
        if not json_mode:
            _print_backup(res, dry_run)
    ok = all(r["ok"] for r in results)
    if json_mode:
        emit_json({"ok": ok, "command": command, "dry_run": dry_run, "projects": results})
    raise typer.Exit(0 if ok else 1)


@commands.command("send-for-backup")
def send_for_backup_cmd(
    name: Annotated[
        str,
        typer.Option("--name", help="the backup target this key serves (hold dsg-backup-NAME)"),
    ] = "",
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            help="NAME=DATASET, repeated: the projects this key may back up (default: the "
            "zfs projects of the access file)",
        ),
    ] = None,
    access_file: AccessOpt = "",
    request: Annotated[
        str,
        typer.Option(
            "--request", help="the request (default: $SSH_ORIGINAL_COMMAND, as sshd sets it)"
        ),
    ] = "",
) -> None:
    """(The forced command of a pull key, on the primary.) Answer one backup request:
    list a project's dsg snapshots, send one (raw when encrypted), resume an interrupted
    send from its token, hold or release one under this target's tag. Nothing else.

    Exit 0 answered, 2 refused (the request or the configuration), 1 failed.
    """
    from dsg.admin import pull as p

    try:
        tag = b.hold_tag("", b.check_target_name(name)) if name else ""
        if not tag:
            raise ValueError("--name is required (the backup target this key serves)")
        if project:
            allowed = p.parse_projects(project)
        else:
            access = _access(access_file)
            allowed = {
                n: pa.dataset
                for n, pa in access.projects.items()
                if pa.type == "zfs" and pa.dataset
            }
        req = p.parse_request(request or os.environ.get("SSH_ORIGINAL_COMMAND"), allowed)
        doc = p.serve_request(req, allowed, Zfs.from_env(), tag, sys.stdout.buffer)
    except (DsgError, ValueError) as e:
        message = e.message if isinstance(e, DsgError) else str(e)
        code = e.exit_code if isinstance(e, DsgError) and e.exit_code != 1 else 1
        if isinstance(e, (ValueError, p.RequestRefused)):
            code = 2
        sys.stderr.write(f"dsg send-for-backup: {message}\n")
        raise typer.Exit(code) from None
    if doc is not None:
        sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    raise typer.Exit(0)


def _checked_name(name: str, json_mode: bool) -> None:
    if name:
        try:
            b.check_target_name(name)
        except ValueError as e:
            raise_usage(str(e), json_mode)


def _login() -> str:
    import getpass

    return getpass.getuser()


def fail(command: str, e: DsgError, json_mode: bool) -> NoReturn:
    if json_mode:
        emit_json({"ok": False, "command": command, "error": e.to_dict()})
    else:
        err.print(Text(f"dsg {command}: {e.message}", style="bold red"))
        if e.hint:
            err.print(Text(f"hint: {e.hint}", style="yellow"))
    raise typer.Exit(e.exit_code)


def raise_usage(message: str, json_mode: bool) -> NoReturn:
    fail("admin", UsageError(message), json_mode)


def _checked(dataset: str, json_mode: bool) -> str:
    try:
        return check_dataset_name(dataset.rstrip("/"))
    except ValueError as e:
        raise_usage(str(e), json_mode)


def _print_backup(res: b.Result, dry_run: bool) -> None:
    for note in res.notes:
        out.print(Text(f"{res.project}: note: {note}", style="yellow"))
    if res.resumed:
        out.print(f"{res.project}: resumed the interrupted receive of {res.resumed}")
    if res.error:
        out.print(Text(f"{res.project}: FAILED: {res.error['message']}", style="bold red"))
        if res.error.get("hint"):
            out.print(Text(f"  hint: {res.error['hint']}", style="yellow"))
        return
    if dry_run:
        if not res.steps:
            out.print(f"{res.project}: up to date at {res.common} ({res.target})")
            return
        raw = " raw (encrypted)" if res.raw else ""
        out.print(f"{res.project}: would send{raw} {len(res.steps)} step(s) to {res.target}:")
        for s in res.steps:
            base = f" from {s['base']}" if s["base"] else ""
            out.print(f"  {s['kind']} {s['snapshot']}{base}")
        return
    if not res.steps:
        out.print(f"{res.project}: up to date at {res.common} ({res.target})")
        return
    first, last = res.steps[0]["snapshot"], res.steps[-1]["snapshot"]
    span = first if first == last else f"{first}..{last}"
    raw = " raw (encrypted)" if res.raw else ""
    out.print(
        Text(
            f"{res.project}: sent{raw} {span} ({len(res.steps)} step(s), {res.bytes} bytes) "
            f"in {res.seconds:.1f}s; {res.target} is at {res.common}",
            style="green",
        )
    )


def _write_metrics(
    path: Path, labels: dict[str, str], rows: list[tuple[str, str, float | None]]
) -> None:
    """One textfile: a family per (name, help, value); a None value leaves it empty."""
    fams = []
    for name, help_text, value in rows:
        fam = Family(name, help_text)
        if value is not None:
            fam.add(value, **labels)
        fams.append(fam)
    write_atomic(path, render(fams))


def _write_backup_metrics(
    textfile_dir: Path, res: b.Result, started: float, name: str = ""
) -> None:
    path = b.backup_metric_path(textfile_dir, res.project, name or None)
    key = "dsg_backup_last_success_timestamp_seconds"
    last_ok = started if res.ok else _previous_value(path, key)
    labels = {"project": res.project, "target": res.target, **({"name": name} if name else {})}
    _write_metrics(path, labels, [
        ("dsg_backup_success", "1 when the last backup run succeeded", 1.0 if res.ok else 0.0),
        ("dsg_backup_last_run_timestamp_seconds", "start of the last backup run", started),
        (key, "start of the last successful backup run", last_ok),
        ("dsg_backup_duration_seconds", "duration of the last run", res.seconds),
        ("dsg_backup_bytes", "bytes sent by the last run", float(res.bytes)),
        ("dsg_backup_snapshot", "newest on the backup (sN -> N)", _snap_number(res.common)),
        ("dsg_backup_source_snapshot", "newest on the primary", _snap_number(res.source_head)),
        ("dsg_backup_lag_seconds", "age of the oldest snapshot not backed up", res.lag_seconds),
    ])  # fmt: skip


@commands.command("restore-drill")
def restore_drill_cmd(
    project: Annotated[str, typer.Argument(help="the project to restore")],
    from_: Annotated[
        str, typer.Option("--from", help="backup parent dataset: <from>/<project> is restored")
    ] = "",
    scratch: Annotated[
        str,
        typer.Option(
            "--scratch", help="parent dataset for the scratch copy (default <pool>/dsg-drill)"
        ),
    ] = "",
    keep: Annotated[
        bool, typer.Option("--keep", help="keep the scratch copy (to inspect a failure)")
    ] = False,
    key_location: KeyLocationOpt = "",
    name: NameOpt = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="say what would be restored; change nothing")
    ] = False,
    textfile_dir: TextfileOpt = "",
    log_dir: LogDirOpt = "",
    json_mode: JsonOpt = False,
) -> None:
    """Restore the newest backed-up snapshot to a scratch dataset, verify every file, clean up.

    An encrypted backup (sent raw) is verified with the project's key loaded; without the
    key the drill fails. Exit 0 when the restore verified, 1 when the drill failed (and why
    is printed).
    """
    if not from_:
        raise_usage("--from is required (the backup parent dataset, e.g. backup/dsg)", json_mode)
    backup_root = _checked(from_, json_mode)
    key_url = _key_url(key_location, json_mode)
    scratch_parent = _checked(scratch or f"{backup_root.split('/')[0]}/dsg-drill", json_mode)
    _checked(project, json_mode)
    _checked_name(name, json_mode)
    started = time.time()

    def plan_only() -> dict[str, Any]:
        backup = f"{backup_root}/{project}"
        snaps = b.snapshot_infos(Zfs.from_env(), backup)
        if snaps is None:
            raise RepositoryNotFound(f"backup dataset {backup} does not exist")
        plan = b.plan_replication(backup, f"{scratch_parent}/drill-{project}-<time>", snaps, None)
        key = Zfs.from_env().key_state(backup)
        where = key_url or key.keylocation
        if not json_mode:
            enc = f" (encrypted: raw, key from {where})" if key.encrypted else ""
            out.print(
                f"would restore {project} {plan.source_head} ({len(plan.steps)} snapshots){enc} "
                f"from {backup} into {scratch_parent}/drill-{project}-<time>, verify, destroy"
            )
        doc = {"dry_run": True, "plan": plan.to_dict(), "encrypted": key.encrypted}
        return {**doc, "key_location": where if key.encrypted else None}

    def body() -> dict[str, Any]:
        if dry_run:
            return plan_only()
        zfs = Zfs.from_env()
        with transfer_progress(not json_mode, f"restoring {project}") as prog:
            res = b.restore_drill(
                project, f"{backup_root}/{project}", scratch_parent, zfs,
                keep=keep, key_location=key_url, on_bytes=prog,
            )  # fmt: skip
        _audit(log_dir).record(
            "admin.restore-drill",
            login=_login(),
            project=project,
            backup=res.backup,
            snapshot=res.snapshot,
            outcome="ok" if res.ok else "failed",
            files=res.files,
            encrypted=res.encrypted,
        )
        if textfile_dir:
            _write_drill_metrics(Path(textfile_dir), res, started, name)
        if not json_mode:
            _print_drill(res)
        if not res.ok:
            raise _DrillFailed(res)
        return {"drill": res.to_dict()}

    run("admin restore-drill", json_mode, body)


class _DrillFailed(DsgError):
    kind = "restore_drill_failed"

    def __init__(self, res: b.DrillResult) -> None:
        keyless = (res.error or {}).get("kind") == b.KeyUnavailable.kind
        super().__init__(
            f"restore drill of {res.project} FAILED: {'; '.join(res.problems[:5])}",
            hint="the backup is encrypted and was not verified: give the drill the project's "
            "key (--key-location file:///etc/dsg/keys/<project>.key, or the escrowed copy)"
            if keyless
            else "the backup may be damaged: run `zpool status -v` on the backup pool, keep "
            "the last good backup's holds, and see docs/operations.md (restore drills)",
            details=res.to_dict(),
        )


def _key_url(location: str, json_mode: bool) -> str | None:
    if not location:
        return None
    try:
        return key_location_url(location)
    except ValueError as e:
        raise_usage(str(e), json_mode)


def _print_drill(res: b.DrillResult) -> None:
    if res.ok:
        enc = f" (encrypted, raw; key loaded from {res.key_location})" if res.encrypted else ""
        out.print(
            Text(
                f"RESTORE DRILL OK: {res.project} {res.snapshot} restored from {res.backup}"
                f"{enc}; "
                f"{res.files} files verified ({res.bytes} bytes restored in "
                f"{res.restore_seconds:.1f}s, verified in {res.verify_seconds:.1f}s; "
                f"total {res.seconds:.1f}s)",
                style="green",
            )
        )
        return
    out.print(Text(f"RESTORE DRILL FAILED: {res.project} from {res.backup}", style="bold red"))
    for p in res.problems[:20]:
        out.print(Text(f"  {p}", style="red"))
    if len(res.problems) > 20:
        out.print(Text(f"  ... and {len(res.problems) - 20} more", style="red"))
    where = f"kept at {res.scratch}" if not res.cleaned_up else "cleaned up"
    out.print(f"  scratch copy {res.scratch}: {where}")


def _write_drill_metrics(
    textfile_dir: Path, res: b.DrillResult, started: float, name: str = ""
) -> None:
    path = b.drill_metric_path(textfile_dir, res.project, name or None)
    key = "dsg_restore_drill_last_success_timestamp_seconds"
    last_ok = started if res.ok else _previous_value(path, key)
    labels = {"project": res.project, "backup": res.backup, **({"name": name} if name else {})}
    _write_metrics(path, labels, [
        ("dsg_restore_drill_success", "1 when the last drill verified", 1.0 if res.ok else 0.0),
        ("dsg_restore_drill_last_run_timestamp_seconds", "start of the last drill", started),
        (key, "start of the last passed drill", last_ok),
        ("dsg_restore_drill_duration_seconds", "restore plus verification", res.seconds),
        ("dsg_restore_drill_files_verified", "files re-read and verified", float(res.files)),
        ("dsg_restore_drill_bytes_restored", "bytes received", float(res.bytes)),
        ("dsg_restore_drill_snapshot", "snapshot restored (sN -> N)", _snap_number(res.snapshot)),
    ])  # fmt: skip


@commands.command("restore")
def restore_cmd(
    project: Annotated[str, typer.Argument(help="the project to restore")],
    from_: Annotated[
        str, typer.Option("--from", help="backup parent dataset: <from>/<project> is restored")
    ] = "",
    to: Annotated[
        str, typer.Option("--to", help="the new dataset to restore into (must not exist)")
    ] = "",
    mountpoint: Annotated[
        str, typer.Option("--mountpoint", help="set this mountpoint (default: inherited)")
    ] = "",
    key_location: KeyLocationOpt = "",
    log_dir: LogDirOpt = "",
    json_mode: JsonOpt = False,
) -> None:
    """Restore a project's whole history from the backup into a new dataset, ready to serve.

    Never overwrites: the destination must not exist (move a damaged dataset aside first).
    """
    if not from_ or not to:
        raise_usage("--from (backup parent dataset) and --to (new dataset) are required", json_mode)
    backup_root, dest = _checked(from_, json_mode), _checked(to, json_mode)
    key_url = _key_url(key_location, json_mode)

    def body() -> dict[str, Any]:
        zfs = Zfs.from_env()
        audit = _audit(log_dir)
        try:
            with transfer_progress(not json_mode, f"restoring {project}") as prog:
                res = b.restore_project(
                    project, f"{backup_root}/{project}", dest, zfs,
                    mountpoint=mountpoint or None, key_location=key_url, on_bytes=prog,
                )  # fmt: skip
        except DsgError as e:
            audit.record("admin.restore", login=_login(), project=project, dataset=dest,
                         outcome="failed", reason=e.message)  # fmt: skip
            raise
        audit.record("admin.restore", login=_login(), project=project, dataset=dest,
                     outcome="ok", snapshot=res.head)  # fmt: skip
        if not json_mode:
            out.print(
                Text(
                    f"restored {project} at {res.head} ({res.snapshots} snapshots, {res.bytes} "
                    f"bytes, {res.seconds:.1f}s) into {dest}, mounted at {res.mountpoint}",
                    style="green",
                )
            )
            out.print(
                "next: point the project's access entry (dataset, mountpoint) at it, or "
                "rename it into place; see docs/operations.md (Restore a project)"
            )
        return {"restore": res.to_dict()}

    run("admin restore", json_mode, body)
