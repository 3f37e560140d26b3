"""docs/tutorial.md works as written: its bash blocks run in order, in one scratch HOME, with
the real `dsg` and git, each in the terminal it names (A: you, B: Ben, each keeping its own
directory and environment). A command that fails stops the run, except where the tutorial
itself shows the exit code (`|| echo "exit $?"`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
TUTORIAL = ROOT / "docs" / "tutorial.md"

pytestmark = [
    pytest.mark.skipif(
        not (BIN / "dsg").exists(), reason=f"{BIN}/dsg is missing (scripts/setup-env)"
    ),
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
]


def blocks() -> list[tuple[str, str]]:
    """(terminal, code) of every ```bash block, in order."""
    out = []
    for code in re.findall(r"(?ms)^```bash\n(.*?)^```", TUTORIAL.read_text()):
        m = re.match(r"# terminal ([AB]) ", code)
        assert m, f"a tutorial block does not say its terminal:\n{code}"
        out.append((m.group(1), code))
    return out


def script() -> str:
    """One bash script playing both terminals: each block starts in its terminal's last
    directory with that terminal's DSG_CONFIG_HOME, and leaves them for its next block."""
    lines = ["set -euo pipefail", 'A_PWD=$HOME B_PWD=$HOME A_ENV="" B_ENV=""']
    for n, (term, code) in enumerate(blocks()):
        lines += [
            f"echo '=== block {n} (terminal {term})'",
            f'cd "${term}_PWD"',
            f"if [[ -n ${term}_ENV ]]; then export DSG_CONFIG_HOME=${term}_ENV; "
            "else unset DSG_CONFIG_HOME; fi",
            code,
            f'{term}_PWD=$PWD {term}_ENV="${{DSG_CONFIG_HOME:-}}"',
        ]
    return "\n".join(lines) + "\n"


def test_every_block_names_its_terminal() -> None:
    terms = [t for t, _ in blocks()]
    assert terms.count("A") >= 5 and terms.count("B") >= 3, terms


@pytest.mark.slow  # ~30 dsg and git commands: 15-40 s, depending on the machine's load
def test_tutorial_runs_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSG_", "XDG_", "GIT_"))}
    env.update(HOME=str(home), PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
               GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull,
               GIT_AUTHOR_NAME="Your Name", GIT_AUTHOR_EMAIL="you@example.org",
               GIT_COMMITTER_NAME="Your Name", GIT_COMMITTER_EMAIL="you@example.org")  # fmt: skip
    proc = subprocess.run(
        ["bash", "-c", script()], env=env, capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # what the tutorial tells the reader they will see
    assert "s1 with 2 entries" in out and "to .gitignore" in out, out
    assert "**/frozen/" in out, "init wrote the data dirs into .gitignore"
    assert "committed s2" in out and "no new snapshot; now at s2" in out, out
    # mistake 1: the typo leaves the codebook alone and says so; the fix brings it back
    typo, fixed = out.split("=== block 7 ")[1].split("=== block 8 ")
    assert re.search(r"not synced here:.*\(task1/frozen/codebook.csv\)", typo), typo
    assert "delete" not in typo and "not synced" not in fixed.split("=== block 9 ")[0], out
    assert re.search(r"To delete in the repository \(1\):\n.*task1/input/interviews.csv", out)
    assert out.count("Up to date") >= 3, out
    assert "1 conflict(s) block the sync; nothing was changed" in out and "exit 3" in out, out
    assert re.search(r"interviews\.dsg-conflict-\S+\.csv", out), out
    # mistake 2: restore brings the directory back; a synced deletion is reverted
    assert "Restored 1 file(s) from s2" in out, out
    assert "committed s3" in out and "Committed s4: reverts s3" in out, out
    assert "committed s6" in out, out
    assert not (home / "dsg-tutorial").exists(), "the last block cleans up"
    # Ben ends with your last change
    assert "Cerro added (4 interviews)" in out, out
