"""Code and data apart in git: the project's `.gitignore` keeps `.dsg/` and the data dirs out
of git (a block dsg owns, between two marker lines), and a check that git tracks no file
inside a data dir. Both are advice around dsg's own work: they never stop a command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from dsg.fs.durable import atomic_write

BEGIN = "# >>> dsg: data and dsg's state stay out of git (kept by dsg init/clone)"
END = "# <<< dsg"
GITIGNORE = ".gitignore"
MAX_GITIGNORE = 1 << 20  # a larger .gitignore is left alone (the lines are printed instead)
LS_FILES_TIMEOUT = 3.0  # seconds; a slower git (huge repository, network disk) is skipped
LS_FILES_MAX = 32 << 20  # bytes of `git ls-files -z` output read at most
_GLOB_CHARS = re.compile(r"([\\*?\[\]])")


def patterns(data_dirs: list[str]) -> list[str]:
    """The lines that keep dsg's state and the data dirs (named anywhere) out of git.
    `*` (every directory is data) has no pattern: nothing would be left for git."""
    lines = ["/.dsg/"]
    for d in data_dirs:
        if d == "*" or not d or any(ord(c) < 32 or c == "\x7f" for c in d) or "/" in d:
            continue
        esc = _GLOB_CHARS.sub(r"\\\1", d)
        if esc[0] in "#!":
            esc = "\\" + esc
        if esc.endswith(" "):
            esc = esc[:-1] + "\\ "
        lines.append(f"**/{esc}/")
    return lines


def in_git_worktree(root: Path) -> bool:
    """A `.git` (directory or file) in `root` or above it."""
    return any(os.path.lexists(d / ".git") for d in (root, *root.parents))


@dataclass
class GitignoreResult:
    path: str
    lines: list[str]
    written: bool = False  # the block in .gitignore is now these lines
    changed: bool = False  # ... and this run changed the file
    reason: str = ""  # why it was not written: the lines are to be added by hand
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "path": self.path,
            "lines": self.lines,
            "written": self.written,
            "changed": self.changed,
        }
        if self.reason:
            d["reason"] = self.reason
        return d


def ensure_gitignore(root: Path, data_dirs: list[str]) -> GitignoreResult:
    """Put dsg's block in `root/.gitignore` (once; replaced when data_dirs change), if
    `root` is in a git work tree and the file can be written; else say what to add."""
    path = root / GITIGNORE
    lines = patterns(data_dirs)
    res = GitignoreResult(str(path), lines)
    if "*" in data_dirs:
        res.notes.append(
            "data_dirs is '*' (every directory is data): keep code out of this project's "
            "directories or list its data dirs in .dsgconfig.yml"
        )
    if not in_git_worktree(root):
        res.reason = "no git repository here"
        return res
    block = "\n".join([BEGIN, *lines, END]) + "\n"
    try:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            res.reason = f"{GITIGNORE} is not a regular file"
            return res
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if len(old) > MAX_GITIGNORE:
            res.reason = f"{GITIGNORE} is larger than {MAX_GITIGNORE} bytes"
            return res
        start, end = old.find(BEGIN + "\n"), old.find(END + "\n")
        if start >= 0 and end > start:
            new = old[:start] + block + old[end + len(END) + 1 :]
        else:
            sep = "" if not old or old.endswith("\n") else "\n"
            new = old + sep + ("\n" if old else "") + block
        if new != old:
            # A new temp file under an unpredictable name (O_EXCL|O_NOFOLLOW), then a rename:
            # a link planted at a fixed name (committed to git by anyone) is never written through.
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
            atomic_write(path, new.encode("utf-8"), mode)
            res.changed = True
        res.written = True
    except (OSError, UnicodeDecodeError) as e:
        res.reason = f"{GITIGNORE} cannot be written ({getattr(e, 'strerror', None) or e})"
    return res


LS_FILES = ("ls-files", "-z", "--", ".")


def tracked_data_files(root: Path, data_dirs: list[str], limit: int = 1000) -> list[str]:
    """Files git tracks inside a data dir of the project at `root` (at most `limit`).
    Empty when git is missing, `root` is not in a repository, or git is slow or fails."""
    git = shutil.which("git")
    if git is None or not in_git_worktree(root):
        return []
    names = frozenset(data_dirs)
    if "*" in names:  # every file is data: the init/clone note says so once
        return []
    try:
        proc = subprocess.run(
            # no fsmonitor hook, whatever .git/config says: dsg never runs a project's command
            [git, "-c", "core.quotepath=off", "-c", "core.fsmonitor=false", *LS_FILES],
            cwd=root,
            capture_output=True,
            timeout=LS_FILES_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    found = []
    for raw in proc.stdout[:LS_FILES_MAX].split(b"\0"):
        if not raw:
            continue
        rel = raw.decode("utf-8", "surrogateescape")
        parts = rel.split("/")
        # what a scan records: no hidden component, a directory named in data_dirs
        if not any(p.startswith(".") for p in parts) and any(d in names for d in parts[:-1]):
            found.append(rel)
            if len(found) >= limit:
                break
    return found
