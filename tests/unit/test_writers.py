"""dsg.fs.writers: when writes go to threads, what comes back, and errors."""

from __future__ import annotations

import threading
import time

import pytest

from dsg.fs.writers import MAX_QUEUED, Writers


def test_a_fast_filesystem_keeps_writes_in_this_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSG_WRITERS", "auto")
    w = Writers("t", probe=4, slow_s=0.01)
    seen: list[str] = []
    for i in range(10):
        w.submit(lambda i=i: (seen.append(threading.current_thread().name), i)[1])
    w.settle()
    assert not w.parallel
    assert set(seen) == {threading.current_thread().name}


def test_a_slow_filesystem_moves_writes_to_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSG_WRITERS", "auto")
    w = Writers("slowdisk", probe=3, slow_s=0.001, windows=1)
    names: list[str] = []
    done: list[int] = []

    def write(i: int) -> int:
        time.sleep(0.002)
        names.append(threading.current_thread().name)
        return i

    for i in range(20):
        w.submit(write, i, on_done=done.append)
    w.settle()
    assert w.parallel
    assert names[:3] == [threading.current_thread().name] * 3
    assert all(n.startswith("slowdisk") for n in names[3:])
    assert done == list(range(20))  # in submission order, in this thread


def test_settle_waits_for_all_and_raises_the_first_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSG_WRITERS", "threads")
    w = Writers("t")
    finished: list[int] = []

    def write(i: int) -> int:
        time.sleep(0.001 * (i % 3))
        if i in (5, 9):
            raise OSError(28, "No space left on device", f"f{i}")
        return i

    for i in range(12):
        w.submit(write, i, on_done=finished.append)
    with pytest.raises(OSError) as e:
        w.settle()
    assert e.value.filename == "f5"
    assert finished == [i for i in range(12) if i not in (5, 9)]
    assert w.pending == 0


def test_at_most_max_queued_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSG_WRITERS", "threads")
    w = Writers("t")
    gate = threading.Event()
    threading.Timer(0.3, gate.set).start()  # the writers stall until then
    peak = 0
    for _ in range(MAX_QUEUED * 2):
        w.submit(gate.wait, 5)
        peak = max(peak, w.pending)
    w.settle()
    assert peak == MAX_QUEUED


def test_serial_never_uses_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSG_WRITERS", "serial")
    w = Writers("t", probe=1, slow_s=-1)
    for _ in range(5):
        w.submit(time.sleep, 0.0001)
    assert not w.parallel and w.pending == 0


def test_writes_slowed_by_a_busy_cpu_stay_in_this_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow writes on a machine whose CPUs are busy (the thread waited for one all the
    while) are not the disk's latency: threads would only add contention."""
    monkeypatch.setenv("DSG_WRITERS", "auto")
    start = time.perf_counter()

    def waited_all_along() -> int:  # as if every ns since the start was spent runnable
        return int((time.perf_counter() - start) * 1e9)

    w = Writers("busy", probe=3, slow_s=0.001, cpu_wait_ns=waited_all_along)
    for i in range(12):
        w.submit(time.sleep, 0.002)
        assert not w.parallel, i
    w.settle()

    # The same writes, the thread never waiting for a CPU: the disk is slow, threads help.
    w = Writers("slowdisk", probe=3, slow_s=0.001, windows=2, cpu_wait_ns=lambda: 0)
    for _ in range(6):
        w.submit(time.sleep, 0.002)
    w.settle()
    assert w.parallel


def test_one_slow_window_is_not_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    """A single slow window among fast ones (a hiccup of a shared machine) keeps the writes
    in this thread; as many slow windows in a row as asked turn the threads on."""
    monkeypatch.setenv("DSG_WRITERS", "auto")
    w = Writers("t", probe=2, slow_s=0.001, windows=2, cpu_wait_ns=lambda: 0)
    for delay in (0.002, 0.002, 0, 0, 0.002, 0.002, 0, 0):  # slow, fast, slow, fast windows
        w.submit(time.sleep, delay)
        assert not w.parallel
    for _ in range(4):  # two slow windows in a row
        w.submit(time.sleep, 0.002)
    assert w.parallel
    w.settle()


def test_cpu_wait_is_read_where_linux_gives_it() -> None:
    from dsg.fs.writers import thread_cpu_wait_ns

    first = thread_cpu_wait_ns()
    if first is None:
        pytest.skip("no /proc/thread-self/schedstat (not Linux, or a kernel without schedstats)")
    assert first >= 0
    later = thread_cpu_wait_ns()
    assert later is not None and later >= first


def test_writes_slow_by_their_own_cpu_work_stay_in_this_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write that takes long computing (not blocked on the disk) is nothing threads could
    overlap under the GIL."""
    monkeypatch.setenv("DSG_WRITERS", "auto")

    def spin() -> None:
        end = time.thread_time() + 0.002
        while time.thread_time() < end:
            pass

    from dsg.fs.writers import thread_cpu_wait_ns

    if thread_cpu_wait_ns() is None:  # a loaded machine would preempt the spin unaccounted
        pytest.skip("no /proc/thread-self/schedstat (not Linux, or a kernel without schedstats)")
    # the real CPU wait: on a loaded machine the spin is also preempted
    w = Writers("cpu", probe=3, slow_s=0.001, windows=1)
    for i in range(9):
        w.submit(spin)
        assert not w.parallel, i
    w.settle()
