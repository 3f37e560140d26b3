"""Layer 10: the `dsg` command line (typer). One module per command group; this module is the
one place that puts them together, so importing a command module registers nothing."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dsg import __version__
from dsg.core.errors import EXIT_ERROR, EXIT_OK

ADMIN_HELP = "(On the repository host) health checks, metrics, backups and restore drills."


def _version(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        print(f"dsg {__version__}")
        raise typer.Exit(0)


def build_app(*, core_only: bool = False) -> typer.Typer:
    """The `dsg` application. `core_only` (`dsg sync` and `dsg status`, from entry.py) leaves
    out the admin, backup, history and import modules: they cost every daily sync to load."""
    from dsg.cli import daily

    app = typer.Typer(
        name="dsg",
        help="dsg: sync a project's data directories with its central repository.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback(invoke_without_command=True)(_version)
    app.add_typer(daily.commands)
    if not core_only:
        from dsg.cli import admin, backup, history, imports

        app.add_typer(history.commands)
        app.add_typer(imports.commands)
        admin_app = typer.Typer(help=ADMIN_HELP, no_args_is_help=True)
        admin_app.add_typer(admin.commands)
        admin_app.add_typer(backup.commands)
        app.add_typer(admin_app, name="admin")
    return app


def main(*, core_only: bool = False) -> None:
    """Run the `dsg` command with the process's arguments; exit with its code."""
    try:
        build_app(core_only=core_only)()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (EXIT_ERROR if e.code else EXIT_OK)
        sys.exit(code)
