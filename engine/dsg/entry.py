"""The `dsg` console script. `dsg serve` (the agent, started for every SSH session) takes a
short path that skips loading the interactive CLI (typer, rich)."""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["serve"] and not {"-h", "--help"} & set(args):
        from .agent import main as agent_main

        sys.exit(agent_main(args[1:]))
    from .cli import main as cli_main

    cli_main()
