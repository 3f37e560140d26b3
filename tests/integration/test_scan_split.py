"""A prescan shares its walk among forked helper processes (scan.py, `processes`):
the result is exactly one process's, a clean copy is still found clean, a change in any
helper's part is seen, and a helper that fails makes the command scan again by itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

import dsg.workcopy.scan as scan_mod
from dsg.workcopy import prescan
from dsg.workcopy.hashcache import HashCache
from dsg.workcopy.scan import ScanResult, scan, walk
from tests.helpers import Researcher, project_config, settle


def make(tmp_path: Path, odd: bool) -> Researcher:
    (tmp_path / "repos").mkdir()
    r = Researcher(
        "ana", tmp_path / "w", tmp_path / "cfg", project_config("proj", tmp_path / "repos")
    )
    for i in range(240):  # 4 tasks x 3 data directories x 2 subdirectories
        r.write(f"task{i % 4}/{('input', 'output', 'frozen')[i % 3]}/d{i % 2}/f{i}.csv", f"{i}\n")
    r.write("top/input/f.csv", "a data directory on its own\n")
    if odd:
        os.mkfifo(r.root / "task2/output/pipe")  # a problem (not blocking), in some share
        r.link("task3/input/link.csv", "d0/f3.csv")
    settle()
    r.init()
    settle()
    return r


@pytest.fixture
def odd(tmp_path: Path) -> Researcher:
    r = make(tmp_path, odd=True)
    r.write("task0/input/d0/f0.csv", "changed since init")
    r.delete("task1/output/d1/f1.csv")
    r.write("task2/frozen/new.csv", "new")
    r.write("task3/input/bad\u200bname.csv", "a blocking problem")
    settle()
    return r


@pytest.fixture
def clean(tmp_path: Path) -> Researcher:
    r = make(tmp_path, odd=False)
    r.status()  # leaves the clean stamp
    yield r
    prescan.discard()


def cache_file(r: Researcher) -> Path:
    return r.root / ".dsg" / HashCache.FILE


def as_data(result: ScanResult) -> tuple:
    return (
        [(e.path, e.size, e.mtime, e.hash, e.target) for e in result.manifest.entries],
        [(p.path, p.message, p.blocking) for p in result.problems],
        result.digests,
    )


def one_and_split(r: Researcher, processes: int, monkeypatch) -> tuple[tuple, tuple, int]:
    forked: list[object] = []

    class Counted(scan_mod._Helper):
        def __init__(self, *a: object) -> None:
            super().__init__(*a)
            forked.append(self)

    monkeypatch.setattr(scan_mod, "_Helper", Counted)
    rules = r.ws.rules()
    one = scan(r.root, rules, HashCache(cache_file(r)), walked=walk(r.root, rules))
    w = walk(r.root, rules, processes=processes)
    split = scan(r.root, rules, HashCache(cache_file(r)), walked=w)
    return as_data(one), as_data(split), len(forked)


def no_children_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.parametrize("processes", [2, 3, 5])
def test_a_split_scan_is_one_processs_scan(odd: Researcher, processes: int, monkeypatch) -> None:
    one, split, forked = one_and_split(odd, processes, monkeypatch)
    assert forked == processes - 1
    assert split == one
    assert {p for p, _, _ in one[1]} >= {"task2/output/pipe", "task3/input/bad\u200bname.csv"}
    assert [p for p, *_ in one[0] if p.endswith("new.csv")] == ["task2/frozen/new.csv"]
    assert no_children_left()


def test_the_walks_digests_are_one_processs(odd: Researcher) -> None:
    rules = odd.ws.rules()
    one = walk(odd.root, rules)
    split = walk(odd.root, rules, processes=3)
    assert split.digests == one.digests and len(one.digests) > 10
    assert split.blocks == one.blocks
    assert [str(p) for p in split.problems] == [str(p) for p in one.problems]
    assert split.links and one.links
    assert no_children_left()


def test_a_clean_copy_is_clean_when_split(clean: Researcher) -> None:
    found = clean.ws.clean_stamp()
    assert found is not None
    w = walk(clean.root, clean.ws.rules(), found[0].blocks, processes=3)
    assert w.is_clean(found[0].blocks)
    assert no_children_left()  # told to quit, and reaped


@pytest.mark.parametrize(
    "where", ["task0/input/d0", "task1/output/d1", "task3/frozen/d1", "top/input"]
)
def test_a_change_in_any_share_is_seen(clean: Researcher, where: str) -> None:
    found = clean.ws.clean_stamp()
    assert found is not None
    name = next(p.name for p in (clean.root / where).iterdir())
    clean.write(f"{where}/{name}", "edited after the stamp")
    settle()
    seen: list[bool] = []
    rules = clean.ws.rules()
    w = walk(
        clean.root,
        rules,
        found[0].blocks,
        lambda: seen.append(True),
        processes=3,
    )
    assert not w.is_clean(found[0].blocks) and seen == [True]
    split = scan(clean.root, rules, HashCache(cache_file(clean)), walked=w)
    one = scan(clean.root, rules, HashCache(cache_file(clean)))
    assert as_data(split)[:2] == as_data(one)[:2]
    assert f"{where}/{name}" in split.manifest.paths
    # what the helpers listed before a change was found is listed again: no stamp from it
    assert split.digests is None or split.digests == one.digests
    assert no_children_left()


def test_a_failing_helper_is_an_error_not_a_result(odd: Researcher, monkeypatch) -> None:
    monkeypatch.setattr(scan_mod, "_help", lambda *a: os._exit(3))
    with pytest.raises(RuntimeError, match="scan helper"):
        walk(odd.root, odd.ws.rules(), processes=3)
    assert no_children_left()


@pytest.fixture
def split_prescan(monkeypatch) -> None:
    monkeypatch.setattr(prescan, "SPLIT_FILES", 0)
    monkeypatch.setenv("DSG_SCAN_PROCESSES", "3")
    yield
    prescan.discard()


def test_the_prescan_splits_and_gives_the_ordinary_scan(odd: Researcher, split_prescan) -> None:
    raw = yaml.safe_load((odd.root / ".dsgconfig.yml").read_text())
    prescan.start(odd.root, raw, lock=False)
    early = odd.ws.scan()
    assert early.prescanned
    ordinary = odd.ws.scan()
    assert not ordinary.prescanned
    assert as_data(early) == as_data(ordinary)
    assert no_children_left()


def test_a_prescan_whose_helper_fails_falls_back(
    odd: Researcher, split_prescan, monkeypatch
) -> None:
    monkeypatch.setattr(scan_mod, "_help", lambda *a: os._exit(3))
    raw = yaml.safe_load((odd.root / ".dsgconfig.yml").read_text())
    prescan.start(odd.root, raw, lock=False)
    result = odd.ws.scan()
    assert not result.prescanned  # the child failed: the command scanned by itself
    assert "task2/frozen/new.csv" in result.manifest.paths
    assert no_children_left()
