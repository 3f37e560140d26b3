"""Walking the working copy in a forked child while the command loads.

`dsg sync` and `dsg status` spend ~0.1 s loading typer, rich, pydantic and the engine before
they can scan, and the walk is one core's work too (100,000 files: ~0.5 s). On a machine
with a second core the two can overlap: `start` forks a child right after the command
starts, which walks with the rules it reads from the raw `.dsgconfig.yml` (sharing a large
tree with helper processes, scan.py) and sends the result back through a pipe: first a
marker line, "C" when the tree is exactly as the clean stamp (stamp.py) recorded it or "D"
as soon as it is not (the parent can start reading the base manifest and the hash cache
then), then the walk. `Workspace.scan` then `take`s it and finishes the scan, but only if the
child ran with exactly the rules of the validated configuration for the same directory;
anything else (another configuration form, a child that failed or was killed, a different
project) falls back to an ordinary scan, so the prescan can make a command faster but
never change its result.

`dsg sync` takes the working copy's lock before forking, so the scan it uses is taken under
the lock as always; `Workspace.lock` adopts that lock (`adopt_lock`).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import marshal
import os
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsg.core.bulk import without_gc
from dsg.workcopy import watch
from dsg.workcopy.rules import (
    DEFAULT_DATA_DIRS,
    DEFAULT_IGNORE_NAMES,
    DEFAULT_IGNORE_SUFFIXES,
    ScanRules,
)
from dsg.workcopy.scan import ScanResult, Walk

STATE_DIR = ".dsg"  # the working copy's own state (see workspace.py)
_FORMAT = 4
SPLIT_FILES = 20_000  # files from which the walk is shared among processes (scan.py)


@dataclass
class _Child:
    pid: int
    fd: int
    root: Path
    rules: ScanRules
    watch: str | None = None  # the file watcher's token, taken before the child's walk


_child: _Child | None = None
_lock: tuple[Path, int] | None = None  # (state dir, descriptor) of a lock taken early


def rules_from_raw(data: Any) -> ScanRules | None:
    """The scan rules a plain `.dsgconfig.yml` asks for, or None for anything unusual. Only a
    guess: the validated configuration decides (see `take`)."""
    if not isinstance(data, dict):
        return None
    dirs = data.get("data_dirs", list(DEFAULT_DATA_DIRS))
    ignore = data.get("ignore", {})
    if not isinstance(ignore, dict):
        return None
    names = ignore.get("names", list(DEFAULT_IGNORE_NAMES))
    suffixes = ignore.get("suffixes", list(DEFAULT_IGNORE_SUFFIXES))
    paths = ignore.get("paths", [])
    lists = (dirs, names, suffixes, paths)
    if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists):
        return None
    return ScanRules(
        frozenset(dirs),
        frozenset(names),
        tuple(suffixes),
        frozenset(p.strip("/") for p in paths if p.strip("/")),
    )


def start(root: Path, data: Any, *, lock: bool) -> None:
    """Fork a child that scans the working copy at `root` (taking its lock first when `lock`).
    Does nothing where a prescan cannot help: no working copy, no rules, a held lock."""
    global _child, _lock
    rules = rules_from_raw(data)
    state = root / STATE_DIR
    if _child is not None or rules is None or not is_real_dir(state) or not hasattr(os, "fork"):
        return
    if lock:
        fd = try_lock(state)
        if fd is None:
            return  # another command runs here: Workspace.lock reports it
        _lock = (state, fd)
    tok = watch.token(state)  # before the walk: a stamp from this scan may hold it (watch.py)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: scan, send, and leave without running any exit handler
        code = 1
        try:
            # A process group of its own, with its scan helpers: stopped as one (_stop_child).
            with contextlib.suppress(OSError):
                os.setpgid(0, 0)
            os.close(r)
            # Nothing of the parent's stays open here but the pipe: not its ssh session or
            # lock, nor its terminal or output (a `dsg sync | ...` pipeline ends with the
            # parent even if the child were still scanning).
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, w)
            os.closerange(w + 1, 1 << 16)
            # Speculative work: it yields to the command's own start and to ssh's handshake
            # (docs/performance.md, "The prescan").
            with contextlib.suppress(OSError):
                os.nice(10)
            _scan(root, rules, w)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with contextlib.suppress(OSError):  # also here: whichever of the two runs first
        os.setpgid(pid, pid)
    _child = _Child(pid, r, root, rules, tok)


def watch_token() -> str | None:
    """The watcher's token taken before the pending child's walk (None without a child)."""
    return _child.watch if _child is not None else None


def _scan(root: Path, rules: ScanRules, fd: int) -> None:
    """Walk, then send the marker line (b"C <stamp signature>" when the tree is exactly as
    the clean stamp recorded it, b"D" as soon as it is not), then, unless clean, the walk:
    the command finishes the scan (hash cache, entries) while this process is gone, having
    read its hash cache and base manifest while it waited (docs/performance.md)."""
    from dsg.fs.files import write_all
    from dsg.workcopy import stamp as stamp_mod
    from dsg.workcopy.hashcache import HashCache
    from dsg.workcopy.scan import scan_processes, walk

    found = stamp_mod.load(root / STATE_DIR, rules)
    expect = found[0].blocks if found is not None else None
    # Helpers cost a fork each: worth it only for a tree of some size (the stamp's count,
    # or the hash cache's).
    files = found[0].files if found is not None else HashCache.count(root / STATE_DIR)
    processes = scan_processes() if files >= SPLIT_FILES else 1
    sent = False

    def dirty() -> None:
        nonlocal sent
        if not sent:
            write_all(fd, b"D\n")
            sent = True

    if expect is None:
        dirty()  # the parent can start on the base manifest now
    walked = walk(root, rules, expect, on_mismatch=dirty, processes=processes)
    if found is not None and walked.is_clean(expect):
        write_all(fd, b"C " + found[1].encode() + b"\n")
        sent = True
    dirty()
    write_all(fd, _encode(walked))
    os.close(fd)


def take(
    root: Path,
    rules: ScanRules,
    *,
    clean_sig: str | None = None,
    on_dirty: Callable[[], None] | None = None,
) -> ScanResult | Walk | None:
    """The child's walk of `root`, for the caller to finish with `scan`, if one was started
    with exactly these rules and finished well; None otherwise. With `clean_sig` (the
    signature of the clean stamp the caller checked), a child that found the tree as that
    stamp recorded it gives a `clean` result at once. `on_dirty` runs as soon as the child
    knows the tree is not clean, while it goes on walking. Waits for the child; a second
    call returns None."""
    global _child
    child = _child
    if child is None:
        return None
    if child.root != root or child.rules != rules:
        _stop_child()
        return None
    buf = b""
    while b"\n" not in buf and (chunk := os.read(child.fd, 4096)):
        buf += chunk
    marker, _, rest = buf.partition(b"\n")
    if clean_sig is not None and marker == b"C " + clean_sig.encode():
        _stop_child()  # the full scan it goes on with is not needed
        from dsg.core.manifest import Manifest

        return ScanResult(Manifest.empty(), prescanned=True, clean=True)
    if marker in (b"D", b"C") and on_dirty is not None:  # "C" of a stamp not the caller's
        on_dirty()
    _child = None
    chunks = [rest]
    try:
        while chunk := os.read(child.fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(child.fd)
        _, status = os.waitpid(child.pid, 0)
    if status != 0 or not marker:
        return None
    payload = b"".join(chunks)
    chunks.clear()  # not held twice while the walk is rebuilt from it
    return _decode(payload)


@without_gc
def _encode(w: Walk) -> bytes:
    problems = [(p.path, p.message, p.blocking) for p in w.problems]
    return marshal.dumps(
        (
            _FORMAT,
            w.blocks,
            w.digests,
            problems,
            w.links,
            w.started_ns,
            w.matching,
            w.matched,
            w.relisted,
        )
    )


@without_gc
def _decode(payload: bytes) -> Walk | None:
    from dsg.workcopy.scan import Problem

    try:
        fmt, blocks, digests, problems, links, started, matching, matched, relisted = marshal.loads(
            payload
        )
        if fmt != _FORMAT:
            return None
        w = Walk(blocks, digests, [Problem(*p) for p in problems], bool(links), int(started))
        w.matching, w.matched, w.relisted = bool(matching), matched, bool(relisted)
        # A malformed row or block fails here, not in the scan that trusts them.
        for prefix, rows in w.blocks:
            if type(prefix) is not str or type(rows) is not list:
                raise TypeError
            for row in rows:
                if type(row) is not tuple or len(row) not in (2, 5):
                    raise TypeError
        for d in w.matched:
            if type(d) is not tuple or len(d) != 3:
                raise TypeError
        return w
    except (EOFError, ValueError, TypeError):  # not what _scan sends: scan again
        return None


def is_real_dir(path: Path) -> bool:
    """A directory, not a link to one: `.dsg` may come from git, where anyone can commit a
    link in its place that would send dsg's state files elsewhere."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def try_lock(state_dir: Path) -> int | None:
    """Take the working copy's lock (flock on `.dsg/lock`): its descriptor, to be closed to
    release it, or None when another process holds it."""
    fd = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return None
        raise
    return fd


def adopt_lock(state_dir: Path) -> int | None:
    """The descriptor of the lock `start` took on `state_dir`, now the caller's to close;
    None if none was taken there (an early lock on another directory is released)."""
    global _lock
    held, _lock = _lock, None
    if held is None:
        return None
    if held[0] == state_dir:
        return held[1]
    os.close(held[1])
    return None


def _stop_child() -> None:
    """Stop a child whose scan is not (or no longer) wanted."""
    global _child
    child, _child = _child, None
    if child is not None:
        try:  # with the helpers listing part of the tree for it (scan.py)
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            with contextlib.suppress(OSError):
                os.kill(child.pid, signal.SIGKILL)
        os.close(child.fd)
        with contextlib.suppress(OSError):
            os.waitpid(child.pid, 0)


def discard_scan() -> None:
    """The command needs no scan after all: stop the child (an early lock is kept)."""
    _stop_child()


def discard() -> None:
    """Forget a started prescan: stop a child whose scan was not taken (a command that ended
    before scanning: it has no use for it), release an early lock. Run at exit."""
    global _lock
    _stop_child()
    if _lock is not None:
        os.close(_lock[1])
        _lock = None


atexit.register(discard)
