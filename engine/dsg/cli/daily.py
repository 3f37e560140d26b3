"""The daily commands: init, clone, status, sync, resolve, log, list-files, tags,
list-repos, snapfetch, snapmount, serve."""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from dsg.backends.registry import open_repository
from dsg.cli.common import (
    JsonOpt,
    err,
    leftover_conflict_copies,
    out,
    print_problems,
    project,
    project_relative,
    remember_conflict_copies,
    run,
    stack,
    transfer_progress,
)
from dsg.core.compare import DESCRIPTIONS
from dsg.core.errors import EXIT_CONFLICTS, ConfigError, UsageError
from dsg.core.paths import show, show_text
from dsg.core.plan import Action, Item, Plan
from dsg.sync import ops
from dsg.sync.refs import resolve_ref, tags_by_snapshot
from dsg.workcopy.config import (
    PROJECT_CONFIG,
    IgnoreRules,
    ProjectConfig,
    RepositoryConfig,
    load_project_config,
    load_user_config,
)
from dsg.workcopy.git import GITIGNORE, GitignoreResult, ensure_gitignore, tracked_data_files
from dsg.workcopy.rules import ScanRules

commands = typer.Typer()

ACTION_TITLES = {
    Action.conflict: "Conflicts (sync is blocked until resolved)",
    Action.upload: "To upload",
    Action.delete_remote: "To delete in the repository",
    Action.download: "To download",
    Action.delete_local: "To delete locally (deleted in the repository)",
    Action.restore: "To restore to the base version",
    Action.none: "Nothing to transfer",
}

# What the next sync does about it.
WILL: dict[Action, str] = {
    Action.none: "nothing to do",
    Action.upload: "will upload",
    Action.download: "will download",
    Action.delete_local: "will delete here",
    Action.delete_remote: "will delete on the server",
    Action.conflict: "conflict",
    Action.restore: "will go back to the base version on both sides",
}

# Totals: "3 to upload (1.2 MiB)"; and after a sync: "3 uploaded (1.2 MiB)".
TOTAL_WORDS: dict[Action, tuple[str, str]] = {
    Action.upload: ("to upload", "uploaded"),
    Action.download: ("to download", "downloaded"),
    Action.delete_remote: ("to delete on the server", "deleted on the server"),
    Action.delete_local: ("to delete here", "deleted here"),
    Action.restore: ("to restore", "restored"),
}


def plain(it: Item) -> str:
    """One file's line: what happened and what the sync does, in words."""
    words = f"{DESCRIPTIONS[it.state]} — {WILL[it.action]}"
    if it.choice:
        words = f"{DESCRIPTIONS[it.state]} — resolved with --use {it.choice}: {WILL[it.action]}"
    elif it.action == Action.conflict:
        words += " (dsg resolve PATH --use local|remote|base)"
    return words


def _size(it: Item) -> int:
    e = {
        Action.upload: it.local,
        Action.download: it.remote,
        Action.restore: it.base,
        Action.delete_local: it.local,
        Action.delete_remote: it.base,
    }.get(it.action)
    return e.size if e is not None and not e.is_link else 0


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # not reached


def totals(plan: Plan, *, done: bool = False) -> str:
    """Files and bytes per action: "2 to upload (1.5 KiB), 1 conflict"."""
    parts = []
    for action, (todo, past) in TOTAL_WORDS.items():
        items = plan.by_action(action)
        if items:
            nbytes = sum(_size(it) for it in items)
            parts.append(f"{len(items)} {past if done else todo} ({human_bytes(nbytes)})")
    n = len(plan.conflicts)
    if n:
        parts.append(f"{n} conflict{'s' if n != 1 else ''}")
    return ", ".join(parts)


def print_plan(
    plan: Plan, *, show_unchanged: bool = False, header: str | None = None, verbose: bool = False
) -> None:
    if header:
        out.print(Text(header, style="bold"))
    out.print(f"base: {plan.base_id or '(none)'}   repository head: {plan.remote_id or '(empty)'}")
    groups: dict[Action, list] = {}
    for it in plan.items:
        groups.setdefault(it.action, []).append(it)
    for action, title in ACTION_TITLES.items():
        items = groups.get(action, [])
        if action == Action.none and not show_unchanged:
            items = []
        if not items:
            continue
        style = "bold red" if action == Action.conflict else "bold"
        out.print(Text(f"\n{title} ({len(items)}):", style=style))
        # One Text per group: rich's cost is per print (~50 us), and a group may be 10,000 lines.
        lines = (
            f"  {show(it.path)}   {plain(it)}{f'   [{it.state.value}]' if verbose else ''}"
            for it in items
        )
        out.print(Text("\n".join(lines)))
    quiet = plan.unchanged + (0 if show_unchanged else len(groups.get(Action.none, [])))
    if plan.is_noop:
        out.print(Text(f"\nUp to date ({quiet} files unchanged).", style="green"))
    else:
        out.print(f"\nTotal: {totals(plan)}; {quiet} other files unchanged.")
    if plan.untracked:
        shown = ", ".join(show(u) for u in plan.untracked[:5])
        more = f" and {len(plan.untracked) - 5} more" if len(plan.untracked) > 5 else ""
        out.print(
            Text(
                f"{len(plan.untracked)} path(s) not synced here: outside this copy's data_dirs "
                f"or ignore rules, or outside the repository's ({shown}{more}). They are left "
                "as they are, here and in the repository; if data_dirs changed by mistake, "
                "fix .dsgconfig.yml.",
                style="yellow",
            )
        )
    if plan.stale_resolutions:
        out.print(
            Text(
                f"{len(plan.stale_resolutions)} resolution(s) no longer apply (files changed "
                "since); resolve again.",
                style="yellow",
            )
        )


INIT_PROMPTS = (
    ("repo_type", "repository type (posix/zfs)"),
    ("repo_path", "repository base path (absolute, on the repository host)"),
    ("repo_name", "repository name"),
)
MAX_PROMPTS = 5
# where pydantic reports a field -> the init value it comes from
_FIELDS = {"type": "repo_type", "mountpoint": "repo_path", "name": "repo_name"}


def _init_config(values: dict[str, str], host: str, pool: str, data_dirs: str) -> ProjectConfig:
    return ProjectConfig(
        name=values["repo_name"],
        repository=RepositoryConfig.model_validate(
            {
                "type": values["repo_type"],
                "host": host,
                "mountpoint": values["repo_path"],
                **({"pool": pool} if pool else {}),
            }
        ),
        data_dirs=[d.strip() for d in data_dirs.split(",") if d.strip()],
        ignore=IgnoreRules(),
    )


def _errors(e: ValueError) -> list[dict[str, Any]]:
    errors = getattr(e, "errors", None)
    return list(errors()) if callable(errors) else []


# stand-ins for the values not asked yet, so that an answer is checked on its own
_PLACEHOLDERS = {"repo_type": "posix", "repo_path": "/", "repo_name": "project"}


def _answer_errors(
    values: dict[str, str], key: str, host: str, pool: str, data_dirs: str
) -> list[str]:
    """What is wrong with the answer for `key` (one line each), else nothing."""
    probe = {k: v or _PLACEHOLDERS[k] for k, v in values.items()}
    try:
        _init_config(probe, host, pool, data_dirs)
    except ValueError as e:
        mine = [x for x in _errors(e) if x.get("loc") and _FIELDS.get(str(x["loc"][-1])) == key]
        return _short_errors(e, mine) if mine else []
    return []


def _short_errors(e: ValueError, errors: list[dict[str, Any]] | None = None) -> list[str]:
    """One line per invalid value, without pydantic's types and links."""
    lines = []
    for x in _errors(e) if errors is None else errors:
        field = str(x["loc"][-1]) if x.get("loc") else "value"
        msg = str(x.get("msg", "")).removeprefix("Value error, ")
        name = _FIELDS.get(field, field).replace("_", "-")
        lines.append(show_text(f"  --{name} {str(x.get('input', ''))[:80]!r}: {msg}"))
    return lines or [show_text(f"  {e}")]


def print_gitignore(res: GitignoreResult) -> None:
    for note in res.notes:
        out.print(Text(note, style="yellow"))
    if res.changed:
        out.print(f"Added .dsg/ and the data dirs to {GITIGNORE} (code in git, data in dsg).")
    elif not res.written:
        out.print(
            Text(
                f"Not written to {GITIGNORE} ({res.reason}). To keep the data out of git, "
                f"add these lines to {GITIGNORE} in {Path(res.path).parent}:",
                style="yellow",
            )
        )
        for line in res.lines:
            out.print(Text(f"    {show_text(line)}"))


@commands.command()
def init(
    repo_type: Annotated[str, typer.Option("--repo-type", help="posix (alias xfs) or zfs")] = "",
    host: Annotated[str, typer.Option("--host", help="repository host")] = "localhost",
    repo_path: Annotated[str, typer.Option("--repo-path", help="base directory (mountpoint)")] = "",
    repo_name: Annotated[str, typer.Option("--repo-name", help="repository name")] = "",
    pool: Annotated[str, typer.Option("--pool", help="ZFS pool (zfs only)")] = "",
    data_dirs: Annotated[
        str, typer.Option("--data-dirs", help="comma-separated data directory names")
    ] = "input,output,frozen",
    message: Annotated[str, typer.Option("-m", "--message", help="message for s1")] = "",
    interactive: Annotated[
        bool, typer.Option("--interactive/--no-interactive", help="prompt for missing values")
    ] = True,
    json_mode: JsonOpt = False,
) -> None:
    """Create the repository from this project's data and commit snapshot s1."""

    def body() -> dict[str, Any]:
        root = Path.cwd()
        cfg_path = root / PROJECT_CONFIG
        if cfg_path.exists() and not (repo_type or repo_path or repo_name):
            config = load_project_config(cfg_path)
        else:
            ask = interactive and not json_mode and sys.stdin.isatty()
            values = {"repo_type": repo_type, "repo_path": repo_path, "repo_name": repo_name}
            for key, label in INIT_PROMPTS:
                for _ in range(MAX_PROMPTS + 1):  # the last turn only checks the answer
                    if values[key]:
                        break
                    if not ask:
                        raise UsageError(
                            f"--{key.replace('_', '-')} is required with --no-interactive"
                        )
                    default = root.name if key == "repo_name" else None
                    values[key] = typer.prompt(label, default=default).strip()
                    for line in _answer_errors(values, key, host, pool, data_dirs):
                        err.print(Text(line, style="yellow"))  # then asked again
                        values[key] = ""
                else:
                    raise UsageError("too many invalid answers; see 'dsg init --help'")
            try:
                config = _init_config(values, host, pool, data_dirs)
            except ValueError as e:  # an invalid option: one line each, no validation dump
                raise ConfigError(
                    "invalid init options:\n" + "\n".join(_short_errors(e)),
                    hint="see 'dsg init --help'",
                ) from None
            if cfg_path.exists():
                existing = load_project_config(cfg_path)
                if existing != config:
                    raise ConfigError(
                        f"{PROJECT_CONFIG} already exists with different settings",
                        hint="run 'dsg init' without options to use it, or remove it",
                    )
        user = load_user_config()
        repo = stack.enter_context(closing(open_repository(config)))
        with transfer_progress(not json_mode, "uploading") as prog:
            result = ops.init(root, config, repo, user, message or None, progress=prog)
        ignored = ensure_gitignore(root, config.data_dirs)
        if not json_mode:
            n = result.committed.entry_count if result.committed else 0
            out.print(f"Created repository {config.name} at {repo.location}: s1 with {n} entries.")
            print_problems(result.problems)
            print_gitignore(ignored)
        return {"repository": repo.location, **result.to_dict(), "gitignore": ignored.to_dict()}

    run("init", json_mode, body)


@commands.command()
def clone(json_mode: JsonOpt = False) -> None:
    """Fetch the repository's head snapshot into this project (after 'git clone')."""

    def body() -> dict[str, Any]:
        ws, config = project()
        user = load_user_config()
        repo = stack.enter_context(closing(open_repository(config)))
        with transfer_progress(not json_mode, "downloading") as prog:
            result = ops.clone(ws, repo, user, prog)
        ignored = ensure_gitignore(ws.root, config.data_dirs)
        if not json_mode:
            n = len(result.plan.by_action(Action.download))
            out.print(f"Cloned {config.name} at {result.snapshot}: {n} files downloaded.")
            print_problems(result.problems)
            print_gitignore(ignored)
        return {**result.to_dict(), "gitignore": ignored.to_dict()}

    run("clone", json_mode, body)


@commands.command()
def status(
    all_files: Annotated[bool, typer.Option("--all", help="also list unchanged files")] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="also show each file's sync state code")
    ] = False,
    exit_code: Annotated[
        bool,
        typer.Option(
            "--exit-code", help="exit 3 when there are conflicts or names that block a sync"
        ),
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Show what a sync would do, file by file (three-way: local, base, repository).

    Exits 0 when the plan could be worked out (conflicts included), 1 on an error; with
    --exit-code, 3 when there are conflicts or names that block a sync.
    """
    blocked = False

    def body() -> dict[str, Any]:
        nonlocal blocked
        ws, config = project()
        repo = stack.enter_context(closing(open_repository(ws.config)))
        result = ops.status(ws, repo, keep_unchanged=json_mode or all_files)
        copies = leftover_conflict_copies(ws)
        in_git = tracked_data_files(ws.root, config.data_dirs)
        blocked = bool(result.plan.conflicts) or any(p.blocking for p in result.problems)
        if not json_mode:
            print_plan(result.plan, show_unchanged=all_files, verbose=verbose)
            if result.problems:
                out.print(Text("\nProblems:", style="bold"))
                print_problems(result.problems)
            if result.mass_delete is not None:
                guard = result.mass_delete
                out.print(Text("\n'dsg sync' would stop here (mass-delete guard):", style="bold"))
                out.print(Text(guard.message.removesuffix("\nnothing was changed"), style="yellow"))
                out.print(Text(guard.hint or ""))
            if copies:
                shown = ", ".join(show(c) for c in copies[:3])
                more = f" and {len(copies) - 3} more" if len(copies) > 3 else ""
                out.print(
                    Text(
                        f"{len(copies)} conflict cop{'y' if len(copies) == 1 else 'ies'} "
                        f"left from earlier syncs ({shown}{more}): keep what you need, then "
                        "'dsg clean' lists them and 'dsg clean --no-dry-run' removes them.",
                        style="yellow",
                    )
                )
            if in_git:
                shown = ", ".join(show(c) for c in in_git[:3])
                more = f" and {len(in_git) - 3} more" if len(in_git) > 3 else ""
                out.print(
                    Text(
                        f"git tracks {len(in_git)} file(s) inside data dirs ({shown}{more}): "
                        "data belongs in dsg, not git. 'git rm -r --cached PATH' stops "
                        f"tracking them (the files stay); {GITIGNORE} keeps them out.",
                        style="yellow",
                    )
                )
        return {**result.to_dict(), "conflict_copies": copies, "git_tracked_data": in_git}

    run("status", json_mode, body, exit_code=lambda: EXIT_CONFLICTS if exit_code and blocked else 0)


@commands.command()
def sync(
    message: Annotated[str, typer.Option("-m", "--message", help="snapshot message")] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan; change nothing")
    ] = False,
    continue_: Annotated[
        bool, typer.Option("--continue", help="apply choices from .dsg/conflicts.txt first")
    ] = False,
    allow_mass_delete: Annotated[
        bool,
        typer.Option(
            "--allow-mass-delete",
            help="allow deleting many files (more than the limits in .dsgconfig.yml 'safety:')",
        ),
    ] = False,
    lock_timeout: Annotated[
        float | None, typer.Option("--lock-timeout", help="seconds to wait for the repository lock")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="with --dry-run: each file's state code")
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Upload local changes and download the repository's, as one new snapshot."""

    def body() -> dict[str, Any]:
        ws, config = project()
        user = load_user_config()
        repo = stack.enter_context(closing(open_repository(config)))
        with transfer_progress(not json_mode, "syncing") as prog:
            result = ops.sync(
                ws,
                repo,
                user,
                message=message or None,
                dry_run=dry_run,
                continue_=continue_,
                allow_mass_delete=allow_mass_delete,
                lock_timeout=lock_timeout,
                progress=prog,
            )
        if not json_mode:
            if dry_run:
                print_plan(
                    result.plan,
                    header="Dry run: this is what 'dsg sync' would do.",
                    verbose=verbose,
                )
            elif result.plan.is_noop:
                out.print(f"Up to date at {result.snapshot or '(empty)'}.")
            else:
                summary = totals(result.plan, done=True)
                made = f"committed {result.committed.id}" if result.committed else "no new snapshot"
                out.print(f"Synced: {summary}; {made}; now at {result.snapshot}.")
            for b in result.backups:
                out.print(Text(f"  kept your version as {show(b)}", style="yellow"))
            if result.backups:
                out.print("  (compare, keep what you need; 'dsg clean' lists the copies)")
            print_problems(result.problems)
        remember_conflict_copies(ws, result.backups)
        return result.to_dict()

    run("sync", json_mode, body)


@commands.command()
def resolve(
    paths: Annotated[list[str], typer.Argument(help="conflicted paths (relative to the project)")],
    use: Annotated[str, typer.Option("--use", help="local, remote or base")],
    json_mode: JsonOpt = False,
) -> None:
    """Record which side wins for conflicted paths; the next 'dsg sync' applies it."""

    def body() -> dict[str, Any]:
        if use not in ("local", "remote", "base"):
            raise UsageError("--use must be local, remote or base")
        ws, _ = project()
        repo = stack.enter_context(closing(open_repository(ws.config)))
        rels = [project_relative(ws.root, p) for p in paths]
        items = ops.resolve(ws, repo, rels, use)
        if not json_mode:
            for it in items:
                out.print(Text(f"{show(it.path)}: will use {use} on the next 'dsg sync'"))
        return {"resolved": [{"path": it.path, "use": use} for it in items]}

    run("resolve", json_mode, body)


@commands.command("log")
def log_cmd(
    ref: Annotated[
        str,
        typer.Argument(metavar="[REF]", help="start at this snapshot: sN, a tag, head~N"),
    ] = "",
    limit: Annotated[int, typer.Option("-n", "--limit", help="how many snapshots")] = 20,
    json_mode: JsonOpt = False,
) -> None:
    """The repository's snapshots, newest first (from REF back), with their tags."""

    def body() -> dict[str, Any]:
        _, config = project()
        repo = stack.enter_context(closing(open_repository(config)))
        start = resolve_ref(repo, ref) if ref else None
        recs = ops.log_records(repo, limit if limit > 0 else None, start)
        tagged = tags_by_snapshot(repo)
        if not json_mode:
            for r in recs:
                who = f"{r.author_name} <{r.author}>"
                if r.login_differs:  # what the host authenticated, beside what was claimed
                    who += f" [login {r.login}]"
                names = f"  ({', '.join(tagged[r.id])})" if r.id in tagged else ""
                when = r.created_at  # an imported snapshot: its original date, then the import's
                if r.imported_at and r.imported_at != r.created_at:
                    when += f" (imported {r.imported_at})"
                out.print(Text(show_text(f"{r.id:<6} {when}  {who}{names}"), style="bold"))
                out.print(Text(f"       {show_text(r.message)}  ({r.entry_count} entries)"))
        return {
            "snapshots": [
                {
                    "id": r.id,
                    "parent": r.parent,
                    "author": r.author,
                    "author_name": r.author_name,
                    "message": r.message,
                    "created_at": r.created_at,
                    "imported_at": r.imported_at or None,
                    "entry_count": r.entry_count,
                    "total_bytes": r.total_bytes,
                    "manifest_digest": r.manifest_digest,
                    "chain": r.chain,
                    "login": r.login or None,
                    "tags": tagged.get(r.id, []),
                }
                for r in recs
            ]
        }

    run("log", json_mode, body)


@commands.command("list-files")
def list_files(json_mode: JsonOpt = False) -> None:
    """Files of the snapshot this working copy is at, with who last changed each."""

    def body() -> dict[str, Any]:
        ws, _ = project()
        base = ws.base()
        if not json_mode:
            for e in base:
                kind = f"-> {show(e.target or '')}" if e.is_link else f"{e.size:>12}"
                out.print(Text(f"{kind}  s{e.snap:<5} {show_text(e.user):<24} {show(e.path)}"))
        return {"snapshot": base.snapshot, "files": [e.to_dict() for e in base]}

    run("list-files", json_mode, body)


@commands.command()
def tag(
    name: Annotated[str, typer.Argument(help="tag name, e.g. v1.0")],
    message: Annotated[str, typer.Option("-m", "--message", help="why this snapshot")] = "",
    snapshot: Annotated[
        str,
        typer.Option(
            "--snapshot",
            "-s",
            metavar="REF",
            help="snapshot to tag: sN, a tag, head~N (default: the head)",
        ),
    ] = "",
    json_mode: JsonOpt = False,
) -> None:
    """Name a snapshot (tags never move)."""

    def body() -> dict[str, Any]:
        _, config = project()
        user = load_user_config()
        repo = stack.enter_context(closing(open_repository(config)))
        snap = resolve_ref(repo, snapshot) if snapshot else repo.head()
        if snap is None:
            raise UsageError("the repository has no snapshot to tag yet")
        info = repo.add_tag(name, snap, message, user.user_id)
        if not json_mode:
            out.print(Text(f"tagged {snap} as {name}"))
        return {"tag": name, **info}

    run("tag", json_mode, body)


@commands.command()
def tags(json_mode: JsonOpt = False) -> None:
    """The repository's tags."""

    def body() -> dict[str, Any]:
        _, config = project()
        repo = stack.enter_context(closing(open_repository(config)))
        found = repo.tags()
        if not json_mode:
            for name, t in sorted(found.items(), key=lambda kv: kv[1]["created_at"]):
                line = f"{name:<20} {t['snapshot']:<7} {t['created_at']}  {t['message']}"
                out.print(Text(show_text(line)))
        return {"tags": [{"name": n, **t} for n, t in sorted(found.items())]}

    run("tags", json_mode, body)


@commands.command("list-repos")
def list_repos(
    host: Annotated[str, typer.Option("--host", help="repository host")] = "localhost",
    access_file: Annotated[
        str, typer.Option("--access-file", help="local access file (host localhost)")
    ] = "/etc/dsg/access.yml",
    remote_command: Annotated[
        str | None,
        typer.Option(
            "--remote-command",
            help="the agent on the host (default: remote_command in your dsg.yml, "
            "$DSG_REMOTE_COMMAND, else 'dsg serve')",
        ),
    ] = None,
    json_mode: JsonOpt = False,
) -> None:
    """The repositories you can see on a host: head, size and last sync."""

    def body() -> dict[str, Any]:
        from dsg.workcopy.config import is_local_host

        if is_local_host(host):
            from dsg.server.access import load_access
            from dsg.server.agent import login_name
            from dsg.server.listing import list_projects

            repos = list_projects(load_access(Path(access_file)), login_name())
        else:
            from dsg.backends.ssh import list_remote_repos
            from dsg.workcopy.config import user_remote_command

            repos = list_remote_repos(host, remote_command or user_remote_command(host))
        if not json_mode:
            for r in repos:
                what = r.get("error") or (
                    f"{r.get('head') or 'empty':<6} {r.get('files', 0):>8} files "
                    f"{r.get('bytes', 0) / 2**20:>10.1f} MiB  last sync {r.get('last_sync', '-')}"
                )
                out.print(Text(show_text(f"{r['name']:<24} {r['role']:<6} {what}")))
        return {"host": host, "repos": repos}

    run("list-repos", json_mode, body)


@commands.command()
def snapfetch(
    path: Annotated[str, typer.Argument(help="file path (relative to the project or cwd)")],
    snapshot: Annotated[
        str, typer.Option("--snapshot", "-s", metavar="REF", help="sN, a tag, head or head~N")
    ],
    output: Annotated[
        str,
        typer.Option(
            "-o",
            "--output",
            help="where to write it (default: stdout when it is not a terminal, else "
            "NAME.sN.EXT in the current directory, or the project root inside a data dir)",
        ),
    ] = "",
    force: Annotated[bool, typer.Option("--force", help="overwrite --output")] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Fetch a file as it was in a past snapshot (hash-checked against that snapshot).

    Without -o it never writes into a data dir: to stdout when that is a pipe or a file,
    else next to you (or at the project root when you are inside a data dir). To put a
    file back in its place, use 'dsg restore PATH --snapshot REF'.
    """

    def body() -> dict[str, Any]:
        ws, config = project()
        repo = stack.enter_context(closing(open_repository(config)))
        snap = resolve_ref(repo, snapshot)
        rel = project_relative(ws.root, path)
        if not output and not json_mode and not sys.stdout.isatty():
            entry = ops.snapfetch_to(repo, snap, rel, sys.stdout.buffer)
            return {"path": rel, "snapshot": snap, "output": "-", "entry": entry.to_dict()}
        out_path = Path(output).absolute() if output else _fetch_default(ws, rel, snap)
        entry = ops.snapfetch(repo, snap, rel, out_path, force)
        if not json_mode:
            by = show_text(entry.user)
            out.print(Text(f"{show(rel)} from {snap} (changed in s{entry.snap} by {by})"))
            out.print(
                Text(f"  written to {out_path}" + ("" if output else " (outside the data dirs)"))
            )
        return {"path": rel, "snapshot": snap, "output": str(out_path), "entry": entry.to_dict()}

    run("snapfetch", json_mode, body)


def _fetch_default(ws: Any, rel: str, snap: str) -> Path:
    """`NAME.sN.EXT` in the current directory, or at the project root when the current
    directory is inside a data dir: a fetched file never appears in a data dir (the next
    sync would upload it)."""
    stem, _, ext = Path(rel).name.rpartition(".")
    name = f"{stem}.{snap}.{ext}" if stem else f"{Path(rel).name}.{snap}"
    rules = ScanRules.of(ws.config)
    for where in (Path.cwd(), ws.root):
        cand = where.absolute() / name
        inside = str(cand).startswith(str(ws.root) + "/")
        if not inside or not rules.tracks(str(cand)[len(str(ws.root)) + 1 :]):
            return cand
    raise UsageError(
        "every path in this project is in a data dir (data_dirs: '*'): say where with -o, "
        f"or redirect: dsg snapfetch {rel} -s {snap} > FILE"
    )


@commands.command()
def snapmount(
    snapshot: Annotated[
        str, typer.Option("--snapshot", "-s", metavar="REF", help="sN, a tag, head or head~N")
    ],
    mountpoint: Annotated[
        str, typer.Option("--mountpoint", help="directory to show it at (default .dsg/mnt/sN)")
    ] = "",
    json_mode: JsonOpt = False,
) -> None:
    """Browse a past snapshot read-only (undo with 'dsg snapumount')."""

    def body() -> dict[str, Any]:
        ws, config = project()
        repo = stack.enter_context(closing(open_repository(config)))
        snap = resolve_ref(repo, snapshot)
        where = Path(mountpoint).absolute() if mountpoint else ws.dir / "mnt" / snap
        ops.snapmount(repo, snap, where)
        if not json_mode:
            out.print(f"{snap} is at {where} (read-only). 'dsg snapumount {where}' when done.")
        return {"snapshot": snap, "mountpoint": str(where)}

    run("snapmount", json_mode, body)


@commands.command()
def snapumount(
    mountpoint: Annotated[str, typer.Argument(help="the directory snapmount used")],
    json_mode: JsonOpt = False,
) -> None:
    """Remove a snapshot view made by 'dsg snapmount'."""

    def body() -> dict[str, Any]:
        _, config = project()
        repo = stack.enter_context(closing(open_repository(config)))
        where = Path(mountpoint).absolute()
        ops.snapumount(repo, where)
        if not json_mode:
            out.print(f"unmounted {where}")
        return {"mountpoint": str(where)}

    run("snapumount", json_mode, body)


@commands.command()
def serve(
    access_file: Annotated[
        str, typer.Option("--access-file", help="default /etc/dsg/access.yml")
    ] = "",
    log_dir: Annotated[str, typer.Option("--log-dir", help="default /var/log/dsg")] = "",
) -> None:
    """(On the repository host) the agent that 'dsg' talks to over SSH, on stdin/stdout."""
    from dsg.server.agent import serve as serve_agent

    code = serve_agent(
        Path(access_file) if access_file else None, Path(log_dir) if log_dir else None
    )
    raise typer.Exit(code)
