"""The `dsg status` example in docs/user-guide.md is what dsg prints, byte for byte, for the
situation it describes (run through the real console script)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DSG = ROOT / ".venv" / "bin" / "dsg"
GUIDE = ROOT / "docs" / "user-guide.md"


def example() -> str:
    text = GUIDE.read_text()
    m = re.search(r"For example \(each file once.*?\n```text\n(.*?)```", text, re.S)
    assert m, "the status example is missing from the user guide"
    return m.group(1)


@pytest.mark.skipif(not DSG.exists(), reason=f"{DSG} is missing (run scripts/setup-env)")
def test_the_status_example_is_what_dsg_prints(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    repos.mkdir()

    def person(name: str) -> tuple[Path, dict[str, str]]:
        cfg = tmp_path / name / "cfg"
        cfg.mkdir(parents=True)
        (cfg / "dsg.yml").write_text(f"user_name: {name}\nuser_id: {name}@hrdag.org\n")
        root = tmp_path / name / "proj"
        root.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DSG_")}
        return root, {**env, "DSG_CONFIG_HOME": str(cfg), "COLUMNS": "200"}

    def dsg(where: tuple[Path, dict[str, str]], *args: str) -> str:
        proc = subprocess.run(
            [str(DSG), *args], cwd=where[0], env=where[1], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def write(where: tuple[Path, dict[str, str]], rel: str, data: str) -> None:
        p = where[0] / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(data)

    ana, ben = person("ana"), person("ben")
    for rel, data in [("task1/input/a.csv", "a\n"), ("task1/input/b.csv", "b\n")] + [
        (f"task1/input/k{i}.csv", f"{i}\n") for i in range(3)
    ]:
        write(ana, rel, data)
    dsg(ana, "init", "--repo-type", "posix", "--repo-path", str(repos), "--repo-name", "proj",
        "--no-interactive")  # fmt: skip
    (ben[0] / ".dsgconfig.yml").write_text((ana[0] / ".dsgconfig.yml").read_text())
    dsg(ben, "clone")
    write(ana, "task1/input/a.csv", "ana\n")
    write(ana, "task1/input/new.csv", "x" * 2048)
    dsg(ana, "sync")
    write(ben, "task1/input/a.csv", "ben\n")
    (ben[0] / "task1/input/b.csv").unlink()
    write(ben, "task1/output/mine.csv", "m\n")
    assert dsg(ben, "status") == example()
