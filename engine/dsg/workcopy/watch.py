"""The file watcher's side of a quick status (`dsg watch`).

`token(state_dir)` asks a running watcher of this working copy for its token: a string that
stays the same exactly as long as the watcher has seen no change in the tree (and changes
when the watcher restarts or loses events). None when no watcher answers. A clean stamp
records the token taken before its scan; a status that gets the same token needs no walk.
"""

from __future__ import annotations

from pathlib import Path

SOCKET = "watch.sock"


def token(state_dir: Path) -> str | None:
    """No watcher runs here yet: the caller walks the tree."""
    if not (state_dir / SOCKET).exists():
        return None
    return None
