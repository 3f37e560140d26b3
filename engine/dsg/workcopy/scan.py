"""Scan: walk the data directories of a working copy into a manifest of local entries.

Only directories named in `data_dirs` (anywhere in the tree, e.g. `task1/input`) are
recorded; hidden names (`.git`, `.dsg`, temp files) are never entered. Hashes come from a
local cache validated by (size, mtime_ns, ctime_ns, inode); only changed files are read.

A scan is two steps. `walk` lists the tree one directory at a time, in sorted order, into
blocks of stat rows and a digest per block; that is all a no-op status needs when the
digests are those of the clean stamp (stamp.py). `scan` then turns the blocks into entries,
hashing what the cache does not know.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import marshal
import operator
import os
import signal
import stat as stat_mod
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dsg.core.bulk import without_gc
from dsg.core.manifest import Entry, Manifest
from dsg.core.paths import (
    MAX_COMPONENT_BYTES,
    ODD_CHAR,
    case_twins,
    link_problems,
    link_target_problem,
    name_problem,
    show,
)
from dsg.fs.files import hash_file
from dsg.workcopy.hashcache import HashCache
from dsg.workcopy.rules import CONFLICT_COPY, ScanRules

# A file changed this close to the scan may change again within its timestamp's granularity
# without its stat changing: its hash is used but not cached, and no clean stamp covers it
# (git's "racily clean" entries). Linux filesystems stamp with the kernel's coarse clock
# (a tick, at most 10 ms); whole-second timestamps (HFS+, FAT, some network filesystems)
# get two seconds.
RACY_NS = 50_000_000
RACY_COARSE_NS = 2_000_000_000
_SECOND = 1_000_000_000


def is_racy(ctime_ns: int, started_ns: int) -> bool:
    if ctime_ns % _SECOND == 0:
        return ctime_ns >= started_ns - RACY_COARSE_NS
    return ctime_ns >= started_ns - RACY_NS


Row = tuple[Any, ...]  # a file: (name, size, mtime_ns, ctime_ns, inode); a link: (name, target)


@dataclass
class Problem:
    path: str
    message: str
    blocking: bool = True

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "message": self.message, "blocking": self.blocking}

    def __str__(self) -> str:
        return f"{show(self.path)}: {self.message}"


@dataclass
class ScanResult:
    manifest: Manifest
    problems: list[Problem] = field(default_factory=list)
    hashed_files: int = 0
    hashed_bytes: int = 0
    prescanned: bool = False  # done by a child while the command loaded (prescan.py)
    # The walk's block digests when a clean stamp may record this scan: no problem, no link,
    # no file changed within RACY_NS of the scan. None otherwise.
    digests: list[bytes] | None = None
    # Set by a quick scan that found the tree exactly as the clean stamp recorded it: then
    # `manifest` is empty and means nothing (stamp.py).
    clean: bool = False

    @property
    def blocking(self) -> list[Problem]:
        return [p for p in self.problems if p.blocking]


@dataclass
class Walk:
    """The tree's blocks: (directory prefix, sorted rows) per directory holding data."""

    blocks: list[tuple[str, list[Row]]] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    links: bool = False
    started_ns: int = 0
    # with `expect`: True while every block so far had the expected digest (those blocks
    # are not kept: `matched` holds where to list them again if a later one differs)
    matching: bool = True
    matched: list[tuple[str, str, bool]] = field(default_factory=list)
    relisted: bool = False

    def is_clean(self, expect: Sequence[bytes] | None) -> bool:
        return (
            expect is not None
            and self.matching
            and len(self.digests) == len(expect)
            and not self.problems
            and not self.links
        )


_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FLAGS = _ROOT_FLAGS | os.O_NOFOLLOW


class _Lister:
    """Lists one directory into sorted rows and the subdirectories to visit."""

    def __init__(self, rules: ScanRules, problems: list[Problem]) -> None:
        self.rules = rules
        self.problems = problems
        self.links = False

    def __call__(
        self, dir_abs: str, prefix: str, in_data: bool
    ) -> tuple[list[Row], list[tuple[str, bool]]]:
        problems = self.problems
        rules = self.rules
        rows: list[Row] = []
        subdirs: list[tuple[str, bool]] = []
        try:
            # Listed through a descriptor, each file's lstat looks up one name, not the whole
            # path again; below the root, a directory swapped for a link since its parent
            # was listed is not followed.
            fd = os.open(dir_abs, _DIR_FLAGS if prefix else _ROOT_FLAGS)
        except OSError as e:
            if in_data:
                problems.append(Problem(prefix.rstrip("/"), f"cannot read directory: {e.strerror}"))
            return rows, subdirs
        # Locals for the loop below, which runs once per name in the tree.
        names = rules.names
        paths = rules.paths
        suffixes = rules.suffixes or None
        odd = ODD_CHAR.search
        data_here = in_data or rules.all_dirs
        data_dirs = rules.data_dirs
        is_reg = stat_mod.S_ISREG
        try:
            it = os.scandir(fd)
        except OSError as e:
            os.close(fd)
            if in_data:
                problems.append(Problem(prefix.rstrip("/"), f"cannot read directory: {e.strerror}"))
            return rows, subdirs
        try:
            with it:
                for de in it:
                    name = de.name
                    if name.startswith(".") or name in names:
                        continue
                    rel = prefix + name
                    # ScanRules.ignored, inline
                    if (
                        (paths and rel in paths)
                        or (suffixes and name.endswith(suffixes))
                        or (".dsg-conflict-" in name and CONFLICT_COPY.search(name))
                    ):
                        continue
                    # Plain ASCII names (the common case) need no closer look; names starting
                    # with "." never get here.
                    plain = name.isascii() and len(name) <= MAX_COMPONENT_BYTES and not odd(name)
                    bad = None if plain else name_problem(name)
                    try:
                        is_dir = de.is_dir(follow_symlinks=False)
                        if bad:
                            if data_here:
                                problems.append(Problem(rel, f"{bad}; rename it to sync it"))
                            elif is_dir:
                                msg = f"{bad}; not searched for data directories"
                                problems.append(Problem(rel, msg, blocking=False))
                            continue
                        if is_dir:
                            subdirs.append((name, data_here or name in data_dirs))
                            continue
                        if not data_here:
                            continue
                        st = de.stat(follow_symlinks=False)
                        mode = st.st_mode
                        if is_reg(mode):
                            row = (name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                            rows.append(row)
                        elif stat_mod.S_ISLNK(mode):
                            rows.append((name, os.readlink(name, dir_fd=fd)))
                            self.links = True
                        else:
                            msg = "not a regular file or symlink; not synced"
                            problems.append(Problem(rel, msg, blocking=False))
                    except OSError as e:
                        problems.append(Problem(rel, f"cannot stat: {e.strerror}"))
        finally:
            os.close(fd)
        rows.sort()
        subdirs.sort()
        return rows, subdirs


def block_digest(prefix: str, rows: list[Row]) -> bytes:
    return hashlib.blake2b(orjson.dumps([prefix, rows]), digest_size=16).digest()


def scan_threads() -> int:
    """Threads listing directories at once (DSG_SCAN_THREADS, default 1): lstat releases
    the GIL, so with idle cores the system calls of several directories can overlap; on
    the 2-core lab machine more threads did not win (docs/performance.md)."""
    try:
        n = int(os.environ.get("DSG_SCAN_THREADS", "1"))
    except ValueError:
        n = 1
    return max(1, min(n, 32))


def scan_processes() -> int:
    """Processes a prescan lists directories in (DSG_SCAN_PROCESSES, default: the CPUs this
    process may run on, at most 4). Unlike threads they do not share the GIL, so each
    lists its part of the tree at full speed (docs/architecture.md, "The prescan")."""
    default = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    try:
        n = int(os.environ.get("DSG_SCAN_PROCESSES", str(default)))
    except ValueError:
        n = 1
    return max(1, min(n, 4 if "DSG_SCAN_PROCESSES" not in os.environ else 16))


Dir = tuple[str, str, bool]  # (prefix, absolute path, in a data directory)
# A listed directory after a split: its place in the walk's order, its digest, and its
# rows, or None for a block the stamp has (then the directory, to list again if needed).
_Listed = tuple[tuple[int, list[str]], bytes, list[Row] | None, Dir]


def _order(prefix: str) -> tuple[int, list[str]]:
    """A directory's place in the walk's order: a level at a time, each in sorted order."""
    return prefix.count("/"), prefix.split("/")


def _walk_share(
    level: list[Dir], lister: _Lister, expect: frozenset[bytes] | None
) -> list[_Listed]:
    """List the trees under `level` (one process's share after a split)."""
    out: list[_Listed] = []
    while level:
        below: list[Dir] = []
        for prefix, dir_abs, in_data in level:
            rows, subdirs = lister(dir_abs, prefix, in_data)
            below += [(f"{prefix}{n}/", f"{dir_abs}/{n}", d) for n, d in subdirs]
            if not rows:
                continue
            digest = block_digest(prefix, rows)
            kept = None if expect is not None and digest in expect else rows
            out.append((_order(prefix), digest, kept, (prefix, dir_abs, in_data)))
        level = below
    return out


class _Helper:
    """A forked process that lists part of the tree and sends back, per block, its place in
    the walk's order and its digest, with the rows unless the stamp has the block."""

    def __init__(self, share: list[Dir], rules: ScanRules, expect: frozenset[bytes] | None):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # Only its own pipe stays open: the prescan's pipe to the command must see
                # its end when the prescan ends, whatever a helper is doing.
                os.closerange(3, w)
                os.closerange(w + 1, 1 << 16)
                _help(share, rules, expect, w)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        self.pid, self.fd = pid, r
        self.done = False

    def listed(self) -> tuple[list[_Listed], list[Problem], bool]:
        """What the helper listed. RuntimeError if it failed: the caller scans again."""
        chunks = []
        try:
            while chunk := os.read(self.fd, 1 << 20):
                chunks.append(chunk)
        finally:
            self.stop()
        try:
            listed, problems, links = marshal.loads(b"".join(chunks))
            return listed, [Problem(*p) for p in problems], bool(links)
        except (EOFError, ValueError, TypeError) as e:
            raise RuntimeError("a scan helper failed") from e

    def stop(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        os.close(self.fd)
        with contextlib.suppress(OSError):
            os.waitpid(self.pid, 0)


@without_gc
def _help(share: list[Dir], rules: ScanRules, expect: frozenset[bytes] | None, out: int) -> None:
    from dsg.fs.files import write_all

    problems: list[Problem] = []
    lister = _Lister(rules, problems)
    listed = _walk_share(share, lister, expect)
    rows = [(p.path, p.message, p.blocking) for p in problems]
    write_all(out, marshal.dumps((listed, rows, lister.links)))


@without_gc
def walk(
    root: Path,
    rules: ScanRules,
    expect: Sequence[bytes] | None = None,
    on_mismatch: Callable[[], None] | None = None,
    *,
    processes: int = 1,
) -> Walk:
    """List the tree at `root`, a level at a time, each level in sorted order. With `expect`
    (a clean stamp's digests), the blocks that match it are not kept; `on_mismatch` runs
    once, when the first one does not (the caller may start other work then).

    With `processes` > 1 (a prescan's child, which has no threads), the first level with
    enough directories is shared out: forked helpers list theirs, this process the rest,
    and the listings are put back in the walk's order, so the result is the same."""
    w = Walk(started_ns=time.time_ns(), matching=expect is not None)
    lister = _Lister(rules, w.problems)
    threads = scan_threads()
    chunk = threads * 8  # directories listed ahead: bounds what is held at once
    pool: ThreadPoolExecutor | None = None
    helpers: list[_Helper] = []
    tail: list[_Listed] = []  # this process's share, after a split

    def listed(dirs: list[Dir]) -> Iterable[tuple[list[Row], list[Any]]]:
        nonlocal pool
        if threads == 1 or len(dirs) == 1:
            return (lister(d, p, data) for p, d, data in dirs)
        if pool is None:
            pool = ThreadPoolExecutor(threads, thread_name_prefix="dsg-scan")
        return pool.map(lambda t: lister(t[1], t[0], t[2]), dirs)

    def mismatch() -> None:
        if w.matching:
            w.matching = False
            if on_mismatch is not None:
                on_mismatch()

    level: list[Dir] = [("", str(root), False)]
    try:
        while level:
            if processes > 1 and len(level) >= 2 * processes:
                # Blocks found from here on are checked against the stamp as a set, and
                # their order against it once all are back.
                expect_set = frozenset(expect) if expect is not None and w.matching else None
                helpers = [
                    _Helper(level[i::processes], rules, expect_set) for i in range(1, processes)
                ]
                tail = _walk_share(level[0::processes], lister, expect_set)
                break
            below: list[Dir] = []
            for at in range(0, len(level), chunk):
                dirs = level[at : at + chunk]
                for (prefix, dir_abs, in_data), (rows, subdirs) in zip(
                    dirs, listed(dirs), strict=True
                ):
                    below += [(f"{prefix}{n}/", f"{dir_abs}/{n}", d) for n, d in subdirs]
                    if not rows:
                        continue
                    digest = block_digest(prefix, rows)
                    i = len(w.digests)
                    w.digests.append(digest)
                    if w.matching and expect is not None:
                        if i < len(expect) and expect[i] == digest and not lister.links:
                            w.matched.append((prefix, dir_abs, in_data))
                        else:
                            mismatch()
                    if not w.matching:
                        w.blocks.append((prefix, rows))
            level = below
        if helpers:
            if any(rows is not None for _, _, rows, _ in tail):
                mismatch()  # say so before waiting for the helpers
            for h in helpers:
                got, problems, links = h.listed()
                tail += got
                w.problems += problems
                lister.links = lister.links or links
            tail.sort(key=lambda t: t[0])
            for _, digest, rows, where in tail:
                w.digests.append(digest)
                if rows is None:
                    w.matched.append(where)
                else:
                    w.blocks.append((where[0], rows))
            if expect is not None and (w.digests != list(expect) or lister.links):
                mismatch()
    except BaseException:
        for h in helpers:  # an error before their listings were all taken
            h.stop()
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    w.problems.sort(key=lambda p: p.path)  # listed by several threads: in path order
    w.links = lister.links
    if expect is not None and w.matching and not w.is_clean(expect):
        w.matching = False  # fewer blocks than the stamp's, or a problem
        if on_mismatch is not None:
            on_mismatch()
    return w


_DONE: tuple[str, list[Row]] = ("", [])
_PATH = operator.attrgetter("path")


def _relist(w: Walk, rules: ScanRules) -> None:
    """Make the walk whole again: list the directories that matched the stamp before a later
    one did not (they were not kept)."""
    lister = _Lister(rules, w.problems)
    for prefix, dir_abs, in_data in w.matched:
        rows, _ = lister(dir_abs, prefix, in_data)
        if rows:
            w.blocks.append((prefix, rows))
    w.links = w.links or lister.links
    w.matched = []
    w.relisted = True  # listed in two passes: no stamp from this walk


@without_gc
def scan(
    root: Path,
    rules: ScanRules,
    cache: HashCache | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    walked: Walk | None = None,
) -> ScanResult:
    """Scan the working copy at `root` (or finish `walked`, a walk of it). Entries carry no
    attribution (snap 0)."""
    w = walked if walked is not None else walk(root, rules)
    if w.matched:
        _relist(w, rules)
    cache = cache if cache is not None else HashCache()
    entries: list[Entry] = []
    problems = w.problems
    result = ScanResult(Manifest.empty(), problems)
    cached = cache.data.get
    racy_after = w.started_ns - RACY_COARSE_NS  # is_racy() only for the files after this
    racy = False
    root_s = str(root)
    blocks, w.blocks = w.blocks, []
    for i, (prefix, rows) in enumerate(blocks):
        blocks[i] = _DONE  # each block's rows go as its entries come: not both held whole
        for row in rows:
            rel = prefix + row[0]
            if len(row) == 2:
                target = row[1]
                bad = link_target_problem(rel, target)
                if bad:
                    problems.append(Problem(rel, bad + "; dsg stores only relative links"))
                    continue
                entries.append(Entry(rel, 0, 0, None, target))
                continue
            _, size, mtime, ctime, ino = row
            key = (size, mtime, ctime, ino)  # stat_key
            hit = cached(rel)
            digest = hit[4] if hit is not None and hit[:4] == key else None
            recent = ctime >= racy_after and is_racy(ctime, w.started_ns)
            racy = racy or recent
            if digest is None:
                try:
                    digest = hash_file(f"{root_s}/{rel}")
                except OSError as e:
                    problems.append(Problem(rel, f"cannot read: {e.strerror}"))
                    continue
                if not recent:
                    cache.store(rel, key, digest)
                result.hashed_files += 1
                result.hashed_bytes += size
            entries.append(Entry(rel, size, mtime, digest))
            if progress is not None and len(entries) % 1000 == 0:
                progress(len(entries))
    entries = _without_bad_links(root_s, entries, rules, problems)
    entries.sort(key=_PATH)
    paths = list(map(_PATH, entries))
    for group in case_twins(paths):
        for p in group:
            others = ", ".join(show(o) for o in group if o != p)
            problems.append(Problem(p, f"differs only by letter case from {others}"))
    cache.retain(set(paths))
    result.manifest = Manifest(entries, _paths=paths)
    if not (w.relisted or problems or w.links or racy):
        result.digests = w.digests
    return result


def _without_bad_links(
    root: str, entries: list[Entry], rules: ScanRules, problems: list[Problem]
) -> list[Entry]:
    """`entries` less the links whose target, resolved through the other links (those of
    the tree and any on this disk), leaves the data directories: each is a blocking problem
    (a colleague's copy would resolve it the same way)."""
    links = {e.path: e.target for e in entries if e.target is not None}
    if not links:
        return entries

    @functools.cache
    def is_link(path: str) -> bool:
        return path in links or os.path.islink(f"{root}/{path}")

    bad = dict(link_problems(links, is_link, rules.data_dirs))  # type: ignore[arg-type]
    for path, problem in bad.items():
        problems.append(Problem(path, problem + "; change or remove the link to sync"))
    return [e for e in entries if e.path not in bad] if bad else entries
