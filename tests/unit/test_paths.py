"""Path rules: the same checks guard local names and paths sent by a peer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsg.core.errors import PathError
from dsg.core.paths import (
    all_common,
    case_twins,
    check_path,
    link_target_problem,
    path_problem,
)

GOOD = [
    "a",
    "task/input/data.csv",
    'task/input/with space/it\'s "q".csv',
    "task/input/naïve東京.csv",
    "task/input/double..dot",
    "task/input/trailing.",
    "task/input/$(rm -rf ~);`x`|&",
]
BAD = [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("../x", "'..'"),
    ("a/../../x", "'..'"),
    ("a/./b", "'.'"),
    ("a//b", "''"),
    ("a/b/", "''"),
    ("a\\b", "backslash"),
    ("a/b\nc", "control"),
    ("a/b\tc", "control"),
    ("a/\x00", "control"),
    ("a/\x7f", "control"),
    ("a/cafe\u0301", "NFC"),
    ("a/" + "x" * 256, "255 bytes"),
    ("a/" + "é" * 128, "255 bytes"),
    ("/".join(["d" * 200] * 21), "4096"),
    ("a/\udcff", "UTF-8"),
    ("task/input/.hidden", "hidden"),  # a hidden name is never stored (.git, .dsg, ...)
    ("task/input/..double-dot-prefix", "hidden"),
    (".git/config", "hidden"),
]


@pytest.mark.parametrize("p", GOOD)
def test_good_paths(p: str) -> None:
    assert path_problem(p) is None
    assert check_path(p) == p


@pytest.mark.parametrize(("p", "needle"), BAD)
def test_bad_paths(p: str, needle: str) -> None:
    problem = path_problem(p)
    assert problem is not None and needle in problem
    with pytest.raises(PathError):
        check_path(p)


@pytest.mark.parametrize(
    ("link", "target", "ok"),
    [
        ("t/input/l", "x.csv", True),
        ("t/input/l", "../output/x.csv", True),
        ("t/input/l", "../../x", True),  # the project root itself
        ("t/input/l", "../../../x", False),
        ("t/input/l", "/etc/passwd", False),
        ("t/input/l", "sub/../../../../x", False),
        ("l", "..", False),
        ("t/l", "", False),
    ],
)
def test_link_containment(link: str, target: str, ok: bool) -> None:
    assert (link_target_problem(link, target) is None) == ok


def test_case_twins() -> None:
    assert case_twins(["a/B.csv", "a/b.csv", "a/c.csv", "A/b.csv"]) == [
        ["A/b.csv", "a/B.csv", "a/b.csv"]
    ]


def _component_checks(path: str) -> str | None:
    """path_problem without its fast path: the length, then every component."""
    from dsg.core.paths import MAX_PATH_BYTES, name_problem

    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return "too long"
    return next((p for p in map(name_problem, path.split("/")) if p), None)


@pytest.mark.parametrize("seed", range(20))
def test_the_fast_path_agrees_with_checking_every_component(seed: int) -> None:
    """The common-case shortcut of path_problem accepts exactly what the per-component
    checks accept, on paths made of the characters that matter (dots, slashes, backslash,
    controls, non-ASCII, decomposed accents)."""
    import random

    rng = random.Random(seed)
    alphabet = ["a", "b", ".", ".", "/", "/", "\\", "\x00", "\n", "\x7f", "\x9f", "é", "e\u0301"]
    for _ in range(2000):
        p = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))
        if p.startswith("/"):
            continue  # absolute: refused before either check
        assert (path_problem(p) is None) == (_component_checks(p) is None), repr(p)
    long = "/".join(["x" * 200] * 2)  # each component fine, the whole over 255 bytes
    assert path_problem(long) is None and path_problem("y" * 256) is not None


def test_case_twins_in_a_large_set() -> None:
    paths = [f"d/f{i}" for i in range(1000)]
    assert case_twins(paths) == []
    assert case_twins([*paths, "D/F7", "d/F7"]) == [["D/F7", "d/F7", "d/f7"]]


PIECES = [
    "a",
    "b.csv",
    ".",
    "..",
    ".hidden",
    "",
    "/",
    "//",
    "\\",
    "\t",
    "é",
    "ä",
    "x" * 256,
    " ",
    "a b",
    "\u200b",
]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map("/".join), max_size=6)
)
def test_all_common_means_no_path_has_a_problem(paths: list[str]) -> None:
    if all_common(paths):
        assert all(path_problem(p) is None for p in paths), paths


def test_all_common_takes_plain_trees_and_refuses_each_kind_of_odd_path() -> None:
    plain = [f"task{i}/input/b{i:03}/r{i:05}.csv" for i in range(1000)]
    assert all_common(plain)
    for odd in [".x", "a/.x", "/a", "a/", "a//b", "a\\b", "a\tb", "é", "x" * 256, ""]:
        assert not all_common([*plain[:5], odd, *plain[5:10]]), odd
        assert not all_common([odd]), odd
