"""The offline part of scripts/security/check, in the default tier: bandit over engine/dsg
against the reviewed baseline, and proof that the gate reports what it must.

Real bandit runs (no mocks): the engine passes with its baseline; a temp file calling
`subprocess.call(..., shell=True)` is reported NEW; a baseline entry still accepts its
finding after the code moves down the file, accepts one finding only, and is refused
without a justification. pip-audit needs a vulnerability service and is not run here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GATE = REPO / "scripts" / "security" / "bandit_gate.py"
BASELINE = REPO / "scripts" / "security" / "bandit-baseline.txt"

if importlib.util.find_spec("bandit") is None:
    pytest.skip(
        "bandit is not installed in this environment (scripts/security/check installs it "
        "into .venv; CI needs it in the dev extras)",
        allow_module_level=True,
    )


def gate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GATE), *args],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip


def _load_gate():
    spec = importlib.util.spec_from_file_location("dsg_bandit_gate", GATE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SHELL_CALL = "import subprocess\n\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n"


def test_engine_has_no_finding_outside_the_reviewed_baseline():
    r = gate()
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 new" in r.stdout, r.stdout


def test_every_baseline_entry_is_justified():
    entries, problems = _load_gate().load_baseline(BASELINE)
    assert entries, "the baseline is empty: was it emptied by mistake?"
    assert problems == []


def test_a_new_shell_call_is_reported(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(SHELL_CALL)
    r = gate("--baseline", str(BASELINE), str(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "NEW" in r.stdout and "B602" in r.stdout and "bad.py" in r.stdout, r.stdout
    assert "subprocess.call(cmd, shell=True)" in r.stdout


def test_baseline_matches_code_not_line_numbers_and_one_finding_per_entry(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    mod = src / "mod.py"
    mod.write_text(SHELL_CALL)
    candidates = gate("--baseline", str(tmp_path / "none.txt"), "--write-baseline", str(src))
    assert candidates.returncode == 0, candidates.stderr
    lines = candidates.stdout.splitlines()
    assert {ln.split(" :: ")[1] for ln in lines} == {"B404", "B602"}, lines
    assert all(" :: TODO: " in ln for ln in lines)  # new candidates need review

    baseline = tmp_path / "baseline.txt"
    baseline.write_text(candidates.stdout)  # not justified yet: refused
    r = gate("--baseline", str(baseline), str(src))
    assert r.returncode == 1 and "has no justification" in r.stdout, r.stdout

    baseline.write_text(candidates.stdout.replace("TODO: ", "reviewed: "))
    assert gate("--baseline", str(baseline), str(src)).returncode == 0

    # the same code further down the file: still accepted
    mod.write_text("# moved\n\n\n" + SHELL_CALL)
    r = gate("--baseline", str(baseline), str(src))
    assert r.returncode == 0, r.stdout

    # a second identical call: the one entry accepts one finding, the other is new
    mod.write_text(
        SHELL_CALL + "\n\ndef again(cmd):\n    return subprocess.call(cmd, shell=True)\n"
    )
    r = gate("--baseline", str(baseline), str(src))
    new = [ln for ln in r.stdout.splitlines() if ln.startswith("NEW ")]
    assert r.returncode == 1 and len(new) == 1 and "B602" in new[0], r.stdout

    # the call removed: its entry is reported stale, which does not fail the gate
    mod.write_text("import subprocess\n")
    r = gate("--baseline", str(baseline), str(src))
    assert r.returncode == 0 and "STALE" in r.stdout, r.stdout


def test_compare_counts_entries():
    g = _load_gate()
    f = g.Finding("a.py", "B602", "subprocess.call(x, shell=True)", line=3)
    e = g.Entry("a.py", "B602", "subprocess.call(x, shell=True)", "why", 1)
    assert g.compare([f], [e]) == ([], [])
    assert g.compare([f, f], [e]) == ([f], [])
    assert g.compare([], [e]) == ([], [e])
    other = g.Finding("a.py", "B602", "subprocess.call(y, shell=True)", line=3)
    assert g.compare([other], [e]) == ([other], [e])
