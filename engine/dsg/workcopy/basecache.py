"""The working copy's base manifest in a second form that loads without a parse.

Parsing and checking `.dsg/base.manifest.gz` builds and checks every entry from its JSON
line: most of what a status with changes costs beyond the walk. So the checked entries are
also kept in `.dsg/base.cache` as columns (marshal), which load several times faster: when
a sync writes a new base, and after a parse. The columns skip every check a parse makes,
so they are sealed: an HMAC-SHA256 under a key of this user's (`base-cache.key`, 0600, in
DSG_CONFIG_HOME or $XDG_STATE_HOME/dsg), over the columns, the base file's identity (size,
times, inode) and the Python version. A cache that is not this user's own, not for the
base file as it is now, or damaged is ignored and the base is parsed: a `.dsg/` that
arrived from elsewhere (a git checkout, a colleague's copy) never stands in for a checked
base.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import marshal
import os
import stat
import sys
from itertools import repeat
from pathlib import Path

from dsg.core.bulk import without_gc
from dsg.core.manifest import Entry, Manifest, set_aside
from dsg.fs.durable import atomic_write, read_state_file, temp_name

FILE = "base.cache"
KEY_FILE = "base-cache.key"
MAGIC = b"dsg-basecache/2\n"
_MAC = 32
_KEY = 32
# A cache is a few times its (gzipped) base; anything larger is not one of ours.
_MAX_RATIO = 64
_MIN_LIMIT = 1 << 20


def key_dir() -> Path:
    home = os.environ.get("DSG_CONFIG_HOME")
    if home:
        return Path(home)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "dsg"


def user_key(create: bool = True) -> bytes | None:
    """This user's sealing key (made on first use); None when it cannot be had safely."""
    d = key_dir()
    path = d / KEY_FILE
    key = _read_key(path)
    if key is not None or not create:
        return key
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = temp_name(str(path))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, os.urandom(_KEY))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another dsg made one first: use it
            os.link(tmp, path)
        os.unlink(tmp)
    except OSError:
        return None
    return _read_key(path)


def _read_key(path: Path) -> bytes | None:
    # not ours alone (a link, others may read or write it): others could know or choose it
    data = read_state_file(path, _KEY, private=True)
    return data if data is not None and len(data) == _KEY else None


def _identity(base_file: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(base_file, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _seal(key: bytes, ident: tuple[int, int, int, int], payload: bytes) -> bytes:
    h = hmac.new(key, MAGIC, hashlib.sha256)
    h.update(repr((ident, sys.version_info[:2])).encode())
    h.update(payload)
    return h.digest()


def write(
    state_dir: Path, base_file: Path, m: Manifest, key: bytes, *, checked: bool = False
) -> None:
    """Keep `m` as the cache of `base_file`, which holds it. With `checked`, `m.suspect` is
    what loading the file sets aside (it was just parsed from it, or derived from its
    parent's: changes.set_aside_after); otherwise it is found as the load finds it, and a
    manifest the load would refuse gets no cache."""
    ident = _identity(base_file)
    if ident is None:
        return
    suspect = m.suspect if checked else set_aside(m)
    if suspect is None:
        return
    e = m.entries
    targets = {i: x.target for i, x in enumerate(e) if x.target is not None}
    payload = marshal.dumps(
        (
            m.snapshot,
            m.digest(),
            m.paths,
            [x.size for x in e],
            [x.mtime for x in e],
            [x.hash for x in e],
            targets,
            [x.snap for x in e],
            [x.user for x in e],
            suspect,
        )
    )
    with contextlib.suppress(OSError):  # a cache: a copy that cannot keep one parses
        atomic_write(state_dir / FILE, MAGIC + _seal(key, ident, payload) + payload, 0o600)


@without_gc
def load(state_dir: Path, base_file: Path, key: bytes) -> Manifest | None:
    """The base from its cache, if the cache is this user's own and for `base_file` as it
    is now; None otherwise (the caller parses the base)."""
    ident = _identity(base_file)
    if ident is None:
        return None
    limit = max(_MIN_LIMIT, ident[0] * _MAX_RATIO)
    data = read_state_file(state_dir / FILE, limit)
    if data is None or not data.startswith(MAGIC):
        return None
    mac, payload = data[len(MAGIC) : len(MAGIC) + _MAC], data[len(MAGIC) + _MAC :]
    if not hmac.compare_digest(mac, _seal(key, ident, payload)):
        return None
    try:  # sealed by us: well formed unless this engine changed its columns
        columns = marshal.loads(payload)
        snap, digest, paths, sizes, mtimes, hashes, targets, snaps, users, suspect = columns
        entries = list(map(Entry, paths, sizes, mtimes, hashes, repeat(None), snaps, users))
        for i, target in targets.items():
            x = entries[i]
            entries[i] = Entry(x.path, x.size, x.mtime, x.hash, target, x.snap, x.user)
    except (ValueError, TypeError, EOFError, IndexError):
        return None
    m = Manifest(entries, snap, _paths=paths, _digest=digest)
    m.suspect = suspect
    return m
