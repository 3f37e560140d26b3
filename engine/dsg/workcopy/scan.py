"""Scan: walk the data directories of a working copy into a manifest of local entries.

Only directories named in `data_dirs` (anywhere in the tree, e.g. `task1/input`) are
recorded; hidden names (`.git`, `.dsg`, temp files) are never entered. Hashes come from a
local cache validated by (size, mtime_ns, ctime_ns, inode); only changed files are read.
"""

from __future__ import annotations

import functools
import os
import stat as stat_mod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
from dsg.workcopy.rules import ScanRules


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

    @property
    def blocking(self) -> list[Problem]:
        return [p for p in self.problems if p.blocking]


@without_gc
def scan(
    root: Path,
    rules: ScanRules,
    cache: HashCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> ScanResult:
    """Scan the working copy at `root`. Entries carry no attribution (snap 0)."""
    cache = cache if cache is not None else HashCache()
    entries: list[Entry] = []
    problems: list[Problem] = []
    result = ScanResult(Manifest.empty(), problems)
    root_s = str(root)
    # Locals for the loop below, which runs once per name in the tree.
    all_dirs = rules.all_dirs
    ignored = rules.ignored
    cached = cache.data.get
    odd = ODD_CHAR.search

    def walk(dir_abs: str, prefix: str, in_data: bool) -> None:
        try:
            it = os.scandir(dir_abs)
        except OSError as e:
            if in_data:
                problems.append(Problem(prefix.rstrip("/"), f"cannot read directory: {e.strerror}"))
            return
        with it:
            for de in it:
                name = de.name
                if name.startswith("."):
                    continue
                rel = prefix + name
                if ignored(name, rel):
                    continue
                # Plain ASCII names (the common case) need no closer look; names starting
                # with "." never get here.
                plain = name.isascii() and len(name) <= MAX_COMPONENT_BYTES and not odd(name)
                bad = None if plain else name_problem(name)
                data_here = in_data or all_dirs
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
                        walk(de.path, rel + "/", data_here or name in rules.data_dirs)
                        continue
                    if not data_here:
                        continue
                    st = de.stat(follow_symlinks=False)
                except OSError as e:
                    problems.append(Problem(rel, f"cannot stat: {e.strerror}"))
                    continue
                mode = st.st_mode
                if stat_mod.S_ISLNK(mode):
                    target = os.readlink(de.path)
                    bad = link_target_problem(rel, target)
                    if bad:
                        problems.append(Problem(rel, bad + "; dsg stores only relative links"))
                        continue
                    entries.append(Entry(rel, 0, 0, None, target))
                elif stat_mod.S_ISREG(mode):
                    key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)  # stat_key
                    hit = cached(rel)
                    digest = hit[4] if hit is not None and hit[:4] == key else None
                    if digest is None:
                        try:
                            digest = hash_file(de.path)
                        except OSError as e:
                            problems.append(Problem(rel, f"cannot read: {e.strerror}"))
                            continue
                        cache.store(rel, key, digest)
                        result.hashed_files += 1
                        result.hashed_bytes += st.st_size
                    entries.append(Entry(rel, st.st_size, st.st_mtime_ns, digest))
                    if progress is not None and len(entries) % 1000 == 0:
                        progress(len(entries))
                else:
                    problems.append(
                        Problem(rel, "not a regular file or symlink; not synced", blocking=False)
                    )

    walk(root_s, "", False)
    entries = _without_bad_links(root_s, entries, rules, problems)
    entries.sort(key=lambda e: e.path)
    for group in case_twins(e.path for e in entries):
        for p in group:
            others = ", ".join(show(o) for o in group if o != p)
            problems.append(Problem(p, f"differs only by letter case from {others}"))
    cache.retain({e.path for e in entries})
    result.manifest = Manifest(entries)
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
