"""core.bulk: the collector is paused while bulk objects are built, and always restored."""

from __future__ import annotations

import gc

import pytest

from dsg.core.bulk import without_gc


def test_the_collector_is_paused_inside_and_restored_after() -> None:
    seen = []

    @without_gc
    def build(fail: bool) -> None:
        seen.append(gc.isenabled())
        inner()
        if fail:
            raise ValueError("boom")

    @without_gc
    def inner() -> None:
        seen.append(gc.isenabled())

    assert gc.isenabled()
    build(False)
    assert seen == [False, False] and gc.isenabled()
    with pytest.raises(ValueError):
        build(True)
    assert gc.isenabled()


def test_a_caller_that_paused_it_keeps_it_paused() -> None:
    gc.disable()
    try:
        without_gc(lambda: None)()
        assert not gc.isenabled()
    finally:
        gc.enable()
