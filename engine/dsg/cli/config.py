"""`dsg config upgrade`: rewrite a project file of any earlier form as the current
`.dsgconfig.yml`. Printing and arguments only; the conversion is in workcopy/config.py."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from dsg.cli.common import JsonOpt, out, run
from dsg.fs.durable import atomic_write
from dsg.workcopy.config import find_config_file, plan_upgrade

commands = typer.Typer(
    help="The project's .dsgconfig.yml: convert older forms.", no_args_is_help=True
)


@commands.command("upgrade")
def upgrade_cmd(
    write: Annotated[
        bool, typer.Option("--write/--dry-run", help="write the new file (default: dry run)")
    ] = False,
    pool: Annotated[
        str,
        typer.Option("--pool", help="the ZFS pool, when the old file has none and it is not found"),
    ] = "",
    json_mode: JsonOpt = False,
) -> None:
    """Rewrite the project file (the legacy 'transport: ssh' form, or the oldest
    .dsg/config.yml) as the current .dsgconfig.yml. Prints the new file and what changed;
    writes only with --write."""

    def body() -> dict[str, Any]:
        up = plan_upgrade(find_config_file(), pool or None)
        written = False
        if write and up.needed:
            atomic_write(Path(up.target), up.new_text.encode())
            written = True
        if not json_mode:
            out.print(f"project file: {up.source} ({up.form} form)")
            if not up.needed:
                out.print(Text("already in the current form: nothing to change", style="green"))
                return up.model_dump() | {"needed": False, "written": False}
            out.print(Text("\nchanges:", style="bold"))
            for c in up.changes or ["(layout only)"]:
                out.print(Text(f"  - {c}"))
            out.print(Text(f"\nnew {up.target}:", style="bold"))
            out.print(Text(up.new_text.rstrip()))
            if up.source == up.target:
                diff = difflib.unified_diff(
                    up.old_text.splitlines(),
                    up.new_text.splitlines(),
                    f"{up.source} (now)",
                    f"{up.target} (new)",
                    lineterm="",
                )
                out.print(Text("\n" + "\n".join(diff)))
            if written:
                out.print(Text(f"\nwrote {up.target}; commit it to git", style="green"))
            else:
                out.print(
                    Text(
                        f"\nDry run: nothing was written. 'dsg config upgrade --write' writes "
                        f"{up.target}.",
                        style="bold",
                    )
                )
        return up.model_dump() | {"needed": up.needed, "written": written}

    run("config upgrade", json_mode, body)
