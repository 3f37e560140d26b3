"""Path rules: what a stored path may look like, and checks on a set of paths.

Every path dsg stores is relative to the project root, uses `/`, is NFC-normalised and has
no empty, `.` or `..` component and no hidden (dot) name. Names that mislead a reader are
refused too: invisible and direction-changing characters (Unicode Cf, line separators) and
look-alikes of `/`, `\\` and `.`. The same checks guard paths arriving from a peer (a
manifest, a request to the agent), so a hostile peer cannot name a file outside the tree,
nor one that tools such as git read as their own (`.git/config`, `.dsgconfig.yml`).
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping

from dsg.core.errors import PathError

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# A backslash or a control character: a path without one, and without the odd shapes
# `path_problem` looks for by substring (the common case), is fine.
ODD_CHAR = re.compile("[\\\\\x00-\x1f\x7f-\x9f]")


# Characters that look like a path separator without being one; NFKC folds the fullwidth
# and small forms (U+FF0F, U+FE68, ...) to the real ones, these it leaves alone.
_SLASH_LOOKALIKES = frozenset("\u2215\u2044\u29f8\u29f5\u29f9\u2216\u2571\u2572\u27cb\u27cd")
# Invisible or direction-changing: format characters (bidi overrides and isolates, zero-width
# space and joiners, soft hyphen, BOM...) and the line and paragraph separators.
_INVISIBLE_CATEGORIES = frozenset(("Cf", "Zl", "Zp"))
_JOINERS = frozenset("\u200c\u200d")  # zero-width non-joiner and joiner
_ESCAPED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def show(path: str) -> str:
    """A path made safe to print on one line (control characters escaped)."""
    if path.isprintable():
        return path
    return repr(path)[1:-1]


def show_text(text: str) -> str:
    """Free text from another person (a message, an author, a tag) made safe to print:
    control characters (C0, C1, also newline and tab), invisible and direction-changing ones
    escaped as Python writes them (\\x1b, \\n, \\u202e), so an escape sequence cannot move
    the cursor, erase lines, retitle the terminal or fake a line of output."""
    if text.isprintable():  # the common case: no C*, Zl or Zp character (nor Zs but space)
        return text
    return "".join(
        repr(ch)[1:-1] if unicodedata.category(ch) in _ESCAPED_CATEGORIES else ch for ch in text
    )


# Scripts whose letters join, where a zero-width non-joiner changes the shapes it sits between
# (Arabic with Persian and Urdu, Syriac, and their presentation forms).
_JOINING_SCRIPTS = ((0x0600, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))


def _joiner_in_script(name: str, i: int) -> bool:
    """A zero-width (non-)joiner where a script needs it, as IDNA's ContextJ rule allows it:
    either after a virama (Indic conjuncts, e.g. Devanagari क्‍ष), or a non-joiner between two
    letters of a joining script (e.g. Persian می‌خواهم). Elsewhere (Latin, Cyrillic, at
    either end) nothing shows it: it could only hide a difference between two names."""
    if i == 0 or i == len(name) - 1:
        return False
    before, after = name[i - 1], name[i + 1]
    if not all(unicodedata.category(c)[0] in "LM" for c in (before, after)):
        return False
    if unicodedata.combining(before) == 9:  # a virama
        return True
    return name[i] == "\u200c" and all(
        any(lo <= ord(c) <= hi for lo, hi in _JOINING_SCRIPTS) for c in (before, after)
    )


def _unicode_problem(name: str) -> str | None:
    """Refused non-ASCII shapes: invisible, direction-changing and look-alike characters."""
    for i, ch in enumerate(name):
        if ord(ch) > 0x7F and unicodedata.category(ch) in _INVISIBLE_CATEGORIES:
            if ch in _JOINERS and _joiner_in_script(name, i):
                continue
            return (
                f"invisible or direction-changing character U+{ord(ch):04X} "
                f"({unicodedata.name(ch, 'unnamed')}) in name"
            )
    if not _SLASH_LOOKALIKES.isdisjoint(name):
        return "look-alike of '/' in name"
    folded = unicodedata.normalize("NFKC", name)
    if folded != name:
        if "/" in folded or "\\" in folded:
            return "look-alike of '/' or '\\' in name (fullwidth or small form)"
        # Only what would read as '.', '..' or a hidden name once folded: an ellipsis
        # inside a name (macOS types one for "...") folds to harmless dots.
        if folded.startswith("."):
            return "look-alike of '.' or '..' in name (fullwidth, small or leader dots)"
    return None


def name_problem(name: str) -> str | None:
    """Why one path component (a file or directory name) may not be stored, or None."""
    if name in ("", ".", ".."):
        return f"path component {name!r} not allowed"
    if name[0] == ".":
        return "hidden name (starting with '.'): not stored by dsg"
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
        return _unicode_problem(name)
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
        and "/." not in path  # no ".", ".." or other dot-name component
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


def all_common(paths: list[str]) -> bool:
    """Every one of `paths` takes `path_problem`'s common case (so none has a problem),
    checked on all of them joined by "/" in a few C-level passes: a path that starts with
    "." or "/", ends with "/" or is empty shows at a join as "/." or "//"."""
    if not paths:
        return True
    if set(map(type, paths)) != {str} or not all(paths):
        return False
    joined = "/".join(paths)
    return (
        joined.isascii()
        and max(map(len, paths)) <= MAX_COMPONENT_BYTES
        and joined[0] not in "./"
        and joined[-1] != "/"
        and "/." not in joined
        and "//" not in joined
        and ODD_CHAR.search(joined) is None
    )


def unsafe_path_problem(path: str) -> str | None:
    """Why `path` could not even be named safely on a disk (empty, absolute, `.`/`..`,
    backslash, control characters, too long, not UTF-8 or not NFC), or None. What
    `path_problem` refuses beyond this (hidden names, invisible and look-alike characters)
    is policy: a manifest that holds such a path still loads, and the path is set aside."""
    if not isinstance(path, str) or not path:
        return "empty path"
    if path[0] == "/":
        return "absolute path"
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return "path longer than 4096 bytes"
    for name in path.split("/"):
        if name in ("", ".", ".."):
            return f"path component {name!r} not allowed"
        if "\\" in name:
            return "backslash in name"
        if _CONTROL.search(name):
            return "control character (e.g. newline or tab) in name"
        try:
            if len(name.encode("utf-8")) > MAX_COMPONENT_BYTES:
                return "name longer than 255 bytes"
        except UnicodeEncodeError:
            return "name is not valid UTF-8 (undecodable bytes)"
        if not name.isascii() and not unicodedata.is_normalized("NFC", name):
            return "name is not NFC-normalised (macOS-style decomposed accents)"
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


def _resolve_link(
    link_path: str, target: str, is_link: Callable[[str], bool]
) -> tuple[str | None, str | None]:
    """Where `target` leads from the directory of the link at `link_path`, resolved name by
    name as the kernel would, assuming no name on the way is a link: returns (path, None),
    or (None, problem) when it leaves the project, enters a hidden name or passes through
    another link (`is_link`). A link as the final name is fine: it is checked on its own."""
    stack = link_path.split("/")[:-1]
    pushed = False  # the top of `stack` was reached by this target (not yet checked)
    for part in target.split("/"):
        if pushed:
            here = "/".join(stack)
            if is_link(here):
                return (
                    None,
                    f"symlink target {show(target)!r} passes through another link {show(here)!r}",
                )
            pushed = False
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None, f"symlink target {show(target)!r} points outside the project"
            stack.pop()  # an ancestor of the link or a prefix checked above: no link
        elif part[0] == ".":
            return None, f"symlink target {show(target)!r} points into a hidden name"
        else:
            stack.append(part)
            pushed = True
    return "/".join(stack), None


def link_problems(
    links: Mapping[str, str],
    is_link: Callable[[str], bool] | None = None,
    data_dirs: Collection[str] | None = None,
) -> list[tuple[str, str]]:
    """(link path, problem) for each link of a tree whose target, resolved name by name from
    the link's directory, leaves the project, passes through another link (`is_link`,
    default: a path of `links`), or, given the project's `data_dirs`, ends outside every data
    directory. Text checks alone are not enough: `x/l1 -> ..` makes
    `esc -> x/l1/x/l1/../../../../etc/passwd` look contained while it reaches /etc/passwd.
    Checked: each link's own resolution; a link at the end of another is checked itself."""
    if not links:
        return []
    is_link = is_link or links.__contains__
    anywhere = data_dirs is None or "*" in data_dirs
    out: list[tuple[str, str]] = []
    for path, target in links.items():
        resolved, problem = _resolve_link(path, target, is_link)
        if problem is None and not anywhere:
            assert data_dirs is not None and resolved is not None
            if not any(part in data_dirs for part in resolved.split("/")):
                problem = (
                    f"symlink target {show(target)!r} is outside the data directories "
                    f"({', '.join(sorted(data_dirs))})"
                )
        if problem is not None:
            out.append((path, problem))
    return out


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
