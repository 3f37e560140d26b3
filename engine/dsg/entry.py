"""The `dsg` console script. `dsg serve` (the agent, started for every SSH session) takes a
short path that skips loading the interactive CLI (typer, rich); `dsg sync` and `dsg status`
start connecting to an SSH repository and scanning the working copy before loading it. Both
skip the interpreter's teardown at exit."""

from __future__ import annotations

import contextlib
import os
import sys


def main() -> None:
    try:
        _main()
    except KeyboardInterrupt:
        # Ctrl-C while the command was still loading (the CLI handles it once running):
        # exit as the shell expects, without a traceback.
        _exit_now(130)


def _main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["serve"] and not {"-h", "--help"} & set(args):
        from dsg.server.agent import main as agent_main

        # The agent has closed all it opened (every log and audit record is one unbuffered
        # write); skip the interpreter's teardown, ~20 ms with pydantic loaded, which every
        # client would otherwise wait for at the end of each command.
        _exit_now(agent_main(args[1:]))
    if args[:1] in (["sync"], ["status"]) and not {"-h", "--help"} & set(args):
        _start_early(lock=args[0] == "sync")
        from dsg.cli import main as cli_main

        # These commands close what they open (the repository session is reaped, every
        # file is written under `with`) before returning; their exit skips the teardown
        # of typer, rich and pydantic too (~30 ms). A crash still unwinds normally.
        try:
            cli_main(core_only=True)  # their own commands only: see cli.main
        except SystemExit as e:
            _exit_now(e.code if isinstance(e.code, int) else (1 if e.code else 0))
        _exit_now(0)
    from dsg.cli import main as cli_main

    cli_main()


def _exit_now(code: int) -> None:
    prescan = sys.modules.get("dsg.workcopy.prescan")
    if prescan is not None:
        prescan.discard()  # what atexit would have done: stop a child not taken
    with contextlib.suppress(OSError, ValueError):  # a closed or broken stdout
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)


def _start_early(*, lock: bool) -> None:
    """Before loading the CLI (typer, rich, pydantic, the engine: ~0.1-0.2 s), start what
    can overlap that load: the project's SSH session (the handshake and the agent's start)
    and a forked scan of the working copy (prescan.py; `dsg sync` takes the working copy's
    lock for it first). Any problem is left for the command itself to find and report, in
    its order."""
    try:
        from dsg.wire.sshstart import start_early

        root, data = start_early()
    except Exception:  # reported again, in order, by the command itself
        return
    if os.environ.get("DSG_PRESCAN", "1") == "0":  # the switch, should it ever be needed
        return
    try:
        from dsg.workcopy import prescan

        prescan.start(root, data, lock=lock)
    except Exception:  # the command scans as usual
        pass
