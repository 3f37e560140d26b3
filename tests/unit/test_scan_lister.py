"""The walk's directory lister (scan.py `_Lister`) applies the ignore rules inline, for speed:
it must skip exactly what `ScanRules.ignored` says, and list through a descriptor without
following a directory that became a link."""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsg.workcopy.rules import ScanRules
from dsg.workcopy.scan import _Lister

_CHARS = string.ascii_lowercase + "._-"
names_st = st.text(alphabet=_CHARS, min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))
conflict_st = st.sampled_from(["a.dsg-conflict-20261207T101010Z-ana.csv", "x.dsg-conflict-1.csv"])


@settings(max_examples=60, deadline=None)
@given(
    files=st.sets(st.one_of(names_st, conflict_st), min_size=1, max_size=12),
    ignore_names=st.sets(names_st, max_size=3),
    suffixes=st.lists(st.sampled_from([".tmp", ".csv", "a", "-x"]), max_size=2),
    ignore_paths=st.sets(names_st, max_size=3),
)
def test_lister_skips_exactly_what_the_rules_ignore(
    tmp_path_factory, files, ignore_names, suffixes, ignore_paths
) -> None:
    root = tmp_path_factory.mktemp("w")
    d = root / "input"
    d.mkdir()
    for name in files:
        (d / name).write_text(name)
    rules = ScanRules(
        frozenset({"input"}),
        frozenset(ignore_names),
        tuple(suffixes),
        frozenset(f"input/{p}" for p in ignore_paths),
    )
    problems: list = []
    rows, subdirs = _Lister(rules, problems)(str(d), "input/", True)
    expected = sorted(
        n for n in files if not n.startswith(".") and not rules.ignored(n, f"input/{n}")
    )
    assert [r[0] for r in rows] == expected
    assert subdirs == [] and problems == []
    for name, size, _mtime, _ctime, ino in rows:
        st_ = os.lstat(d / name)
        assert (size, ino) == (st_.st_size, st_.st_ino)


def test_a_directory_that_became_a_link_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.csv").write_text("not the project's")
    (tmp_path / "w" / "input").mkdir(parents=True)
    # Listed as a directory by its parent, then swapped for a link before its own listing.
    os.symlink(tmp_path / "elsewhere", tmp_path / "w" / "input" / "sub")
    problems: list = []
    rows, _ = _Lister(ScanRules(), problems)(str(tmp_path / "w/input/sub"), "input/sub/", True)
    assert rows == []
    assert [p.path for p in problems] == ["input/sub"]
    assert "cannot read directory" in problems[0].message


def test_the_root_may_be_reached_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "real" / "input").mkdir(parents=True)
    (tmp_path / "real" / "input" / "a.csv").write_text("a")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    problems: list = []
    rows, subdirs = _Lister(ScanRules(), problems)(str(tmp_path / "alias"), "", False)
    assert subdirs == [("input", True)] and rows == [] and problems == []


def test_links_are_read_relative_to_their_directory(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    os.symlink("../elsewhere/x.csv", tmp_path / "input" / "l.csv")
    lister = _Lister(ScanRules(), [])
    rows, _ = lister(str(tmp_path / "input"), "input/", True)
    assert rows == [("l.csv", "../elsewhere/x.csv")] and lister.links


def reference_tracks(rules: ScanRules, path: str) -> bool:
    """`ScanRules.tracks` spelled out one component at a time, with no cache."""
    parts = path.split("/")
    in_data = rules.all_dirs
    for i, name in enumerate(parts):
        if name.startswith(".") or rules.ignored(name, "/".join(parts[: i + 1])):
            return False
        if i < len(parts) - 1 and name in rules.data_dirs:
            in_data = True
    return in_data


COMPONENTS = ["input", "output", "t", "a.tmp", ".git", "x", "*", "skip"]


@pytest.mark.parametrize("seed", range(300))
def test_tracks_answers_as_the_rules_say(seed: int) -> None:
    rng = random.Random(seed)
    dirs = frozenset(rng.sample(["input", "output", "*"], rng.randint(1, 3)))
    names = frozenset(rng.sample(["skip", "x"], rng.randint(0, 1)))
    ignored = frozenset(rng.sample(["t/input", "input/x", "t"], rng.randint(0, 2)))
    rules = ScanRules(dirs, names, (".tmp",), ignored)
    paths = ["/".join(rng.choices(COMPONENTS, k=rng.randint(1, 5))) for _ in range(30)]
    for p in paths + paths:  # twice: the second time from what it kept per directory
        assert rules.tracks(p) == reference_tracks(rules, p), p
    assert rules == ScanRules(dirs, names, (".tmp",), ignored)  # what it keeps is not a rule
