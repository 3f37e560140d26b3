"""Downloads are requested interleaved across directories, for the writer threads."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dsg.sync.execute import interleave_by_dir


def test_round_robin_over_directories_keeping_each_directorys_order() -> None:
    paths = ["a/1", "a/2", "a/3", "b/1", "c/1", "c/2", "top"]
    assert interleave_by_dir(paths) == ["a/1", "b/1", "c/1", "top", "a/2", "c/2", "a/3"]


@given(st.lists(st.tuples(st.sampled_from(["a", "a/b", "c", ""]), st.integers(0, 99)), unique=True))
def test_a_permutation_that_keeps_each_directorys_order(items: list[tuple[str, int]]) -> None:
    paths = [f"{d}/{n}" if d else str(n) for d, n in items]
    out = interleave_by_dir(paths)
    assert sorted(out) == sorted(paths)
    for d in {p.rpartition("/")[0] for p in paths}:
        assert [p for p in out if p.rpartition("/")[0] == d] == [
            p for p in paths if p.rpartition("/")[0] == d
        ]
    # no two neighbours share a directory while another directory still has files left
    for i in range(len(out) - 1):
        same = out[i].rpartition("/")[0] == out[i + 1].rpartition("/")[0]
        rest = {p.rpartition("/")[0] for p in out[i + 1 :]}
        assert not same or len(rest) == 1
