from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Researcher, project_config

pytest_plugins = ["tests.fixtures.sshd_lab", "tests.fixtures.zfs_lab"]


@pytest.fixture
def repo_base(tmp_path: Path) -> Path:
    base = tmp_path / "repos"
    base.mkdir()
    return base


@pytest.fixture
def make_researcher(tmp_path: Path, repo_base: Path) -> Callable[..., Researcher]:
    def make(name: str, project: str = "proj", mountpoint: Path | None = None) -> Researcher:
        cfg = project_config(project, mountpoint or repo_base)
        return Researcher(name, tmp_path / name / project, tmp_path / "cfg" / name, cfg)

    return make


@pytest.fixture
def team(make_researcher: Callable[..., Researcher]) -> tuple[Researcher, Researcher]:
    """Alice inits a project with a few files; Bob clones it."""
    alice = make_researcher("alice")
    alice.write("task1/input/a.csv", "a,1\n")
    alice.write("task1/input/b.csv", "b,2\n")
    alice.write("task1/output/result.txt", "r\n")
    alice.init()
    bob = make_researcher("bob")
    bob.clone()
    return alice, bob
