"""The clean stamp (workcopy/stamp.py): a status or sync that finds the working copy exactly
as the last clean scan recorded it answers from the stamp and the repository's head alone;
every change the stamp cannot vouch for (content, names, a new directory, a link, other
rules, another base, a damaged stamp, a file changed within the racy window) falls back to
the full scan, whose answer is the same as without the stamp."""

from __future__ import annotations

import json
import os
from contextlib import closing
from pathlib import Path

import pytest
import yaml

import dsg.workcopy.workspace
from dsg.sync import ops
from dsg.workcopy import prescan
from dsg.workcopy import stamp as stamp_mod
from dsg.workcopy.stamp import STAMP
from dsg.workcopy.workspace import Workspace
from tests.helpers import Researcher, settle, small_project


@pytest.fixture
def ana(tmp_path: Path) -> Researcher:
    r = small_project(tmp_path, files=60)
    settle()
    return r


def quick_status(r: Researcher) -> ops.Result:
    with closing(r.repo) as repo:
        return ops.status(r.ws, repo)


def full_status(r: Researcher) -> dict[str, str]:
    return {it.path: it.action.value for it in r.status().plan.items if it.action != "none"}


def quick_actions(r: Researcher) -> dict[str, str]:
    return {it.path: it.action.value for it in quick_status(r).plan.items}


def is_quick(r: Researcher) -> bool:
    return r.ws.scan(quick=True).clean


def stamped(r: Researcher) -> Path:
    """A status that leaves a stamp behind (the tree settled first)."""
    settle()
    quick_status(r)
    path = r.root / ".dsg" / STAMP
    assert path.is_file()
    assert is_quick(r)
    return path


def test_init_of_a_settled_tree_leaves_a_stamp(ana: Researcher) -> None:
    assert is_quick(ana)  # the fixture's tree was settled before init


def test_a_clean_copy_answers_from_the_stamp(ana: Researcher, monkeypatch) -> None:
    stamped(ana)

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the full path ran")

    monkeypatch.setattr(dsg.workcopy.workspace.Workspace, "base", refuse)
    monkeypatch.setattr(dsg.workcopy.workspace.Workspace, "hash_cache", refuse)
    result = quick_status(ana)
    assert result.plan.items == [] and result.plan.unchanged == 60
    assert result.snapshot == "s1" and result.plan.remote_id == "s1"


@pytest.mark.parametrize(
    "change",
    ["same size and mtime", "renamed", "deleted", "new dir", "new link", "emptied dir"],
)
def test_any_change_is_seen_through_the_stamp(ana: Researcher, change: str) -> None:
    stamped(ana)
    p = ana.path("task0/input/d0/f0.csv")
    expected: dict[str, str]
    if change == "same size and mtime":
        st = p.stat()
        p.write_text("row X\n")  # same length
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # ctime still moves
        expected = {"task0/input/d0/f0.csv": "upload"}
    elif change == "renamed":
        p.rename(p.with_name("g0.csv"))
        expected = {"task0/input/d0/f0.csv": "delete_remote", "task0/input/d0/g0.csv": "upload"}
    elif change == "deleted":
        p.unlink()
        expected = {"task0/input/d0/f0.csv": "delete_remote"}
    elif change == "new dir":
        ana.write("task5/output/x/new.csv", "new\n")
        expected = {"task5/output/x/new.csv": "upload"}
    elif change == "new link":
        ana.link("task0/input/d0/l.csv", "f0.csv")
        expected = {"task0/input/d0/l.csv": "upload"}
    else:
        for f in ana.path("task1/input/d2").iterdir():
            f.unlink()
        expected = {f"task1/input/d2/f{i}.csv": "delete_remote" for i in range(41, 60, 2)}
    assert not is_quick(ana)
    assert quick_actions(ana) == expected == full_status(ana)


def test_the_repository_moving_on_is_seen(ana: Researcher, tmp_path: Path) -> None:
    bob = Researcher("bob", tmp_path / "bob", tmp_path / "cfg-b", ana.config)
    bob.clone()
    stamped(ana)
    bob.write("task0/input/d0/f0.csv", "bob's\n")
    bob.sync(message="bob")
    assert is_quick(ana)  # the copy itself did not change
    assert quick_actions(ana) == {"task0/input/d0/f0.csv": "download"} == full_status(ana)


def test_a_file_written_just_before_the_scan_keeps_the_stamp_away(ana: Researcher) -> None:
    stamp = stamped(ana)
    ana.write("task0/input/d0/f0.csv", "changed\n")
    ana.sync(message="change")  # uploads only: the tree is as scanned, but racy
    assert not stamp.exists()
    settle()
    quick_status(ana)
    assert stamp.exists() and is_quick(ana)


def test_a_sync_that_only_uploads_leaves_a_stamp(ana: Researcher) -> None:
    stamped(ana)
    ana.write("task0/input/d0/f0.csv", "changed\n")
    settle()
    result = ana.sync(message="change")
    assert result.committed is not None
    assert is_quick(ana)
    assert quick_status(ana).plan.unchanged == 60


def test_a_noop_sync_answers_from_the_stamp(ana: Researcher) -> None:
    stamped(ana)
    result = ana.sync(message="nothing")
    assert result.committed is None and result.snapshot == "s1"
    events = [json.loads(x) for x in (ana.root / ".dsg/log/dsg.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "unchanged" and events[-1]["files"] == 60


def test_links_never_get_a_stamp(ana: Researcher) -> None:
    ana.link("task0/input/d0/l.csv", "f0.csv")
    ana.sync(message="link")
    settle()
    quick_status(ana)
    assert not (ana.root / ".dsg" / STAMP).exists()
    assert quick_actions(ana) == {} == full_status(ana)


@pytest.mark.parametrize("damage", ["garbage", "other blocks", "too large", "directory"])
def test_a_damaged_stamp_is_ignored(ana: Researcher, damage: str, monkeypatch) -> None:
    path = stamped(ana)
    if damage == "garbage":
        path.write_bytes(b"\x00not json")
    elif damage == "other blocks":
        doc = json.loads(path.read_bytes())
        doc["blocks"] = doc["blocks"][:1]
        path.write_text(json.dumps(doc))
    elif damage == "too large":
        monkeypatch.setattr(stamp_mod, "MAX_BYTES", path.stat().st_size - 1)
    else:
        path.unlink()
        path.mkdir()
    assert not is_quick(ana)
    assert quick_actions(ana) == {} == full_status(ana)
    if damage in ("garbage", "other blocks"):  # the full scan put a good one back
        assert is_quick(ana)


def test_other_rules_or_another_base_void_the_stamp(ana: Researcher) -> None:
    path = stamped(ana)
    cfg = ana.root / ".dsgconfig.yml"
    original = cfg.read_text()
    doc = yaml.safe_load(original)
    doc["ignore"] = {"suffixes": [".csv"]}
    cfg.write_text(yaml.safe_dump(doc))

    def from_file() -> bool:
        return Workspace(ana.root).scan(quick=True).clean

    assert not from_file()
    cfg.write_text(original)
    assert from_file()
    base = ana.root / ".dsg/base.manifest.gz"
    base.write_bytes(base.read_bytes())  # the same bytes, but another file
    assert not from_file()
    assert path.exists()


def test_the_prescan_child_answers_clean(ana: Researcher, monkeypatch) -> None:
    stamped(ana)
    monkeypatch.setattr(dsg.workcopy.workspace, "walk", lambda *a, **k: pytest.fail("walked"))
    data = yaml.safe_load(ana.config.to_yaml())
    prescan.start(ana.root, data, lock=False)
    result = ana.ws.scan(quick=True)
    assert result.clean and result.prescanned
    assert prescan._child is None
    # not clean: the child's full scan is the one used, and the base is read while it scans
    ana.write("task0/input/d0/f0.csv", "changed\n")
    prescan.start(ana.root, data, lock=False)
    dirty: list[bool] = []
    result = ana.ws.scan(quick=True, on_dirty=lambda: dirty.append(True))
    assert not result.clean and result.prescanned and dirty == [True]
    assert result.manifest.get("task0/input/d0/f0.csv") is not None


def test_the_cli_status_is_quick_and_correct(ana: Researcher) -> None:
    stamped(ana)
    proc = ana.cli("status")
    assert proc.returncode == 0, proc.stderr
    assert "60" in proc.stdout, proc.stdout
    ana.write("task0/input/d1/f20.csv", "edited\n")
    proc = ana.cli("status")
    assert proc.returncode == 0 and "f20.csv" in proc.stdout, proc.stdout


def test_threaded_listing_gives_the_same_walk(ana: Researcher, monkeypatch) -> None:
    from dsg.workcopy.scan import walk

    ana.write("task0/input/d0/bad\u200bname.csv", "x")  # a problem, found by some thread
    ana.write("task1/output/e/f/g.csv", "deep\n")
    ana.link("task0/input/d0/l.csv", "f0.csv")

    def run(threads: str) -> tuple:
        monkeypatch.setenv("DSG_SCAN_THREADS", threads)
        w = walk(ana.root, ana.ws.rules())
        return w.digests, w.blocks, [str(p) for p in w.problems], w.links

    serial = run("1")
    assert serial[2] and serial[3]
    assert run("3") == serial == run("8")


def test_a_clean_copy_whose_repository_moved_on_plans_from_the_base(
    ana: Researcher, tmp_path: Path, monkeypatch
) -> None:
    bob = Researcher("bob", tmp_path / "bob", tmp_path / "cfg-b", ana.config)
    bob.clone()
    bob.write("task0/input/d0/f0.csv", "bob's\n")
    bob.delete("task1/input/d0/f1.csv")
    bob.write("task3/input/new.csv", "new\n")
    bob.sync(message="bob")
    stamped(ana)
    walks: list[int] = []
    real_walk = dsg.workcopy.workspace.walk
    monkeypatch.setattr(
        dsg.workcopy.workspace, "walk", lambda *a, **k: walks.append(1) or real_walk(*a, **k)
    )
    expected = {
        "task0/input/d0/f0.csv": "download",
        "task1/input/d0/f1.csv": "delete_local",
        "task3/input/new.csv": "download",
    }
    assert quick_actions(ana) == expected and walks == [1]  # one walk, no second scan
    result = ana.sync(message="take bob's")
    assert walks == [1, 1] and result.committed is None and result.snapshot == "s2"
    assert ana.read("task0/input/d0/f0.csv") == b"bob's\n"
    assert not ana.path("task1/input/d0/f1.csv").exists()
    assert full_status(ana) == {}


@pytest.mark.parametrize("planted", ["fifo", "link"])
def test_state_files_planted_as_a_fifo_or_link_are_not_read(
    ana: Researcher, tmp_path: Path, planted: str
) -> None:
    """A .dsg/ that came through git may hold a FIFO (a read would hang) or a link to a file
    elsewhere (a read would follow it) at a state file's name: neither is opened."""
    stamped(ana)
    target = tmp_path / "elsewhere"
    target.write_bytes((ana.root / ".dsg" / STAMP).read_bytes())
    for name in (STAMP, "hashcache.bin"):
        p = ana.root / ".dsg" / name
        p.unlink()
        if planted == "fifo":
            os.mkfifo(p)
        else:
            p.symlink_to(target)
    assert not is_quick(ana)  # the planted stamp is not trusted
    assert quick_actions(ana) == {} == full_status(ana)  # and nothing hung
    assert target.read_bytes().startswith(b'{"format"')  # the link's target untouched
