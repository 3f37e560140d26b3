from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsg.workcopy.config import ProjectConfig
from tests.helpers import Researcher, project_config

pytest_plugins = ["tests.fixtures.sshd_lab", "tests.fixtures.zfs_lab"]


@dataclass
class RepoSpace:
    """Where a test's repositories live, for one backend."""

    backend: str
    mountpoint: Path
    pool: str | None = None
    parent: str | None = None  # zfs: the parent dataset of the project datasets
    lab: object | None = None

    def config(self, project: str) -> ProjectConfig:
        if self.backend == "zfs":
            return project_config(project, self.mountpoint, "zfs", pool=self.pool)
        return project_config(project, self.mountpoint)

    def prepare(self, project: str) -> None:
        """What the admin does before `dsg init`: on zfs, create the project dataset."""
        if self.backend == "zfs":
            ds = f"{self.parent}/{project}"
            if not self.lab.zfs.dataset_exists(ds):  # type: ignore[union-attr]
                self.lab.zfs.create_dataset(ds)  # type: ignore[union-attr]


def release_dsg_holds(lab, dataset: str) -> None:
    """dsg holds its @sN snapshots; a test dataset must drop them before it is destroyed."""
    for name in lab.zfs.list_datasets(dataset):
        for snap in lab.zfs.list_snapshots(name):
            if snap.userrefs:
                with contextlib.suppress(Exception):
                    lab.zfs.release(snap.name, "dsg")


@contextlib.contextmanager
def zfs_space(lab) -> Iterator[RepoSpace]:
    parent = f"{lab.pool}/t{uuid.uuid4().hex[:10]}"
    mnt = lab.mount / parent.split("/", 1)[1]
    lab.zfs.create_dataset(parent, {"mountpoint": str(mnt)})
    try:
        yield RepoSpace("zfs", mnt, lab.pool, parent, lab)
    finally:
        release_dsg_holds(lab, parent)
        lab.destroy(parent)


@pytest.fixture(params=["posix", pytest.param("zfs", marks=pytest.mark.zfs)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def space(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RepoSpace]:
    if backend == "posix":
        base = tmp_path / "space"
        base.mkdir()
        yield RepoSpace("posix", base)
        return
    lab = request.getfixturevalue("zfs_lab")
    with zfs_space(lab) as sp:
        yield sp


@pytest.fixture
def repo_base(tmp_path: Path) -> Path:
    """A base directory for posix repositories (tests of the CLI itself)."""
    base = tmp_path / "repos"
    base.mkdir()
    return base


@pytest.fixture
def make_researcher(tmp_path: Path, space: RepoSpace) -> Callable[..., Researcher]:
    def make(name: str, project: str = "proj") -> Researcher:
        space.prepare(project)
        return Researcher(
            name, tmp_path / name / project, tmp_path / "cfg" / name, space.config(project)
        )

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
