"""scripts/benchmarking/scale_bench.py runs end to end on a tiny tree (so it cannot rot):
every operation of issue 23 gets a row in the table and in the JSON, with a time and a peak
RSS for each tool, and the goals are judged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "benchmarking" / "scale_bench.py"
# The console script measured; DSG_BENCH_DSG points the test at another one (e.g. an
# archived commit's engine) when this checkout's is mid-change.
DSG = Path(os.environ.get("DSG_BENCH_DSG") or REPO / ".venv" / "bin" / "dsg")

ROWS = {
    ("initial upload", "dsg init"),
    ("initial upload", "rsync -a"),
    ("initial upload", "rsync -a + sync -f"),
    ("no-op status", "dsg status"),
    ("no-op status", "git status"),
    ("no-op status", "find -printf"),
    ("no-op status", "rsync -an"),
    ("status, 1% changed", "dsg status"),
    ("status, 1% changed", "git status"),
    ("sync, 1% changed", "dsg sync"),
    ("sync, 1% changed", "rsync -a"),
    ("clone", "dsg clone"),
    ("clone", "rsync -a + sync -f"),
}


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("git", "rsync", "find", "sync")),
    reason="scale_bench.py compares dsg with git, rsync, find and sync: one is missing",
)
def test_scale_bench_tiny_tree(tmp_path: Path) -> None:
    out_json = tmp_path / "scale.json"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--files", "150", "--rounds", "1",
         "--dir", str(tmp_path), "--json", str(out_json), "--dsg", str(DSG)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    table = r.stdout.splitlines()
    for op, tool in ROWS:
        assert any(line.startswith(op) and f" {tool} " in line for line in table), (op, tool)

    doc = json.loads(out_json.read_text())
    assert doc["files"] == 150 and doc["rounds"] == 1 and doc["bytes"] > 150 * 64
    rows = {(row["op"], row["tool"]): row for row in doc["rows"]}
    assert set(rows) == ROWS
    for row in rows.values():
        assert len(row["seconds"]) == 1 and 0 < row["min"] <= row["median"] <= row["max"]
        # a peak RSS of the command itself, not of this benchmark's own process
        assert 0 < row["peak_rss"] < 2**30
    goals = {g["op"]: g for g in doc["goals"]}
    assert set(goals) == {"no-op status", "sync, 1% changed", "initial upload", "clone"}
    for g in goals.values():
        assert g["ratio"] > 0 and g["met"] == (g["ratio"] <= g["limit"])
        assert g["rss_met"] is None  # memory goals are judged at 1M files only
    # the work directory is removed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("dsg-scale-bench")]
