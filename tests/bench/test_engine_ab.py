"""scripts/benchmarking/engine_ab.py runs end to end on a tiny tree (so it cannot rot): both
engines (here HEAD against this checkout) get every row (init and clone too, with --copies),
and the worktree it made is gone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "benchmarking" / "engine_ab.py"


def test_engine_ab_tiny(tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--old", "HEAD", "--files", "120", "--rounds", "2",
         "--dir", str(tmp_path), "--json", str(out), "--copies"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    rows = {(r["op"], r["engine"]) for r in doc["rows"]}
    assert rows == {
        (op, e)
        for op in ("no-op status", "1% status", "1% sync", "init", "clone")
        for e in ("old", "new")
    }
    assert all(len(r["runs"]) == 2 and r["cpu"] > 0 for r in doc["rows"])
    assert "new/old" in proc.stdout
    listed = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert str(tmp_path) not in listed
