"""The file watcher (`dsg watch`, Linux): a no-op status without walking the tree.

A watcher process holds an inotify watch on every directory of the working copy a scan could
enter (every name not starting with "."; the scan never enters those) and counts each event
in them as a change. It answers on `.dsg/watch.sock` with a token:

    <root dev>.<root inode>.<epoch>.<changes>

which stays the same exactly as long as the watcher has counted no change. The epoch is
random per watcher and is drawn again whenever events may have been lost: the kernel's queue
overflowed, a watch went away while its directory was still wanted, or a watch could not be
added (then the watcher answers "unhealthy", and no token, until it has them all again).

`token(state_dir)` asks for it. A clean stamp (stamp.py) records the token taken before its
scan's walk; a later status that gets the same token needs no walk (workspace.py). A query
is answered only after the watcher has read its own sync cookie (a file it creates in
`.dsg/` for the query) from the inotify queue, so every event that happened before the
query has been counted: never a stale "nothing changed". Any doubt (no socket, refused,
another user's socket or peer, a slow, garbled or oversized reply) is None, and the
caller walks the tree as it would without a watcher.

Names starting with "." are ignored (the scan skips them: `.git`, editors' swap files); a
rename to or from one is an event on the visible name. Events inside `.dsg/` are dsg's own
state, which the clean stamp binds by other means; that directory is watched only for the
cookies and for its own removal.

inotify cannot see changes made through a hard link from outside the tree, through a
writable mmap, or by another machine on a network filesystem: the watcher refuses to run
on NFS, SMB and the like, and the docs say so (docs/user-guide.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from dsg.core.errors import WorkingCopyError

if TYPE_CHECKING:
    import selectors

# ctypes, selectors, signal and friends are imported where the watcher runs: every status
# imports this module for `token`, which needs none of them.

SOCKET = "watch.sock"
LOCK = "watch.lock"
COOKIE = "watch-cookie-"  # + sequence number: created in .dsg/ for each token query
TIMEOUT = 1.0  # seconds a client waits for the whole answer
COOKIE_WAIT = 0.8  # seconds the watcher waits for a query's cookie event before giving up
MAX_REQUEST = 64
MAX_REPLY = 4096
MAX_TOKEN = 200
RETRY = 30.0  # seconds between attempts to watch everything again while unhealthy
READ_SIZE = 256 << 10

TOKEN_RE = re.compile(r"[0-9a-f]{1,16}\.[0-9a-f]{1,16}\.[0-9a-f]{32}\.[0-9]{1,20}")

# inotify(7)
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000

NAMES = {
    IN_MODIFY: "IN_MODIFY",
    IN_ATTRIB: "IN_ATTRIB",
    IN_CLOSE_WRITE: "IN_CLOSE_WRITE",
    IN_MOVED_FROM: "IN_MOVED_FROM",
    IN_MOVED_TO: "IN_MOVED_TO",
    IN_CREATE: "IN_CREATE",
    IN_DELETE: "IN_DELETE",
    IN_DELETE_SELF: "IN_DELETE_SELF",
    IN_MOVE_SELF: "IN_MOVE_SELF",
    IN_UNMOUNT: "IN_UNMOUNT",
    IN_Q_OVERFLOW: "IN_Q_OVERFLOW",
    IN_IGNORED: "IN_IGNORED",
    IN_ISDIR: "IN_ISDIR",
}
# What changes what a scan sees: contents, stat, names.
CHANGES = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_CREATE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
DIR_MASK = CHANGES | IN_ONLYDIR | IN_DONT_FOLLOW
STATE_MASK = IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW

# Filesystems whose changes made elsewhere inotify never reports.
REMOTE_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
     "afs", "fuse.sshfs", "fuse.glusterfs", "fuse.ceph", "fuse.s3fs", "fuse.rclone"}
)  # fmt: skip

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
_CRED = struct.Struct("3i")  # pid, uid, gid


class WatchError(WorkingCopyError):
    """The watcher cannot run here (kind "working_copy", like the other working-copy errors)."""


Event = tuple[int, int, int, bytes]  # wd, mask, cookie, name


# --- pure parts ---------------------------------------------------------------------------
def parse_events(buf: bytes) -> list[Event]:
    """The events in one read(2) of an inotify descriptor. A record that does not fit is an
    error (the kernel never splits one)."""
    out: list[Event] = []
    i, n = 0, len(buf)
    while i < n:
        if n - i < _EVENT.size:
            raise ValueError("truncated inotify event header")
        wd, mask, cookie, length = _EVENT.unpack_from(buf, i)
        i += _EVENT.size
        if length > n - i:
            raise ValueError("truncated inotify event name")
        name = buf[i : i + length].split(b"\0", 1)[0]
        i += length
        out.append((wd, mask, cookie, name))
    return out


def describe(mask: int) -> list[str]:
    """The flags of an event mask, by name (unknown bits as hex)."""
    names = [name for bit, name in NAMES.items() if mask & bit]
    rest = mask & ~sum(NAMES)
    return names + ([hex(rest)] if rest else [])


def is_change(mask: int, name: bytes) -> bool:
    """Whether an event in a watched data directory may change what a scan sees."""
    return bool(mask & CHANGES) and not name.startswith(b".")


def make_token(root: tuple[int, int], epoch: str, changes: int) -> str:
    return f"{root[0]:x}.{root[1]:x}.{epoch}.{changes}"


def parse_reply(data: bytes) -> dict[str, Any] | None:
    """One reply line from a watcher: a JSON object of at most MAX_REPLY bytes, else None."""
    if len(data) > MAX_REPLY or not data.endswith(b"\n") or data.count(b"\n") != 1:
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def token_of(reply: dict[str, Any] | None, root: tuple[int, int]) -> str | None:
    """The token in a reply to "token", if it is well formed and names this working copy."""
    if reply is None or reply.get("ok") is not True:
        return None
    tok = reply.get("token")
    if not isinstance(tok, str) or len(tok) > MAX_TOKEN or not TOKEN_RE.fullmatch(tok):
        return None
    if not tok.startswith(f"{root[0]:x}.{root[1]:x}."):
        return None  # another tree's watcher (a copied .dsg, a bind mount)
    return tok


def fs_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The filesystem type of the mount holding `path` (/proc/self/mountinfo)."""
    try:
        dev = os.stat(path).st_dev
        if mountinfo is None:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                mountinfo = f.read(4 << 20)
    except OSError:
        return None
    want = f"{os.major(dev)}:{os.minor(dev)}"
    found = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and len(fields) >= 5 and fields[2] == want and right.split():
            found = right.split()[0]  # the last mount of this device wins (mounted on top)
    return found


# --- client -------------------------------------------------------------------------------
def _sock_path(state_dir: Path, dirfd: int | None) -> str:
    """The socket's address: its path, or through /proc/self/fd when the path is too long
    for sockaddr_un (108 bytes)."""
    path = os.fsencode(state_dir / SOCKET)
    if len(path) < 100 or dirfd is None:
        return os.fsdecode(path)
    return f"/proc/self/fd/{dirfd}/{SOCKET}"


def peer_uid(s: socket.socket) -> int:
    return _CRED.unpack(s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))[1]


def request(state_dir: Path, what: str, timeout: float = TIMEOUT) -> dict[str, Any] | None:
    """Ask this working copy's watcher `what` ("token", "status", "stop"); its reply, or
    None if no watcher of this user answers well within `timeout` seconds."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        st = os.lstat(state_dir / SOCKET)
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
        return None
    deadline = time.monotonic() + timeout
    dirfd = None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        if len(os.fsencode(state_dir / SOCKET)) >= 100:
            dirfd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        s.settimeout(timeout)
        s.connect(_sock_path(state_dir, dirfd))
        if peer_uid(s) != os.getuid():
            return None
        s.sendall(what.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(left)
            chunk = s.recv(MAX_REPLY + 1 - len(data))
            if not chunk:
                return None
            data += chunk
            if len(data) > MAX_REPLY:
                return None
        return parse_reply(data)
    except (OSError, ValueError):
        return None
    finally:
        s.close()
        if dirfd is not None:
            os.close(dirfd)


def root_id(state_dir: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(state_dir.parent)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def token(state_dir: Path, timeout: float = TIMEOUT) -> str | None:
    """The running watcher's token for the working copy whose state is `state_dir`, or None
    when no healthy watcher answers (the caller then walks the tree)."""
    root = root_id(state_dir)
    if root is None:
        return None
    return token_of(request(state_dir, "token", timeout), root)


# --- inotify ------------------------------------------------------------------------------
class _Libc:
    def __init__(self) -> None:
        import ctypes

        self.get_errno = ctypes.get_errno
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes = [ctypes.c_int]
        self.init1.restype = ctypes.c_int
        self.add = libc.inotify_add_watch
        self.add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add.restype = ctypes.c_int
        self.rm = libc.inotify_rm_watch
        self.rm.argtypes = [ctypes.c_int, ctypes.c_int]
        self.rm.restype = ctypes.c_int


_libc: _Libc | None = None


def _lib() -> _Libc:
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc


def _check(rc: int) -> int:
    if rc < 0:
        e = _lib().get_errno()
        raise OSError(e, os.strerror(e))
    return rc


def inotify_init() -> int:
    """A new non-blocking inotify descriptor (its queue limit is max_queued_events now)."""
    return _check(_lib().init1(IN_NONBLOCK | IN_CLOEXEC))


def add_watch(fd: int, path: bytes, mask: int) -> int:
    return _check(_lib().add(fd, path, mask))


def rm_watch(fd: int, wd: int) -> None:
    with contextlib.suppress(OSError):
        _check(_lib().rm(fd, wd))


# --- the watcher --------------------------------------------------------------------------
class _Stop(Exception):
    pass


class _Conn:
    __slots__ = ("cookie", "data", "deadline", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.data = b""
        self.cookie: bytes | None = None


class Watcher:
    """One working copy's watcher. `inotify_fd`, if given, is used for the first set of
    watches (a test makes it with a small queue); later ones are made here."""

    def __init__(self, root: Path, inotify_fd: int | None = None) -> None:
        self.root = Path(root).absolute()
        self.state = self.root / ".dsg"
        self._root_b = os.fsencode(self.root)
        st = os.stat(self.root)
        self.root_key = (st.st_dev, st.st_ino)
        self.inotify_fd = inotify_fd
        self.fd = -1
        self.epoch = ""
        self.changes = self.events = self.overflows = self.rewatches = 0
        self.problem: str | None = None
        self.wds: dict[int, tuple[bytes, int]] = {}  # wd -> (path, inode)
        self.gone: set[int] = set()  # removed on purpose: IN_IGNORED expected
        self.moved: set[int] = set()
        self.state_wd = self.root_wd = -1
        self.stopping = False
        self._rewatch = False
        self._retry_at = 0.0
        self._seq = 0
        self._conns: dict[int, _Conn] = {}
        self._sel: selectors.BaseSelector | None = None
        self._started = ""

    # --- watches
    def establish(self) -> None:
        """A new inotify instance watching the whole tree, under a new epoch."""
        import secrets
        import selectors

        if self.fd >= 0:
            if self._sel is not None:
                self._sel.unregister(self.fd)
            os.close(self.fd)
            self.fd = -1
        fd, self.inotify_fd = self.inotify_fd, None
        self.fd = inotify_init() if fd is None else fd
        if self._sel is not None:
            self._sel.register(self.fd, selectors.EVENT_READ, "inotify")
        self.wds.clear()
        self.gone.clear()
        self.moved.clear()
        self.epoch = secrets.token_hex(16)
        self.changes = 0
        self.problem = None
        self._rewatch = False
        self.root_wd = self.state_wd = -1
        try:
            self.state_wd = add_watch(self.fd, os.fsencode(self.state), STATE_MASK)
        except OSError as e:
            self._fail(f"cannot watch {self.state}: {e.strerror}", e)
            return
        self.wds[self.state_wd] = (os.fsencode(self.state), os.stat(self.state).st_ino)
        self._watch_tree(self._root_b)
        if self.problem is None:
            self.root_wd = next((wd for wd, (p, _) in self.wds.items() if p == self._root_b), -1)
            if self.root_wd < 0:
                self._fail(f"cannot watch {self.root}", None)
        # The cookies of queries taken before this instance will never arrive: answer them
        # now, under the new epoch (every watch is in place, and their walks come after).
        for conn in list(self._conns.values()):
            if conn.cookie is not None:
                self._answer(conn)

    def _fail(self, problem: str, e: OSError | None) -> None:
        if e is not None and e.errno == errno.ENOSPC:
            problem += (
                " (the limit of inotify watches, fs.inotify.max_user_watches, is reached:"
                " raise it with sysctl)"
            )
        self.problem = problem
        self._retry_at = time.monotonic() + RETRY

    def _watch_tree(self, top: bytes) -> None:
        """Watch `top` and every directory under it a scan could enter: each is watched
        before it is listed, so nothing created in it is missed."""
        stack = [top]
        while stack and self.problem is None:
            path = stack.pop()
            try:
                wd = add_watch(self.fd, path, DIR_MASK)
                ino = os.lstat(path).st_ino
            except OSError as e:
                if e.errno == errno.ENOSPC or path == self._root_b:
                    self._fail(f"cannot watch {os.fsdecode(path)}: {e.strerror}", e)
                continue  # gone or replaced already: its parent's event counted that
            self.wds[wd] = (path, ino)
            self.gone.discard(wd)
            try:
                with os.scandir(path) as it:
                    for de in it:
                        if not de.name.startswith(b".") and de.is_dir(follow_symlinks=False):
                            stack.append(de.path)
            except OSError:
                continue  # unreadable: a scan reports it and writes no stamp

    def _prune(self) -> None:
        """Stop watching directories moved out of the tree (their paths no longer lead to
        them); a directory moved inside it was watched again under its new path."""
        moved, self.moved = self.moved, set()
        for wd in moved:
            if wd not in self.wds:
                continue
            path, ino = self.wds[wd]
            if _inode(path) == ino:
                continue
            under = path + b"/"
            for w, (p, i) in list(self.wds.items()):
                if (w == wd or p.startswith(under)) and _inode(p) != i:
                    rm_watch(self.fd, w)
                    self.gone.add(w)
                    del self.wds[w]

    # --- events
    def read_events(self) -> None:
        while True:
            try:
                buf = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                break
            if not buf:
                break
            try:
                events = parse_events(buf)
            except ValueError:
                self._lost()
                return
            for ev in events:
                self.handle(*ev)
                if self._rewatch or self.stopping:
                    return
            if len(buf) < READ_SIZE // 2:
                break
        self._prune()

    def _lost(self) -> None:
        """Events may have been lost: a new epoch, once every watch is in place again."""
        self._rewatch = True

    def handle(self, wd: int, mask: int, _cookie: int, name: bytes) -> None:
        self.events += 1
        if mask & IN_Q_OVERFLOW:
            self.overflows += 1
            self._lost()
            return
        if wd == self.state_wd:
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT):
                self.problem = "the working copy's .dsg directory was moved or removed"
                self.stopping = True
            elif mask & IN_CREATE and name.startswith(COOKIE.encode()):
                for conn in self._conns.values():
                    if conn.cookie == name:
                        self._answer(conn)
                        break
            return
        if mask & IN_IGNORED:
            if wd in self.gone:
                self.gone.discard(wd)
            elif wd in self.wds:  # a directory still wanted lost its watch (an unmount)
                del self.wds[wd]
                self.changes += 1
                self._lost()
            return
        if wd not in self.wds:
            self.changes += 1  # a watch we let go of: cannot hurt to count it
            return
        if wd == self.root_wd and mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
            self.problem = "the working copy was moved or removed"
            self.stopping = True
            return
        if mask & IN_DELETE_SELF:
            self.gone.add(wd)
            self.changes += 1
            return
        if mask & IN_MOVE_SELF:
            self.moved.add(wd)
            self.changes += 1
            return
        if not is_change(mask, name):
            return
        self.changes += 1
        if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
            self._watch_tree(self.wds[wd][0] + b"/" + name)

    @property
    def healthy(self) -> bool:
        return self.problem is None and self.fd >= 0 and not self._rewatch

    def token(self) -> str | None:
        return make_token(self.root_key, self.epoch, self.changes) if self.healthy else None

    def status(self) -> dict[str, Any]:
        return {
            "running": True,
            "pid": os.getpid(),
            "root": str(self.root),
            "healthy": self.healthy,
            "problem": self.problem,
            "epoch": self.epoch,
            "events": self.events,
            "changes": self.changes,
            "watches": len(self.wds),
            "overflows": self.overflows,
            "rewatches": self.rewatches,
            "started": self._started,
        }

    # --- queries
    def _accept(self, listener: socket.socket) -> None:
        import selectors

        try:
            s, _ = listener.accept()
        except OSError:
            return
        try:
            if peer_uid(s) != os.getuid():
                s.close()
                return
            s.setblocking(False)
        except OSError:
            s.close()
            return
        if self._sel is None:
            s.close()
            return
        self._conns[s.fileno()] = _Conn(s, time.monotonic() + TIMEOUT)
        self._sel.register(s, selectors.EVENT_READ, "conn")

    def _read_request(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(MAX_REQUEST + 1)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        conn.data += chunk
        if not chunk or len(conn.data) > MAX_REQUEST:
            self._close(conn)
            return
        if not conn.data.endswith(b"\n"):
            return
        what = conn.data.strip()
        if what == b"token":
            if not self.healthy:
                self._reply(conn, {"ok": False, "problem": self.problem or "re-watching"})
                return
            self._seq += 1
            conn.cookie = f"{COOKIE}{os.getpid()}-{self._seq}".encode()
            conn.deadline = time.monotonic() + COOKIE_WAIT
            try:
                fd = os.open(
                    os.path.join(os.fsencode(self.state), conn.cookie),
                    os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
                os.close(fd)
            except OSError as e:
                self._reply(conn, {"ok": False, "problem": f"cookie: {e.strerror}"})
        elif what == b"status":
            self._reply(conn, {"ok": True, **self.status()})
        elif what == b"stop":
            self._reply(conn, {"ok": True, "stopping": True, "pid": os.getpid()})
            self.stopping = True
        else:
            self._reply(conn, {"ok": False, "problem": "unknown request"})

    def _answer(self, conn: _Conn) -> None:
        if conn.cookie is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(os.fsencode(self.state), conn.cookie))
            conn.cookie = None
        tok = self.token()
        if tok is None:
            self._reply(conn, {"ok": False, "problem": self.problem or "re-watching"})
        else:
            self._reply(conn, {"ok": True, "token": tok})

    def _reply(self, conn: _Conn, doc: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            conn.sock.sendall(orjson.dumps(doc, default=str)[: MAX_REPLY - 1] + b"\n")
        self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.cookie is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(os.fsencode(self.state), conn.cookie))
            conn.cookie = None
        self._conns.pop(conn.sock.fileno(), None)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
        conn.sock.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if conn.deadline <= now:
                if conn.cookie is not None:
                    self._reply(conn, {"ok": False, "problem": "the query's cookie was not seen"})
                else:
                    self._close(conn)

    # --- running
    def run(self, on_ready: Callable[[Watcher], None] | None = None) -> None:
        """Watch until stopped (SIGTERM, SIGINT, a "stop" query, or the tree going away).
        One watcher per working copy: a second one fails with WatchError."""
        import fcntl
        import selectors
        import signal

        if not sys.platform.startswith("linux"):
            raise WatchError(
                "dsg watch is Linux-only (it uses inotify)",
                hint="dsg status works without it: it walks the tree",
            )
        kind = fs_type(self.root)
        if kind in REMOTE_FS:
            raise WatchError(
                f"{self.root} is on a network filesystem ({kind}): changes made on other "
                "machines never reach inotify, so a watcher here could miss them",
                hint="dsg status works without it: it walks the tree",
            )
        if not self.state.is_dir() or self.state.is_symlink():
            raise WatchError(f"{self.state} is not a directory", hint="run 'dsg status' first")
        lock = os.open(
            self.state / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        listener: socket.socket | None = None
        bound: int | None = None
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.pread(lock, 32, 0).decode(errors="replace").strip()
                raise WatchError(
                    f"a watcher already runs for {self.root}"
                    + (f" (pid {other})" if other.isdigit() else ""),
                    hint="'dsg watch --status' shows it; 'dsg watch --stop' stops it",
                ) from None
            os.ftruncate(lock, 0)
            os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
            for s in old:
                with contextlib.suppress(ValueError):  # not the main thread: no signals
                    signal.signal(s, _raise_stop)
            listener, bound = self._listen()
            self._sel = selectors.DefaultSelector()
            self._started = datetime.now(UTC).isoformat(timespec="seconds")
            self.establish()
            self._sel.register(listener, selectors.EVENT_READ, "listen")
            if on_ready is not None:
                on_ready(self)
            self._loop(listener, self._sel)
        except _Stop:
            pass
        finally:
            for s, h in old.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(s, h)
            for conn in list(self._conns.values()):
                self._close(conn)
            if listener is not None:
                listener.close()
            if bound is not None and _inode(os.fsencode(self.state / SOCKET)) == bound:
                with contextlib.suppress(OSError):
                    os.unlink(self.state / SOCKET)
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            if self._sel is not None:
                self._sel.close()
                self._sel = None
            os.close(lock)

    def _listen(self) -> tuple[socket.socket, int]:
        path = self.state / SOCKET
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise WatchError(f"{path} is not a socket", hint=f"remove it ('rm {path}')")
            os.unlink(path)  # a dead watcher's (we hold the lock)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        dirfd = os.open(self.state, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mask = os.umask(0o177)
        try:
            s.bind(_sock_path(self.state, dirfd))
        except OSError:
            s.close()
            raise
        finally:
            os.umask(mask)
            os.close(dirfd)
        os.chmod(path, 0o600)
        s.listen(16)
        s.setblocking(False)
        return s, os.lstat(path).st_ino

    def _loop(self, listener: socket.socket, sel: selectors.BaseSelector) -> None:
        while not self.stopping:
            timeout = min((c.deadline for c in self._conns.values()), default=None)
            if self.problem is not None:
                timeout = min(timeout or self._retry_at, self._retry_at)
            wait = None if timeout is None else max(0.0, timeout - time.monotonic())
            for key, _ in sel.select(wait):
                if key.data == "inotify":
                    self.read_events()
                elif key.data == "listen":
                    self._accept(listener)
                else:
                    conn = self._conns.get(key.fd)
                    if conn is not None:
                        self._read_request(conn)
                if self._rewatch and not self.stopping:
                    break
            if self.stopping:
                break
            if self._rewatch or (self.problem is not None and time.monotonic() >= self._retry_at):
                self.rewatches += 1
                self.establish()
            self._expire()


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop()


def _inode(path: bytes) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None
