"""docs/examples/two-person-week.sh runs the worked week with the real `dsg` (and git) and
succeeds, and two-person-week.md shows exactly its commands, in order."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DSG = ROOT / ".venv" / "bin" / "dsg"
EXAMPLES = ROOT / "docs" / "examples"


def commands(text: str) -> list[str]:
    return re.findall(r"(?m)^\$ .*$", text)


@pytest.mark.slow  # ~30 dsg commands: 15-35 s, depending on the machine's load
@pytest.mark.skipif(not DSG.exists(), reason=f"{DSG} is missing (run scripts/setup-env)")
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_week_runs_and_the_page_shows_its_commands(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSG_", "XDG_", "GIT_"))}
    env.update(DSG=str(DSG), TMPDIR=str(tmp_path))
    proc = subprocess.run(
        ["bash", str(EXAMPLES / "two-person-week.sh")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "(exit 3)" in proc.stdout and "committed s4" in proc.stdout, proc.stdout
    assert "s4 is intact" in proc.stdout and "history intact" in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == [], "the script removes its scratch directory"
    page = (EXAMPLES / "two-person-week.md").read_text()
    assert commands(page) == commands(proc.stdout)
