"""Migration commands (import from the original dsg and from snap), registered on the main app.

Printing and argument handling only; the work is in `migrate.py`.
"""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from dsg.admin import migrate
from dsg.backends.base import LockOwner
from dsg.backends.registry import open_repository
from dsg.cli.common import JsonOpt, err, out, run, stack
from dsg.core.errors import ConfigError, DsgError, UsageError
from dsg.core.paths import show, show_text
from dsg.workcopy.config import (
    PROJECT_CONFIG,
    IgnoreRules,
    ProjectConfig,
    RepositoryConfig,
    find_project_root,
    load_project_config,
    load_user_config,
)

commands = typer.Typer()


def _target_config(
    repo_type: str, repo_path: str, repo_name: str, host: str, pool: str, data_dirs: str
) -> tuple[ProjectConfig, bool]:
    """The new repository's config: from the flags (like init), else the current project's
    .dsgconfig.yml. Returns (config, from_flags)."""
    if repo_type or repo_path or repo_name:
        given = {"repo-type": repo_type, "repo-path": repo_path, "repo-name": repo_name}
        missing = [f"--{k}" for k, v in given.items() if not v]
        if missing:
            raise UsageError(f"{', '.join(missing)} required with the other --repo-* options")
        try:
            cfg = ProjectConfig(
                name=repo_name,
                repository=RepositoryConfig.model_validate(
                    {
                        "type": repo_type,
                        "host": host,
                        "mountpoint": repo_path,
                        **({"pool": pool} if pool else {}),
                    }
                ),
                data_dirs=[d.strip() for d in data_dirs.split(",") if d.strip()],
                ignore=IgnoreRules(),
            )
        except ValueError as e:
            raise ConfigError(f"invalid import options: {e}") from e
        return cfg, True
    try:
        root = find_project_root()
    except DsgError as e:
        raise UsageError(
            "no target: run inside the project (its .dsgconfig.yml names the new repository) "
            "or pass --repo-type, --repo-path and --repo-name"
        ) from e
    return load_project_config(root / PROJECT_CONFIG), False


def _owner() -> str:
    try:
        return load_user_config().user_id
    except DsgError:
        return LockOwner(user="", tx="").login


def _print_report(rep: migrate.ImportReport) -> None:
    d = rep.to_dict()
    src = d["source"]
    title = "Dry run: nothing was written." if rep.dry_run else "Imported."
    out.print(Text(title, style="bold"))
    out.print(f"source: {src['kind']} {src['path']} (head {src['head']})")
    if src["snapshots_dir"]:
        out.print(f"snapshot trees: {src['snapshots_dir']}")
    out.print(f"target: {d['target']['repository']} (new)   data_dirs: {', '.join(rep.data_dirs)}")
    out.print(Text("\nsnapshots:", style="bold"))
    for sp in rep.snapshots:
        tags = f"  tags: {', '.join(sp.tags)}" if sp.tags else ""
        out.print(
            Text(
                f"  {sp.id:<6} {sp.files:>7} files {sp.bytes:>13,} B  upload {sp.upload_files:>6}"
                f" ({sp.upload_bytes:,} B)  links {sp.links:>4}  deleted {sp.deletions:>5}"
                f"  {show_text(sp.author)}{show_text(tags)}"
            )
        )
        out.print(Text(f"         {show_text(sp.message)}"))
        when = f"dated {sp.created_at}" if sp.created_at else "dated at the import"
        source = f"; author and message from {sp.metadata_from}" if sp.metadata_from else ""
        out.print(Text(f"         {when}{source}"))
        if sp.outside_data_dirs:
            out.print(
                Text(
                    f"         ({sp.outside_data_dirs} files outside the data dirs not imported)",
                    style="yellow",
                )
            )
    t = d["totals"]
    out.print(
        f"\n{t['snapshots']} snapshots; {t['upload_files']} file uploads, "
        f"{t['upload_bytes']:,} bytes; head: {t['head_files']} files, {t['head_bytes']:,} bytes; "
        f"hashed {t['hashed_files']} files ({t['hashed_bytes']:,} bytes)"
    )
    if rep.source.tags:
        out.print(Text("\ntags (dsg has no tags yet; recorded here only):", style="bold"))
        for name, sid in rep.source.tags.items():
            out.print(f"  {name} -> {sid}")
    if rep.source.disagreements:
        out.print(
            Text(
                f"\nmetadata cross-check: {len(rep.source.disagreements)} disagreement(s) "
                "with the snapshot trees' own .dsg/last-sync.json:",
                style="bold",
            )
        )
        for d in rep.source.disagreements:
            out.print(
                Text(
                    show_text(
                        f"  {d['snapshot']:<6} {d['field']:<17} {d['source']}: "
                        f"{d['other_value']!s:.60}  ->  imported ({d['used']}): {d['value']!s:.60}"
                    ),
                    style="yellow",
                )
            )
    if rep.repairs:
        out.print(Text(f"\nNFC repairs ({len(rep.repairs)}):", style="bold"))
        for r in rep.repairs:
            span = r["first_snapshot"] + (
                f"..{r['last_snapshot']}" if r["last_snapshot"] != r["first_snapshot"] else ""
            )
            out.print(Text(f"  {r['kind']}: {show(r['original'])!a} -> {show(r['nfc'])}  ({span})"))
    if rep.problems:
        out.print(Text(f"\nproblems ({len(rep.problems)}):", style="bold"))
        for p in rep.problems:
            style = "red" if p.blocking else "yellow"
            out.print(Text(f"  {'blocked' if p.blocking else 'warning'}: {p}", style=style))
    if rep.verified:
        out.print(
            Text(
                f"\nverified: {len(rep.verified)} snapshots match their source trees",
                style="green",
            )
        )
    if rep.config_yaml:
        out.print(Text(f"\nproject {PROJECT_CONFIG} for this repository:", style="bold"))
        out.print(Text(rep.config_yaml.rstrip()))


@commands.command("import")
def import_cmd(
    source: Annotated[str, typer.Argument(help="the repository or snap project to import")],
    kind: Annotated[str, typer.Option("--from", help="dsg, snap or auto")] = "auto",
    snapshots_dir: Annotated[
        str,
        typer.Option(
            "--snapshots-dir",
            help="(dsg) directory whose s1..sN subdirectories hold the snapshot trees "
            "(default SOURCE/.zfs/snapshot)",
        ),
    ] = "",
    user_map: Annotated[
        str, typer.Option("--user-map", help="YAML file: old user name -> email")
    ] = "",
    apply: Annotated[
        bool, typer.Option("--apply/--dry-run", help="write the new repository (default: dry run)")
    ] = False,
    skip_bad_links: Annotated[
        bool,
        typer.Option("--skip-bad-links", help="leave out absolute or escaping symlinks (reported)"),
    ] = False,
    repo_type: Annotated[str, typer.Option("--repo-type", help="posix or zfs")] = "",
    host: Annotated[str, typer.Option("--host", help="repository host")] = "localhost",
    repo_path: Annotated[str, typer.Option("--repo-path", help="base directory (mountpoint)")] = "",
    repo_name: Annotated[str, typer.Option("--repo-name", help="repository name")] = "",
    pool: Annotated[str, typer.Option("--pool", help="ZFS pool (zfs only)")] = "",
    data_dirs: Annotated[
        str, typer.Option("--data-dirs", help="comma-separated data directory names ('*' = all)")
    ] = "input,output,frozen",
    json_mode: JsonOpt = False,
) -> None:
    """Bring an existing original-dsg or snap repository into a new dsg repository, history
    included. Dry run by default; --apply writes. The source is only read."""

    def body() -> dict[str, Any]:
        config, from_flags = _target_config(repo_type, repo_path, repo_name, host, pool, data_dirs)
        if kind not in ("auto", "dsg", "snap"):
            raise UsageError("--from must be dsg, snap or auto")
        if snapshots_dir and kind == "snap":
            raise UsageError("--snapshots-dir is for --from dsg (snap keeps sN in the project)")
        root = Path(source).absolute()
        migrate._readable_dir(root, "source")
        which = migrate.detect_kind(root) if kind == "auto" else kind
        if which == "dsg":
            src = migrate.read_dsg(root, Path(snapshots_dir).absolute() if snapshots_dir else None)
        else:
            src = migrate.read_snap(root)
        users = migrate.UserMap.load(Path(user_map) if user_map else None)
        repo = stack.enter_context(closing(open_repository(config)))
        migrate.check_target(repo, config)
        if apply:

            def progress(sid: str) -> None:
                if not json_mode and sys.stderr.isatty():
                    err.print(f"committed {sid}")

            rep = migrate.apply_import(
                src, config, repo, users, _owner(), skip_bad_links=skip_bad_links, progress=progress
            )
        else:
            rep = migrate.plan_import(src, config, repo, users, skip_bad_links=skip_bad_links)
        if from_flags:
            rep.config_yaml = config.to_yaml()
        if not json_mode:
            _print_report(rep)
        if rep.blocking:
            raise migrate.blocked_error(rep)
        return rep.to_dict()

    run("import", json_mode, body)
