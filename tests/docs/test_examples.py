"""Every sample `.dsgconfig.yml` in docs/examples/ is valid: the real `dsg validate-config`
(the console script) runs on each one in a project directory of its own. Together the
samples cover every repository type the docs promise: posix local, posix over SSH, zfs over
SSH."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DSG = ROOT / ".venv" / "bin" / "dsg"
SAMPLES = sorted((ROOT / "docs" / "examples").glob("*.dsgconfig.yml"))

pytestmark = pytest.mark.skipif(
    not DSG.exists(), reason=f"{DSG} is missing (run scripts/setup-env)"
)


def validate(config_text: str, tmp_path: Path) -> tuple[int, dict]:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".dsgconfig.yml").write_text(config_text)
    home = tmp_path / "home"
    (home / "dsgconf").mkdir(parents=True)
    (home / "dsgconf" / "dsg.yml").write_text("user_name: Ana Ruiz\nuser_id: ana@hrdag.org\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSG_", "XDG_"))}
    env.update(HOME=str(home), DSG_CONFIG_HOME=str(home / "dsgconf"))
    proc = subprocess.run(
        [str(DSG), "validate-config", "--json"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, dict]]:
    """validate-config's exit code and document for each sample, run once."""
    return {s.name: validate(s.read_text(), tmp_path_factory.mktemp(s.name)) for s in SAMPLES}


def test_there_are_samples() -> None:
    assert len(SAMPLES) >= 3, SAMPLES


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample_is_valid(sample: Path, results: dict[str, tuple[int, dict]]) -> None:
    code, doc = results[sample.name]
    assert code == 0 and doc["ok"] and doc["valid"], doc
    for problem in doc["problems"]:
        # the one warning allowed: a sample's local mountpoint is not on the test machine
        assert problem["severity"] == "warning", problem
        assert "does not exist on this host" in problem["message"], problem
    # the file name says what it shows: <type>-<local|ssh>.dsgconfig.yml
    kind, where = sample.name.split(".")[0].split("-")[:2]
    repo = doc["project"]["repository"]
    assert repo["type"] == kind, (sample.name, repo)
    assert doc["project"]["transport"] == {"local": "local", "ssh": "ssh"}[where], doc


def test_samples_cover_every_repository_type(results: dict[str, tuple[int, dict]]) -> None:
    seen = set()
    for code, doc in results.values():
        assert code == 0, doc
        seen.add((doc["project"]["repository"]["type"], doc["project"]["transport"]))
    assert seen >= {("posix", "local"), ("posix", "ssh"), ("zfs", "ssh")}, seen


def test_a_broken_sample_is_caught(tmp_path: Path) -> None:
    """The check itself can fail: a typo in a key makes validate-config refuse the file."""
    text = SAMPLES[0].read_text().replace("mountpoint:", "mountpiont:", 1)
    code, doc = validate(text, tmp_path)
    assert code == 1 and not doc["ok"], doc
    assert "mountpiont" in doc["error"]["message"], doc
