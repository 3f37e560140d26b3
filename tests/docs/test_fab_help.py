"""The Fabric tasks' help (scripts/production/fabfile.py) through the real `fab` command:
both `fab --help TASK` and `fab TASK --help` work for every task, every flag the help shows
is a parameter of the task, and every flag the docs give a `fab TASK` exists."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAB = ROOT / ".venv" / "bin" / "fab"
FABFILE_DIR = ROOT / "scripts" / "production"
DOCS = sorted((ROOT / "docs").glob("*.md"))

pytestmark = pytest.mark.skipif(
    not FAB.exists(), reason=f"{FAB} is missing (run scripts/setup-env)"
)


def fab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FAB), "-r", str(FABFILE_DIR), *args], capture_output=True, text=True, timeout=60
    )


@cache
def task_help(name: str) -> str:
    proc = fab("--help", name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@cache
def task_names() -> tuple[str, ...]:
    proc = fab("--list", "--list-format=json")
    assert proc.returncode == 0, proc.stderr
    return tuple(t["name"] for t in json.loads(proc.stdout)["tasks"])


@cache
def parameters() -> dict[str, list[str]]:
    """Each task's parameters, read from the fabfile's functions (not from fab's output)."""
    sys.path.insert(0, str(FABFILE_DIR))
    try:
        import fabfile
    finally:
        sys.path.remove(str(FABFILE_DIR))
    out = {}
    for name in task_names():
        body = getattr(fabfile, name.replace("-", "_")).body
        out[name] = [p for p in inspect.signature(body).parameters if p != "c"]
    return out


def flags_in_help(text: str) -> list[list[str]]:
    """The option lines of a task's help: one list of flag names per option."""
    opts = text.split("Options:", 1)[1]
    rows = []
    for line in opts.splitlines():
        m = re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)
        if m:
            rows.append([re.split(r"[= ]", f)[0] for f in m.group(1).split(", ")])
    return rows


def test_every_task_is_listed() -> None:
    assert set(task_names()) >= {"status", "sync", "log", "fetch", "list-repos", "health",
                                 "backup", "restore-drill", "create-project", "add-user"}  # fmt: skip


@pytest.mark.parametrize("name", task_names())
def test_help_both_ways_and_flags_match_parameters(name: str) -> None:
    before, after = task_help(name), fab(name, "--help")
    assert after.returncode == 0, after.stdout + after.stderr
    assert before == after.stdout
    assert f"fab [--core-opts] {name} [--options]" in before

    rows = flags_in_help(before)
    params = parameters()[name]
    expected = {"--" + p.replace("_", "-") if len(p) > 1 else "-" + p for p in params}
    longs = set()
    for row in rows:
        for flag in row:
            # a flag is --word-word or -x; Invoke's automatic short flags once made `--`
            assert re.fullmatch(r"--[a-z][a-z0-9-]*|-[a-zA-Z]", flag), (name, row)
        longs.add(max(row, key=len))
    assert longs == expected, (name, longs ^ expected)
    for row in rows:  # every option has its help text
        line = next(ln for ln in before.splitlines() if ln.strip().startswith(row[0]))
        assert len(line.split("  ")) > 1 and line.split("  ", 1)[1].strip(), (name, line)
    assert "-h" not in {f for row in rows for f in row}  # -h stays fab's own help flag


def test_missing_required_option_says_which() -> None:
    proc = fab("sync", "--hosts", "h1")
    assert proc.returncode == 2
    assert "--workdir required" in proc.stderr and "fab sync --help" in proc.stderr


def documented_invocations() -> list[tuple[str, str, list[str]]]:
    """(doc, line, task, flags) for every `fab TASK ...` command line in docs/*.md, and every
    row of remote-tasks.md's task table (`| `TASK --flag ...` | ...`)."""
    out = []
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            pattern = r"\bfab (?:-r \S+ )?([a-z][a-z-]+)((?: [^`|]*)?)"
            if doc.name == "remote-tasks.md" and line.startswith("| `"):
                pattern = r"^\| `([a-z][a-z-]+)((?: [^`]*)?)`"
            for m in re.finditer(pattern, line):
                task, rest = m.group(1), m.group(2)
                if task == "tasks":  # prose ("Fabric tasks"), not a command line
                    continue
                rest = re.sub(
                    r"\"[^\"]*\"|'[^']*'", "", rest
                )  # quoted values, e.g. --dsg "sudo -n dsg"
                flags = re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", rest)
                out.append((doc.name, line.strip(), task, flags))
    return out


def test_docs_name_only_real_tasks_and_flags() -> None:
    invocations = documented_invocations()
    assert sum(doc == "remote-tasks.md" for doc, *_ in invocations) >= 10
    helps = {name: task_help(name) for name in task_names()}
    for doc, line, task, flags in invocations:
        if task not in helps:
            pytest.fail(f"{doc}: `fab {task}` is not a task: {line}")
        known = {f for row in flags_in_help(helps[task]) for f in row} | {"--help"}
        for flag in flags:
            assert flag in known, f"{doc}: `fab {task}` has no {flag}: {line}"
