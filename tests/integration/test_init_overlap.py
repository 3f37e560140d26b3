"""dsg init asks whether the repository exists while it scans (over SSH that answer waits
for the connection), and stops scanning as soon as the answer refuses the init."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import dsg.workcopy.scan
from dsg.backends.registry import open_repository
from dsg.core.errors import RepositoryExists, TransportError
from dsg.sync import ops
from dsg.workcopy.config import UserConfig
from tests.helpers import project_config

USER = UserConfig(user_name="Ana", user_id="ana@hrdag.org")


def tree(root: Path, n: int) -> None:
    for i in range(n):
        d = root / "task1" / "input" / f"d{i // 200}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.csv").write_text(f"{i}\n")


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = dsg.workcopy.scan.hash_file

    def counting(path: str) -> bytes:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(dsg.workcopy.scan, "hash_file", counting)
    return seen


def test_the_exists_check_runs_beside_the_scan(tmp_path: Path, monkeypatch) -> None:
    """The scan starts before the answer comes, and the init goes through."""
    cfg = project_config("proj", tmp_path / "repos")
    (tmp_path / "repos").mkdir()
    root = tmp_path / "w"
    tree(root, 50)
    repo = open_repository(cfg)
    answered = threading.Event()
    scan_began_first: list[bool] = []
    real_exists, real_scan = type(repo).exists, dsg.workcopy.scan.scan

    def slow_exists(self) -> bool:
        assert answered.wait(10), "the scan never ran while exists() was pending"
        return real_exists(self)

    def scan(*a, **kw):
        scan_began_first.append(not answered.is_set())
        answered.set()  # only now may exists() answer
        return real_scan(*a, **kw)

    monkeypatch.setattr(type(repo), "exists", slow_exists)
    monkeypatch.setattr("dsg.workcopy.workspace.scan", scan)
    result = ops.init(root, cfg, repo, USER, "first")
    assert scan_began_first == [True]
    assert result.committed is not None and result.committed.entry_count == 50


def test_an_existing_repository_stops_the_scan_early(tmp_path: Path, hashed) -> None:
    cfg = project_config("proj", tmp_path / "repos")
    (tmp_path / "repos").mkdir()
    first = tmp_path / "first"
    tree(first, 3)
    ops.init(first, cfg, open_repository(cfg), USER, "first")
    root = tmp_path / "second"
    tree(root, 4000)
    hashed.clear()
    with pytest.raises(RepositoryExists, match="already exists"):
        ops.init(root, cfg, open_repository(cfg), USER, "again")
    assert len(hashed) < 4000  # stopped at a progress tick, not after hashing everything
    assert not (root / ".dsg").exists()


def test_an_error_from_the_exists_check_is_raised_and_creates_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    cfg = project_config("proj", tmp_path / "repos")
    (tmp_path / "repos").mkdir()
    root = tmp_path / "w"
    tree(root, 10)
    repo = open_repository(cfg)

    def unreachable(self) -> bool:
        raise TransportError("cannot reach the dsg agent on nowhere")

    monkeypatch.setattr(type(repo), "exists", unreachable)
    with pytest.raises(TransportError, match="nowhere"):
        ops.init(root, cfg, repo, USER, "first")
    assert list((tmp_path / "repos").iterdir()) == []
    assert not (root / ".dsg").exists()


def test_a_scan_error_does_not_wait_for_a_host_that_does_not_answer(
    tmp_path: Path, monkeypatch
) -> None:
    """The exists check runs in a daemon thread: when the scan fails (or the user presses
    Ctrl-C) init stops at once, not after the host's connect timeout."""
    import time

    from dsg.core.errors import ScanBlocked

    cfg = project_config("proj", tmp_path / "repos")
    (tmp_path / "repos").mkdir()
    root = tmp_path / "w"
    tree(root, 5)
    (root / "task1" / "input" / "bad\nname.csv").write_text("x\n")  # blocks the scan
    repo = open_repository(cfg)
    release = threading.Event()

    def hanging(self) -> bool:
        release.wait(20)  # a host that does not answer
        return False

    monkeypatch.setattr(type(repo), "exists", hanging)
    t = time.monotonic()
    try:
        with pytest.raises(ScanBlocked, match="control character"):
            ops.init(root, cfg, repo, USER, "first")
        assert time.monotonic() - t < 10
    finally:
        release.set()
    assert list((tmp_path / "repos").iterdir()) == []
