"""Layer 10: the `dsg` command line (typer). One module per command group; this module is the
one place that puts them together, so importing a command module registers nothing."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # older typer: click itself
    from click.exceptions import ClickException, UsageError  # type: ignore[no-redef]

from dsg import __version__
from dsg.core.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE

ADMIN_HELP = "(On the repository host) health checks, metrics, backups and restore drills."
EXIT_INTERRUPTED = 130


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
        add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain help: no `<bool>` beside every flag
    )
    app.callback(invoke_without_command=True)(_version)
    app.add_typer(daily.commands)
    if not core_only:
        from dsg.cli import admin, backup, history, imports, undo, watch
        from dsg.cli import config as config_cli

        app.add_typer(undo.commands)
        app.add_typer(history.commands)
        app.add_typer(imports.commands)
        app.add_typer(watch.commands)
        app.add_typer(config_cli.commands, name="config")
        admin_app = typer.Typer(help=ADMIN_HELP, no_args_is_help=True)
        admin_app.add_typer(admin.commands)
        admin_app.add_typer(backup.commands)
        app.add_typer(admin_app, name="admin")
    return app


def _plain_metavars(cmd: object) -> None:
    """`--snapshot SNAPSHOT`, `-n LIMIT`, `PATH`: the parameter's own name, not typer's
    `<str>` or `{path}`."""
    for p in getattr(cmd, "params", []):
        if p.metavar is None and p.name and not getattr(p, "is_flag", False):
            p.metavar = p.name.upper().rstrip("_")
        if p.param_type_name == "argument" and hasattr(p, "display_type_rich"):
            p.display_type_rich = lambda ctx: None  # typer's `PATH <str>`: just `PATH`
    for sub in getattr(cmd, "commands", {}).values():
        _plain_metavars(sub)


def _command_name(args: list[str]) -> str:
    words: list[str] = []
    for a in args:
        if a.startswith("-") or len(words) == (2 if words[:1] in (["admin"], ["config"]) else 1):
            break
        words.append(a)
    return " ".join(words) or "dsg"


def _exiting_on_interrupt() -> None:
    """Once Ctrl-C has decided the exit, a second one (an impatient user, a terminal that
    repeats it) must not interrupt the exit itself and end the process by the signal."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(*, core_only: bool = False) -> None:
    """Run the `dsg` command with the process's arguments; exit with its code. Usage errors
    (found by the parser, before any command runs) are one JSON document with `--json`;
    Ctrl-C, in a command or at one of its prompts, exits 130."""
    args = sys.argv[1:]
    json_mode = "--json" in args
    try:
        cmd = typer.main.get_command(build_app(core_only=core_only))
        _plain_metavars(cmd)
        rv = cmd.main(args=args, prog_name="dsg", standalone_mode=False)
        code = rv if isinstance(rv, int) else EXIT_OK
    except UsageError as e:
        if json_mode:
            from dsg.cli.common import emit_json

            name = _command_name(args)
            hint = f"dsg {name} --help" if name != "dsg" else "dsg --help"
            emit_json(
                {
                    "ok": False,
                    "command": name,
                    "error": {"kind": "usage", "message": e.format_message(), "hint": hint},
                }
            )
        else:
            e.show()
        code = EXIT_USAGE
    except ClickException as e:  # e.g. a file argument that cannot be opened
        e.show()
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C (or end of input) at a prompt
        _exiting_on_interrupt()
        if not json_mode:
            print("\ninterrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (EXIT_ERROR if e.code else EXIT_OK)
    sys.exit(code)
