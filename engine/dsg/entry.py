"""The `dsg` console script. `dsg serve` (the agent, started for every SSH session) takes a
short path that skips loading the interactive CLI (typer, rich); `dsg sync` and `dsg status`
start connecting to an SSH repository before loading it."""

from __future__ import annotations

import os
import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["serve"] and not {"-h", "--help"} & set(args):
        from .agent import main as agent_main

        rc = agent_main(args[1:])
        # The agent has closed all it opened (every log and audit record is one unbuffered
        # write); skip the interpreter's teardown, ~20 ms with pydantic loaded, which every
        # client would otherwise wait for at the end of each command.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    if args[:1] in (["sync"], ["status"]) and not {"-h", "--help"} & set(args):
        _connect_early()
    from .cli import main as cli_main

    cli_main()


def _connect_early() -> None:
    """Start the project's SSH session before loading the CLI (typer, rich, pydantic, the
    engine: ~0.2 s), so the handshake and the agent's start overlap that load. Any problem
    is left for the command itself to find and report, in its order."""
    try:
        from .sshstart import start_early

        start_early()
    except Exception:  # reported again, in order, by the command itself
        pass
