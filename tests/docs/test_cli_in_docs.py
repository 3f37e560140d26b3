"""Every `dsg` command line the docs show (in code blocks and inline code) names a real
command of the installed `dsg`, and every flag it gives is in that command's --help."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DSG = ROOT / ".venv" / "bin" / "dsg"
DOCS = sorted([*(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "examples").glob("*.md")])
# `dsg` where a command starts: a line's start, a prompt, or after && ; | ( or a cron field
COMMAND = re.compile(
    r"(?:^|\$ |&& |; |\| |\( |\* root |/usr/local/bin/)dsg ((?:admin |config )?[a-z][a-z-]*)(?=\s|$)"
    r"([^;|&#`]*)"
)
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b")

pytestmark = pytest.mark.skipif(
    not DSG.exists(), reason=f"{DSG} is missing (run scripts/setup-env)"
)


def documented() -> list[tuple[str, str, str, set[str]]]:
    """(doc, line, command, flags) for every dsg command line in the docs."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        lines = []
        for block in re.findall(r"(?ms)^```[a-z]*\n(.*?)^```", text):
            lines += [ln.strip() for ln in block.splitlines()]
        text = re.sub(r"(?ms)^```.*?^```", "", text)
        lines += re.findall(r"`(dsg [^`\n]+)`", text)
        for line in lines:
            for m in COMMAND.finditer(line):
                rest = re.sub(r"\"[^\"]*\"|'[^']*'", "", m.group(2))  # quoted values
                out.append((doc.name, line, m.group(1), set(FLAG.findall(rest))))
    return out


# Run in the venv's Python: the console script's own entry point, called once per --help in
# one process (a process per command took a minute on a loaded machine).
HELP_ALL = r"""
import contextlib, io, json, re, sys
from importlib.metadata import entry_points

main = tuple(entry_points(group="console_scripts", name="dsg"))[0].load()

def help_of(*args):
    buf = io.StringIO()
    sys.argv = ["dsg", *args, "--help"]
    with contextlib.redirect_stdout(buf):
        try:
            main()
        except SystemExit as e:
            assert e.code in (0, None), (args, e.code)
    return buf.getvalue()

# a command's row: "| name  ..." in rich's boxes, "  name  ..." in click's plain layout
ROW = re.compile(r"(?m)^(?:\u2502 |  )([a-z][a-z-]+)(?= |$)")
names = ROW.findall(help_of())
groups = ("admin", "config")  # command groups: their commands are `dsg GROUP NAME`
sub = [g + " " + n for g in groups for n in ROW.findall(help_of(g))]
print(json.dumps({c: help_of(*c.split()) for c in [n for n in names if n not in groups] + sub}))
"""


@cache
def helps() -> dict[str, str]:
    """Each command's --help, for every command the top level and `admin` list."""
    proc = subprocess.run(
        [str(DSG.parent / "python"), "-c", HELP_ALL], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_docs_show_dsg_commands() -> None:
    found = {cmd for _, _, cmd, _ in documented()}
    assert {"init", "clone", "status", "sync", "resolve", "admin health"} <= found, found


def test_documented_commands_and_flags_exist() -> None:
    known = helps()
    problems = []
    for doc, line, cmd, flags in documented():
        if cmd not in known:
            problems.append(f"{doc}: `dsg {cmd}` is not a command: {line}")
            continue
        shown = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", known[cmd]))
        problems += [f"{doc}: `dsg {cmd}` has no {f}: {line}" for f in sorted(flags - shown)]
    assert not problems, "\n".join(problems)
