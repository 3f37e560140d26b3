"""Path rules: what a stored path may look like, and checks on a set of paths.

Every path dsg stores is relative to the project root, uses `/`, is NFC-normalised and has
no empty, `.` or `..` component. The same checks guard paths arriving from a peer (a
manifest, a request to the agent), so a hostile peer cannot name a file outside the tree.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Iterable

from dsg.core.errors import PathError

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# A backslash or a control character: a path without one, and without the odd shapes
# `path_problem` looks for by substring (the common case), is fine.
ODD_CHAR = re.compile("[\\\\\x00-\x1f\x7f-\x9f]")


def show(path: str) -> str:
    """A path made safe to print on one line (control characters escaped)."""
    if path.isprintable():
        return path
    return repr(path)[1:-1]


def name_problem(name: str) -> str | None:
    """Why one path component (a file or directory name) may not be stored, or None."""
    if name in ("", ".", ".."):
        return f"path component {name!r} not allowed"
    if "\\" in name:
        return "backslash in name"
    if _CONTROL.search(name):
        return "control character (e.g. newline or tab) in name"
    if not name.isascii():
        try:
            if len(name.encode("utf-8")) > MAX_COMPONENT_BYTES:
                return "name longer than 255 bytes"
        except UnicodeEncodeError:
            return "name is not valid UTF-8 (undecodable bytes)"
        if not unicodedata.is_normalized("NFC", name):
            return "name is not NFC-normalised (macOS-style decomposed accents)"
    elif len(name) > MAX_COMPONENT_BYTES:
        return "name longer than 255 bytes"
    return None


def path_problem(path: str) -> str | None:
    """Why `path` is not a valid stored path, or None when it is."""
    if not isinstance(path, str) or not path:
        return "empty path"
    if path[0] == "/":
        return "absolute path"
    if (
        path.isascii()
        and len(path) <= MAX_COMPONENT_BYTES  # no component can be too long
        and path[0] != "."
        and "/." not in path  # no "." or ".." component (nor any dot name: checked below)
        and "//" not in path
        and path[-1] != "/"
        and ODD_CHAR.search(path) is None
    ):
        return None  # the common case
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return "path longer than 4096 bytes"
    for part in path.split("/"):
        problem = name_problem(part)
        if problem:
            return problem
    return None


def check_path(path: str, *, origin: str = "path") -> str:
    problem = path_problem(path)
    if problem:
        raise PathError(f"invalid {origin} {show(path)!r}: {problem}")
    return path


def link_target_problem(link_path: str, target: str) -> str | None:
    """Why a symlink at `link_path` pointing at `target` may not be stored, or None."""
    if not target:
        return "empty symlink target"
    if "\x00" in target:
        return "NUL byte in symlink target"
    if target.startswith("/"):
        return f"absolute symlink target {show(target)!r} (only relative links are stored)"
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), target))
    if joined == ".." or joined.startswith("../") or joined.startswith("/"):
        return f"symlink target {show(target)!r} points outside the project"
    return None


def case_twins(paths: Iterable[str]) -> list[list[str]]:
    """Groups of paths that differ only by letter case (they collide on macOS/Windows)."""
    paths = list(paths)
    folded = list(map(str.casefold, paths))
    if len(set(folded)) == len(folded):
        return []  # the common case, without a group per path
    seen: dict[str, list[str]] = {}
    for p, f in zip(paths, folded, strict=True):
        seen.setdefault(f, []).append(p)
    return [sorted(g) for g in seen.values() if len(g) > 1]


def parents(path: str) -> list[str]:
    """All parent directories of a path, shortest first ('a/b/c' -> ['a', 'a/b'])."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
