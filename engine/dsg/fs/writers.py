"""Writing many small files: in the calling thread, or from a few threads once the
filesystem proves slow.

Threads overlap the latency of creating files on a slow disk but slow a fast one down (the
GIL changes hands at every system call), so writes run in the calling thread, timed, until
the mean of the last PROBE is above SLOW_S; from then on they go to the threads. The
measurements behind this are in docs/performance.md ("Writing many small files").

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


class Writers:
    def __init__(self, name: str, *, probe: int = PROBE, slow_s: float = SLOW_S) -> None:
        mode = os.environ.get("DSG_WRITERS", "auto")
        if mode == "threads":
            probe, slow_s = 1, -1.0
        elif mode == "serial":
            slow_s = float("inf")
        self.name = name
        self.slow_s = slow_s
        self.timings: deque[float] = deque(maxlen=probe)  # the last `probe` serial writes
        self._sum = 0.0
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
            t = time.perf_counter()
            result = fn(*args)
            timings = self.timings
            if len(timings) == timings.maxlen:
                self._sum -= timings[0]
            took = time.perf_counter() - t
            timings.append(took)
            self._sum += took
            if len(timings) == timings.maxlen and self._sum > self.slow_s * len(timings):
                self.parallel = True
            if on_done is not None:
                on_done(result)
            return
        while len(self._queued) >= MAX_QUEUED:
            self._collect_oldest()
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix=self.name)
        self._queued.append((self._pool.submit(fn, *args), on_done))

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
