"""Writing many small files: in the calling thread, or from a few threads once the
filesystem proves slow.

Threads overlap the latency of creating files on a slow disk but slow a fast one down (the
GIL changes hands at every system call), so writes run in the calling thread, timed, until
writes block on the disk for more than SLOW_S on average in SLOW_WINDOWS windows of PROBE
in a row (one slow window is noise on a shared machine); from then on they go to the
threads. Only blocking counts: a write's time less the CPU time the thread spent in it and,
where Linux says how long the thread waited for a CPU (/proc/thread-self/schedstat), that
wait's share. A write slow because the machine is busy, or because it is CPU work, is not
one threads can overlap: they would only add contention (the GIL changes hands at every
system call). The measurements behind this are in docs/performance.md ("Writing
many small files").

`DSG_WRITERS=threads` hands every write after the first to the threads, `serial` none
(tests run both ways; `auto`, the default, decides as above).

Results come back in the calling thread, in submission order (`on_done`), so a caller's
own state (a hash cache, counters) is never touched from a writer thread.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # loaded when first needed: most agent sessions never start threads
    from concurrent.futures import Future, ThreadPoolExecutor

THREADS = 4
MAX_QUEUED = 64  # writes waiting for a thread, data held in memory
PROBE = 32
SLOW_S = 150e-6
SLOW_WINDOWS = 3


def thread_cpu_wait_ns() -> int | None:
    """How long the calling thread has waited for a CPU so far (Linux's schedstat: run time,
    wait time, timeslices), or None where that is not known."""
    try:  # descriptor calls: no file object for a read once per window
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return int(os.read(fd, 128).split()[1])
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return None


class Writers:
    def __init__(
        self,
        name: str,
        *,
        probe: int = PROBE,
        slow_s: float = SLOW_S,
        windows: int = SLOW_WINDOWS,
        cpu_wait_ns: Callable[[], int | None] | None = None,
    ) -> None:
        mode = os.environ.get("DSG_WRITERS", "auto")
        if mode == "threads":
            probe, slow_s = 1, -1.0
        elif mode == "serial":
            slow_s = float("inf")
        self.name = name
        self.slow_s = slow_s
        self.probe = probe
        self.windows = windows
        self._slow_in_a_row = 0
        self._cpu_wait_ns = cpu_wait_ns if cpu_wait_ns is not None else thread_cpu_wait_ns
        self._window: tuple[float, int | None] | None = None  # (start, CPU wait at start)
        self._count = 0  # writes in this window
        self._sum = 0.0  # their time
        self._cpu = 0.0  # the part of it this thread ran on a CPU
        self.parallel = False
        self._pool: ThreadPoolExecutor | None = None
        self._queued: deque[tuple[Future[Any], Callable[[Any], None] | None]] = deque()

    def submit(
        self, fn: Callable[..., Any], *args: Any, on_done: Callable[[Any], None] | None = None
    ) -> None:
        """Run `fn(*args)` now or on a writer thread; `on_done(result)` runs in this thread,
        at once or from a later `submit`/`settle`. An error is raised from whichever call
        collects it; `settle` still waits for every other write first."""
        if not self.parallel:
            if self._window is None:
                self._window = (time.perf_counter(), self._cpu_wait_ns())
            t, c = time.perf_counter(), time.thread_time()
            result = fn(*args)
            self._sum += time.perf_counter() - t
            self._cpu += time.thread_time() - c
            self._count += 1
            if self._count >= self.probe:
                self._slow_in_a_row = self._slow_in_a_row + 1 if self._slow_window() else 0
                self.parallel = self._slow_in_a_row >= self.windows
            if on_done is not None:
                on_done(result)
            return
        while len(self._queued) >= MAX_QUEUED:
            self._collect_oldest()
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix=self.name)
        self._queued.append((self._pool.submit(fn, *args), on_done))

    def _slow_window(self) -> bool:
        """Whether the window's writes waited long for the disk: their time less what this
        thread spent running them and, in proportion, waiting for a CPU. Starts the next
        window."""
        if self._window is None:  # no write timed yet
            return False
        start, waited0 = self._window
        now = time.perf_counter()
        waited1 = self._cpu_wait_ns() if waited0 is not None else None
        busy = 0.0
        if waited0 is not None and waited1 is not None and now > start:
            busy = min(1.0, max(0.0, (waited1 - waited0) / 1e9 / (now - start)))
        blocked = self._sum - self._cpu - self._sum * busy
        slow = blocked > self.slow_s * self._count
        self._window, self._count, self._sum, self._cpu = (now, waited1), 0, 0.0, 0.0
        return slow

    def _collect_oldest(self) -> None:
        future, on_done = self._queued.popleft()
        result = future.result()
        if on_done is not None:
            on_done(result)

    def settle(self) -> None:
        """Wait for every write; run their `on_done`s; raise the first error, if any."""
        failed: BaseException | None = None
        while self._queued:
            try:
                self._collect_oldest()
            except BaseException as e:  # the first is raised below, after the rest
                failed = failed or e
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if failed is not None:
            raise failed

    @property
    def pending(self) -> int:
        return len(self._queued)
