"""Path rules: the same checks guard local names and paths sent by a peer."""

from __future__ import annotations

import pytest

from dsg.errors import PathError
from dsg.paths import case_twins, check_path, link_target_problem, path_problem

GOOD = [
    "a",
    "task/input/data.csv",
    'task/input/with space/it\'s "q".csv',
    "task/input/naïve東京.csv",
    "task/input/.hidden-is-a-valid-path",
    "task/input/..double-dot-prefix",
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
