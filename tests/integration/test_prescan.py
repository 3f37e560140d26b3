"""The forked walk `dsg sync` and `dsg status` start before loading the CLI (prescan.py):
finished by the command, it is exactly the ordinary scan; it is used only for the rules and
directory it was made for, a failed child falls back to an ordinary scan, and `dsg sync`
holds the working copy's lock from before the fork to the end."""

from __future__ import annotations

import fcntl
import json
import marshal
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import dsg.workcopy.workspace
from dsg.workcopy import prescan
from dsg.workcopy.rules import ScanRules
from dsg.workcopy.scan import ScanResult
from tests.helpers import Researcher, project_config, settle


@pytest.fixture
def ana(tmp_path: Path) -> Researcher:
    (tmp_path / "repos").mkdir()
    r = Researcher(
        "ana", tmp_path / "w", tmp_path / "cfg", project_config("proj", tmp_path / "repos")
    )
    for i in range(300):
        r.write(f"task{i % 3}/input/d{i // 50}/f{i}.csv", f"{i}\n")
    r.write("task0/output/skip.tmp", "ignored by suffix")
    os.mkfifo(r.root / "task0/output/pipe")  # a problem the scan reports (not blocking)
    r.link("task1/input/link.csv", "d0/f1.csv")
    settle()
    r.init()
    r.write("task0/input/d0/f0.csv", "changed since init")
    r.delete("task2/input/d0/f2.csv")
    r.write("task1/input/new.csv", "new")
    settle()
    yield r
    prescan.discard()


def raw(r: Researcher) -> dict:
    return yaml.safe_load((r.root / ".dsgconfig.yml").read_text())


def as_data(result: ScanResult) -> tuple:
    m = result.manifest
    return (
        [(e.path, e.size, e.mtime, e.hash, e.target) for e in m.entries],
        [(p.path, p.message, p.blocking) for p in result.problems],
    )


@pytest.fixture
def no_scan(monkeypatch) -> None:
    """A walk in the parent fails the test: the workspace must finish the child's."""

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("walked in the parent")

    monkeypatch.setattr(dsg.workcopy.workspace, "walk", refuse)


def test_the_childs_scan_is_the_ordinary_scan(ana: Researcher, monkeypatch) -> None:
    prescan.start(ana.root, raw(ana), lock=False)
    real_walk = dsg.workcopy.workspace.walk
    monkeypatch.setattr(
        dsg.workcopy.workspace, "walk", lambda *a, **k: pytest.fail("parent walked")
    )
    early = ana.ws.scan()
    monkeypatch.setattr(dsg.workcopy.workspace, "walk", real_walk)
    assert early.prescanned
    assert early.hashed_files == 2  # the changed and the new file; the rest from the cache
    ordinary = ana.ws.scan()
    assert not ordinary.prescanned
    assert as_data(early) == as_data(ordinary)
    assert [p.path for p in early.problems] == ["task0/output/pipe"]
    assert ordinary.hashed_files == 0  # the cache the first scan updated was saved


def test_other_rules_or_another_directory_fall_back(ana: Researcher, tmp_path: Path) -> None:
    data = raw(ana)
    data["ignore"] = {"suffixes": [".csv"]}  # not what the validated configuration says
    prescan.start(ana.root, data, lock=False)
    result = ana.ws.scan()
    assert not result.prescanned and len(result.manifest) > 300
    prescan.start(tmp_path, raw(ana), lock=False)  # no working copy there: nothing forked
    assert prescan._child is None


def test_a_child_that_dies_falls_back(ana: Researcher) -> None:
    prescan.start(ana.root, raw(ana), lock=False)
    assert prescan._child is not None
    os.kill(prescan._child.pid, signal.SIGKILL)
    result = ana.ws.scan()
    assert not result.prescanned
    assert "task1/input/new.csv" in result.manifest.paths


@pytest.mark.parametrize(
    "answer",
    [
        b"D\n\x00not marshal",
        b"D\n" + marshal.dumps((2, [("short row",)], [], 0, 0, None)),
        b"D\n" + marshal.dumps((9,)),
        b"D\n" + marshal.dumps((4, [("d/", [("short",)])], [], [], False, 0, False, [], False)),
        b"C 0123\n" + marshal.dumps((9,)),
        b"no marker line",
        b"",
    ],
    ids=[
        "not-marshal",
        "wrong-rows",
        "wrong-shape",
        "short-row",
        "clean-then-damaged",
        "no-marker",
        "empty",
    ],
)
def test_a_damaged_answer_falls_back(ana: Researcher, monkeypatch, answer: bytes) -> None:
    def fake(root: Path, rules: ScanRules, fd: int) -> None:
        os.write(fd, answer)
        os.close(fd)

    monkeypatch.setattr(prescan, "_scan", fake)
    prescan.start(ana.root, raw(ana), lock=False)
    result = ana.ws.scan()
    assert not result.prescanned and "task1/input/new.csv" in result.manifest.paths


LOCK_PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(3)
"""


def lock_is_free(r: Researcher) -> bool:
    probe = [sys.executable, "-c", LOCK_PROBE, str(r.root / ".dsg" / "lock")]
    return subprocess.run(probe, timeout=30).returncode == 0


def test_sync_holds_the_lock_from_before_the_fork(ana: Researcher, no_scan, monkeypatch) -> None:
    prescan.start(ana.root, raw(ana), lock=True)
    assert not lock_is_free(ana)  # another command is kept out while the child scans
    # Never released and taken again (another command could slip in between): adopted.
    monkeypatch.setattr(prescan, "try_lock", lambda d: pytest.fail("lock taken again"))
    with ana.ws.lock():  # this process adopts the lock it holds
        assert ana.ws.scan().prescanned
        assert not lock_is_free(ana)
    assert lock_is_free(ana)


def test_an_early_lock_on_another_directory_is_released(ana: Researcher, tmp_path) -> None:
    prescan.start(ana.root, raw(ana), lock=True)
    other = Researcher("bo", tmp_path / "bo", tmp_path / "cfg-bo", ana.config)
    with other.ws.lock():
        assert lock_is_free(ana)
    assert prescan.take(ana.root, ScanRules.of(ana.config)) is not None


def test_a_held_lock_starts_no_prescan(ana: Researcher) -> None:
    fd = os.open(ana.root / ".dsg" / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        prescan.start(ana.root, raw(ana), lock=True)
        assert prescan._child is None and prescan._lock is None
    finally:
        os.close(fd)


def last_scan(r: Researcher) -> dict:
    events = [json.loads(ln) for ln in (r.root / ".dsg/log/dsg.jsonl").read_text().splitlines()]
    return [e for e in events if e.get("event") == "scanned"][-1]


def test_dsg_sync_scans_in_a_child_and_syncs(ana: Researcher) -> None:
    """The console script: the sync uses the child's scan (its log says so) and commits
    exactly the local changes."""
    proc = ana.cli("sync", "-m", "changes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["committed"]["id"] == "s2"
    assert last_scan(ana)["prescanned"] is True and last_scan(ana)["hashed"] == 2
    assert set(ana.states().values()) == {"sLCR__all_eq"}  # all in sync


def test_dsg_prescan_0_turns_it_off(ana: Researcher) -> None:
    proc = ana.cli("sync", "-m", "changes", "--json", env={"DSG_PRESCAN": "0"})
    assert proc.returncode == 0, proc.stderr
    assert last_scan(ana)["prescanned"] is False and last_scan(ana)["hashed"] == 2


def test_the_child_holds_only_its_pipe(ana: Researcher, monkeypatch) -> None:
    """The child keeps none of the parent's descriptors: not its ssh session or lock, nor
    the terminal or a pipe the command's output goes to."""
    # the child writes more than the pipe holds: it blocks, alive, until the test looks
    monkeypatch.setattr(prescan, "_scan", lambda root, rules, fd: os.write(fd, b"x" * (4 << 20)))
    prescan.start(ana.root, raw(ana), lock=True)
    pid = prescan._child.pid
    fds = Path(f"/proc/{pid}/fd")
    deadline = time.monotonic() + 10
    while len(list(fds.iterdir())) != 4 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the child has closed what it inherited
    assert sorted(int(f.name) for f in fds.iterdir())[:3] == [0, 1, 2]
    assert len(list(fds.iterdir())) == 4  # 0, 1, 2 and the pipe
    assert {os.readlink(fds / str(n)) for n in (0, 1, 2)} == {os.devnull}


def test_a_scan_not_taken_is_stopped(ana: Researcher, monkeypatch) -> None:
    """A command that ends before it scans (discard runs at exit) stops the child at once,
    even in the middle of a long scan, and releases the lock."""
    monkeypatch.setattr(prescan, "_scan", lambda root, rules, fd: time.sleep(60))
    prescan.start(ana.root, raw(ana), lock=True)
    pid = prescan._child.pid
    began = time.monotonic()
    prescan.discard()
    assert time.monotonic() - began < 10
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert prescan._child is None and lock_is_free(ana)
