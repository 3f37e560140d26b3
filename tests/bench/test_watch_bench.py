"""scripts/benchmarking/watch_bench.py runs end to end on a tiny tree (so it cannot rot): a
no-op status with and without `dsg watch`, and git status, each get a row with times and a
peak RSS, and the watcher's own figures are reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "benchmarking" / "watch_bench.py"
DSG = Path(os.environ.get("DSG_BENCH_DSG") or REPO / ".venv" / "bin" / "dsg")


@pytest.mark.skipif(shutil.which("git") is None, reason="watch_bench.py compares with git")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="dsg watch is Linux-only")
def test_watch_bench_tiny_tree(tmp_path: Path) -> None:
    out_json = tmp_path / "watch.json"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--files", "120", "--rounds", "1",
         "--dir", str(tmp_path), "--json", str(out_json), "--dsg", str(DSG)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    table = r.stdout.splitlines()
    for tool in ("dsg status", "dsg status + watch", "git status"):
        assert any(line.startswith(f"{tool} ") for line in table), tool
    assert any(line.startswith("watcher: ready in") for line in table)

    doc = json.loads(out_json.read_text())
    assert doc["files"] == 120 and doc["rounds"] == 1
    rows = {row["tool"]: row for row in doc["rows"]}
    assert set(rows) == {"dsg status", "dsg status + watch", "git status"}
    for tool, row in rows.items():
        rounds = 2 if tool == "git status" else 1  # beside each of the dsg rows
        assert len(row["seconds"]) == rounds and row["median"] > 0 and row["peak_rss"] > 0
    assert doc["watcher"]["watches"] >= 2 and doc["watcher"]["overflows"] == 0
    assert not list(tmp_path.glob("dsg-watch-bench-*"))  # cleaned up
