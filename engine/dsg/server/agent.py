"""The repository agent: `dsg serve`, started over SSH (also as a forced command).

It speaks the protocol of `protocol.py` on stdin/stdout, serves exactly one project (named
in `hello`), checks the caller's role in the access file before anything else, validates
every request and every path, and drives the same backends as local use. It never runs a
shell and never builds a command from input. When the connection drops, it exits: the
kernel releases its lock and the next writer recovers the transaction.
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dsg import __version__
from dsg.backends.base import LockOwner, Repository, Transaction
from dsg.backends.registry import open_local
from dsg.core.errors import DsgError, PathError, PermissionDenied, RepositoryError
from dsg.core.paths import check_path, show
from dsg.core.text import clean_text
from dsg.fs.log import EventLog
from dsg.fs.readahead import read_ahead
from dsg.server.access import DEFAULT_ACCESS_FILE, AccessFile, Limits, allows, load_access
from dsg.server.audit import AuditLog, client_address
from dsg.wire.protocol import (
    PIPE_BUFFER,
    PROTOCOL_VERSION,
    ProtocolError,
    StreamReader,
    error_response,
    input_waiting,
    parse_request,
    recv_json,
    send_json,
    send_stream,
)
from dsg.workcopy.rules import ScanRules

ANSWERS_HELD = 32  # answers to pipelined requests that may wait in the buffer together
READ_OPS = {
    "head",
    "history",
    "exists",
    "record",
    "manifest",
    "manifest_digest",
    "open_file",
    "read_files",
    "tags",
    "bye",
}
WRITE_OPS = {
    "create", "destroy_new", "lock", "unlock", "begin", "put_file", "put_link", "restore",
    "delete", "commit", "abort",
}  # fmt: skip


def _os_error(e: OSError) -> RepositoryError:
    where = f" ({e.filename})" if e.filename else ""
    return RepositoryError(
        f"the repository host could not complete the request: {e.strerror or e}{where}",
        hint="nothing was committed by this request; ask your admin to check the "
        "repository's permissions and free space, then run the command again",
    )


class LockIdle(Exception):
    """The session held the lock and sent nothing for limits.lock_idle_seconds."""


def login_name() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def open_project(name: str, access: AccessFile) -> Repository:
    p = access.projects[name]
    return open_local(p.type, Path(p.mountpoint), name, p.pool)


class Agent:
    def __init__(
        self,
        rfile: BinaryIO,
        wfile: BinaryIO,
        access_file: Path,
        log_path: Path | None,
        audit: AuditLog | None = None,
    ):
        self.r = rfile
        self.w = wfile
        self.access_file = access_file
        self.login = login_name()
        self.repo: Repository | None = None
        self.role: str | None = None
        self.project: str | None = None
        self.stack = contextlib.ExitStack()
        self.lock_cm: contextlib.AbstractContextManager[None] | None = None
        self.txn: Transaction | None = None
        self.access: AccessFile | None = None
        self.log = EventLog(log_path, "-", "serve")
        self.audit = audit or AuditLog(None)
        self.client_ip = client_address()
        self.started = time.monotonic()
        # What the session did, for the audit trail (counts only, never paths or contents).
        self.reads = {"manifests": 0, "files": 0, "bytes": 0}
        self.snapshots_read: set[str] = set()
        self.commits: list[str] = []
        self.txn_counts = self._zero_txn_counts()
        self.txn_parent: str | None = None
        self.outcome = "ok"
        self.held = 0  # answers written but not flushed
        self.created = False  # this session created the repository (destroy_new may undo it)
        self.shape: ScanRules | None = None  # the project's shape, as the repository records it
        self.shape_known = False
        self.limits = Limits()
        self.txn_paths: dict[str, str] = {}  # casefolded -> path, put in this transaction
        self.txn_deleted: set[str] = set()
        self.txn_parent_folded: dict[str, str] | None = None

    @staticmethod
    def _zero_txn_counts() -> dict[str, int]:
        return {"files_put": 0, "bytes_in": 0, "links_put": 0, "restored": 0, "deleted": 0}

    def _audit(self, action: str, **fields: Any) -> None:
        """A best-effort audit record (the session's first record is the strict one)."""
        written = self.audit.record(action, login=self.login, client=self.client_ip, **fields)
        if not written and self.audit.enabled:
            self.log("audit-failed", level="error", action=action, reason=self.audit.last_error)

    # --- session
    def serve(self) -> int:
        try:
            self._hello()
            while True:
                if not input_waiting(self.r):
                    self.w.flush()  # what is held goes out before the agent waits
                    self.held = 0
                try:
                    with self._idle_limit():
                        msg = recv_json(self.r)
                except EOFError:
                    return 0
                except LockIdle:
                    self.log("lock-idle", level="warning", seconds=self.limits.lock_idle_seconds)
                    self._audit(
                        "lock.idle-timeout",
                        project=self.project,
                        seconds=self.limits.lock_idle_seconds,
                    )
                    self.outcome = "idle-timeout"
                    return 1
                try:
                    req = parse_request(msg)
                    if req.op == "bye":
                        send_json(self.w, {"ok": True})
                        return 0
                    self._dispatch(req)
                except ProtocolError as e:
                    send_json(self.w, error_response(e))
                    self.log("refused", level="warning", reason=e.message, login=self.login)
                    self.outcome = "protocol-error"
                    return 2
                except DsgError as e:
                    self.log("error", level="warning", kind=e.kind, reason=e.message)
                    send_json(self.w, error_response(e))
                except (BrokenPipeError, ConnectionError):
                    raise
                except OSError as e:
                    # A filesystem error nothing above turned into a DsgError (permissions
                    # changed under a session, a vanished directory): say what failed, then
                    # end the session; the transaction is aborted in _cleanup.
                    self.log("error", level="error", kind="os", reason=str(e))
                    self.outcome = "error"
                    send_json(self.w, error_response(_os_error(e)))
                    return 1
        except (EOFError, BrokenPipeError):
            self.outcome = "disconnected"
            return 0
        except ProtocolError as e:
            self.outcome = "protocol-error"
            with contextlib.suppress(Exception):
                send_json(self.w, error_response(e))
            return 2
        except DsgError as e:
            self.outcome = "refused"
            with contextlib.suppress(Exception):
                send_json(self.w, error_response(e))
            return 1
        finally:
            self._cleanup()

    @contextlib.contextmanager
    def _idle_limit(self) -> Iterator[None]:
        """While this session holds the lock, waiting for its next request is bounded: a
        client that went silent must not block every other writer of the project."""
        if self.lock_cm is None or not hasattr(signal, "setitimer"):
            yield
            return

        def expire(signum: int, frame: Any) -> None:
            raise LockIdle

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, self.limits.lock_idle_seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _cleanup(self) -> None:
        if self.txn is not None:
            with contextlib.suppress(Exception):
                self.txn.abort()
            self.txn = None
            self._audit("sync.abort", project=self.project, tx=self.log.tx, reason="session ended")
        if self.project is not None:
            self._audit(
                "session.close",
                project=self.project,
                outcome=self.outcome,
                seconds=round(time.monotonic() - self.started, 3),
                manifests_read=self.reads["manifests"],
                files_read=self.reads["files"],
                bytes_read=self.reads["bytes"],
                snapshots_read=sorted(self.snapshots_read) or None,
                commits=self.commits or None,
            )
        if self.lock_cm is not None:
            with contextlib.suppress(Exception):
                self.lock_cm.__exit__(None, None, None)
            self.lock_cm = None
        with contextlib.suppress(Exception):
            self.stack.close()
        if self.repo is not None:
            with contextlib.suppress(Exception):
                self.repo.close()

    def _hello(self) -> None:
        req = parse_request(recv_json(self.r))
        if req.op != "hello":
            raise ProtocolError("the first message must be hello")
        if req.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {req.version} is not supported (agent speaks "
                f"{PROTOCOL_VERSION}; dsg {__version__})",
            )
        access = load_access(self.access_file)
        self.log.tx = f"session-{os.getpid()}"
        if req.project is None:  # a listing session: only list_repos
            self.access = access
            self.log("session", login=self.login, listing=True)
            self._audit("session.list", client_version=req.client)
            send_json(
                self.w,
                {"ok": True, "version": PROTOCOL_VERSION, "server": f"dsg {__version__}",
                 "login": self.login},
            )  # fmt: skip
            return
        role = access.role(req.project, self.login)
        if role is None:
            self.log("denied", level="warning", project=req.project, login=self.login)
            self._audit("access.denied", project=req.project, request="hello", role=None)
            raise PermissionDenied(
                f"permission denied for project {req.project} (user {self.login})",
                hint="ask an admin to grant you access (read or write) to the project",
            )
        project = access.projects[req.project]
        if req.repo_path and req.repo_path.rstrip("/") != project.mountpoint.rstrip("/"):
            raise RepositoryError(
                f"project {req.project} lives at {project.mountpoint} on this host, "
                f"not {req.repo_path}",
                hint="fix repository.mountpoint in .dsgconfig.yml",
            )
        # The first record of a session is strict: no audit trail, no session.
        self.audit.record_strict(
            "session.open",
            login=self.login,
            client=self.client_ip,
            project=req.project,
            role=role,
            client_version=req.client,
        )
        self.role, self.project = role, req.project
        self.limits = access.limits
        self.repo = open_project(req.project, access)
        self._read_shape_for_hello()
        os.umask(0o002)  # group-shared repositories: members must be able to write
        self.log("session", project=req.project, login=self.login, role=role)
        send_json(
            self.w,
            {
                "ok": True,
                "version": PROTOCOL_VERSION,
                "server": f"dsg {__version__}",
                "login": self.login,
                "role": role,
                "type": project.type,
                "shape": self.shape.to_json().decode() if self.shape else None,
            },
        )

    # --- requests
    def _dispatch(self, req: Any) -> None:
        op = req.op
        if (self.project is None) != (op == "list_repos"):
            raise ProtocolError(
                "list_repos is the only request of a session without a project"
                if self.project is None
                else "list_repos needs a session without a project"
            )
        if op == "list_repos":
            from dsg.server.listing import list_projects

            self.ok(repos=list_projects(self.access, self.login))
            return
        needed = "read" if op in READ_OPS else "write"
        if not allows(self.role, needed):  # type: ignore[arg-type]
            self._audit("access.denied", project=self.project, request=op, role=self.role)
            raise PermissionDenied(
                f"permission denied: {self.login} has {self.role} access to project "
                f"{self.project}; '{op}' needs {needed}",
                hint="ask an admin for write access",
            )
        handler: Callable[[Any], None] = getattr(self, f"op_{op}")
        handler(req)

    def ok(self, **fields: Any) -> None:
        """Answer success. While more requests are already waiting (a window of uploads),
        answers are held and leave ANSWERS_HELD at a time; serve() flushes before it would
        wait for the next request, so every answer the client waits for reaches it."""
        send_json(self.w, {"ok": True, **fields}, flush=False)
        self.held += 1
        if self.held >= ANSWERS_HELD:
            self.w.flush()
            self.held = 0

    @property
    def r_(self) -> Repository:
        assert self.repo is not None
        return self.repo

    def op_head(self, req: Any) -> None:
        self.ok(head=self.r_.head())

    def op_exists(self, req: Any) -> None:
        self.ok(exists=self.r_.exists())

    def op_history(self, req: Any) -> None:
        self.ok(records=[r.to_dict() for r in self.r_.history()])

    def op_record(self, req: Any) -> None:
        self.ok(record=self.r_.record(req.snapshot).to_dict())

    def op_manifest_digest(self, req: Any) -> None:
        self.ok(digest=self.r_.manifest_digest(req.snapshot))

    def op_manifest(self, req: Any) -> None:
        data = self.r_.manifest_bytes(req.snapshot)
        self.reads["manifests"] += 1
        if req.snapshot:
            self.snapshots_read.add(req.snapshot)
        self.ok(size=len(data))
        send_stream(self.w, io.BytesIO(data))

    def op_open_file(self, req: Any) -> None:
        check_path(req.path)
        entry = self.r_.manifest(req.snapshot).get(req.path)
        if entry is None or entry.is_link:
            raise RepositoryError(f"{req.path!r} is not a file in {req.snapshot}")
        with self.r_.open_file(req.snapshot, req.path) as f:
            self.ok(size=entry.size)
            send_stream(self.w, f)
        self._count_read(req.snapshot, entry.size)

    def op_read_files(self, req: Any) -> None:
        """Stream many files: per file a header {ok, path, size} and its data frames. The
        batch stops at the first error (sent as the header of that file)."""
        manifest = self.r_.manifest(req.snapshot)

        def open_checked(path: str) -> BinaryIO:
            check_path(path)
            entry = manifest.get(path)
            if entry is None or entry.is_link:
                raise RepositoryError(f"{path!r} is not a file in {req.snapshot}")
            return self.r_.open_file(req.snapshot, path)

        # Opened ahead, so the disk fetches the next files while this one is sent; an error
        # is raised at its file's turn, after the files before it were sent.
        with contextlib.closing(read_ahead(req.paths, open_checked)) as files:
            for path, f in files:
                size = manifest.get(path).size  # type: ignore[union-attr]
                with f:  # unflushed: small files leave together, a buffer at a time
                    send_json(self.w, {"ok": True, "path": path, "size": size}, flush=False)
                    send_stream(self.w, f, flush=False)
                self._count_read(req.snapshot, size)

    def _count_read(self, snapshot: str | None, size: int) -> None:
        self.reads["files"] += 1
        self.reads["bytes"] += size
        if snapshot:
            self.snapshots_read.add(snapshot)

    def op_tags(self, req: Any) -> None:
        self.ok(tags=self.r_.tags())

    def op_add_tag(self, req: Any) -> None:
        tag = self.r_.add_tag(req.name, req.snapshot, req.message, req.author)
        self.log("tagged", tag=req.name, snapshot=req.snapshot, login=self.login)
        self._audit("tag.add", project=self.project, tag=req.name, snapshot=req.snapshot)
        self.ok(tag=tag)

    def op_create(self, req: Any) -> None:
        shape = None
        if req.shape is not None:
            shape = ScanRules.from_json(req.shape.encode(), origin="the shape in create")
        self.r_.create(shape)
        self.created, self.shape, self.shape_known = True, shape, True
        self.log("created", project=self.project, login=self.login)
        self._audit(
            "project.create",
            project=self.project,
            data_dirs=sorted(shape.data_dirs) if shape else None,
        )
        self.ok()

    def op_destroy_new(self, req: Any) -> None:
        """Undo a failed init: only the session that created the repository, and only what
        it committed itself (nothing, or s1 while it still holds the lock)."""
        head = self.r_.head()
        if not self.created or head not in (None, "s1"):
            raise PermissionDenied(
                f"only the session that created project {self.project} can remove it",
                hint="ask an admin to remove a repository",
            )
        if head is not None and (self.lock_cm is None or head not in self.commits):
            raise PermissionDenied(
                f"project {self.project} has a snapshot this session did not commit under "
                "its lock; it is kept"
            )
        self._audit("project.destroy-new", project=self.project, head=head)
        self.r_.destroy_new()
        self.created = False
        self.log("destroyed-new", project=self.project, login=self.login)
        self.ok()

    def op_lock(self, req: Any) -> None:
        if self.lock_cm is not None:
            raise ProtocolError("lock already held in this session")
        o = req.owner
        owner = LockOwner(user=clean_text(o.user), tx=o.tx, operation=o.operation, login=self.login)
        cm = self.r_.lock(owner, req.timeout)
        cm.__enter__()
        self.lock_cm = cm
        self.log.tx = owner.tx
        self.log("locked", user=owner.user, login=self.login)
        self.ok(
            recovered=list(self.r_.recovered),
            stale_holder=self.r_.stale_holder,
        )

    def op_unlock(self, req: Any) -> None:
        if self.txn is not None:
            self.txn.abort()
            self.txn = None
        if self.lock_cm is not None:
            self.lock_cm.__exit__(None, None, None)
            self.lock_cm = None
        self.ok()

    def op_begin(self, req: Any) -> None:
        if self.lock_cm is None:
            raise ProtocolError("begin without the lock")
        if self.txn is not None:
            raise ProtocolError("a transaction is already open")
        self.txn = self.r_.begin(req.parent, req.tx)
        self.txn_counts = self._zero_txn_counts()
        self.txn_parent = req.parent
        self.txn_paths, self.txn_deleted, self.txn_parent_folded = {}, set(), None
        self.ok()

    def _txn(self) -> Transaction:
        if self.txn is None:
            raise ProtocolError("no open transaction")
        return self.txn

    def _read_shape_for_hello(self) -> None:
        """The shape goes out with the hello when it can be read; when it cannot (no access
        to zfs yet, as on zfs-fuse without sudo), the hello still succeeds, the client keeps to
        its own rules, and the first put reads it strictly (and fails if it still cannot)."""
        self.shape_known = False
        try:
            self.shape = self.r_.shape() if self.r_.exists() else None
            self.shape_known = True
        except DsgError as e:
            self.shape = None
            self.log("shape-unread", level="warning", reason=e.message)

    def _check_new_path(self, path: str) -> None:
        """A path this session puts into the repository: a valid stored path, inside the
        project's shape, not a case twin of another path of the result, within the caps."""
        check_path(path)
        if not self.shape_known:
            self.shape, self.shape_known = self.r_.shape(), True
        if self.shape is not None and not self.shape.tracks(path):
            raise PathError(
                f"{show(path)} is outside project {self.project}'s data directories "
                f"({self.shape.describe()}) or matches its ignore rules; the repository "
                "refuses it",
                hint="only files inside the data directories are synced",
            )
        puts = self.txn_counts["files_put"] + self.txn_counts["links_put"]
        if puts >= self.limits.max_uploads:
            raise RepositoryError(
                f"this transaction reached the limit of {self.limits.max_uploads} uploads",
                hint="sync in parts, or ask an admin to raise limits.max_uploads",
            )
        folded = path.casefold()
        other = self.txn_paths.get(folded)
        if other is None:
            if self.txn_parent_folded is None:
                self.txn_parent_folded = self._parent_folded()
            other = self.txn_parent_folded.get(folded)
            if other is not None and other in self.txn_deleted:
                other = None
        if other is not None and other != path:
            raise PathError(
                f"{show(path)} differs only by letter case from {show(other)} in project "
                f"{self.project}; the repository refuses it",
                hint="rename one of them (they collide on macOS and Windows)",
            )
        self.txn_paths[folded] = path

    def _parent_folded(self) -> dict[str, str]:
        if self.txn_parent is None:
            return {}
        return {p.casefold(): p for p in self.r_.manifest(self.txn_parent).paths}

    def op_put_file(self, req: Any) -> None:
        reader = StreamReader(self.r)
        try:  # a refused file's data is read and dropped: the session goes on
            self._check_new_path(req.path)
            if self.txn_counts["bytes_in"] + req.size > self.limits.max_staged_bytes:
                raise RepositoryError(
                    f"this transaction would exceed the limit of "
                    f"{self.limits.max_staged_bytes} bytes uploaded",
                    hint="sync in parts, or ask an admin to raise limits.max_staged_bytes",
                )
            txn = self._txn()
            txn.put_file(req.path, reader, req.size, req.mtime_ns, bytes.fromhex(req.hash))  # type: ignore[arg-type]
        finally:
            reader.drain()
        self.txn_counts["files_put"] += 1
        self.txn_counts["bytes_in"] += req.size
        self.ok()

    def op_put_link(self, req: Any) -> None:
        self._txn()
        self._check_new_path(req.path)
        self._txn().put_link(req.path, req.target)
        self.txn_counts["links_put"] += 1
        self.ok()

    def op_restore(self, req: Any) -> None:
        self._txn()
        self._check_new_path(req.path)
        self._txn().restore(req.path, req.snapshot)
        self.txn_counts["restored"] += 1
        self.ok()

    def op_delete(self, req: Any) -> None:
        check_path(req.path)
        self._txn().delete(req.path)
        self.txn_deleted.add(req.path)
        self.txn_paths.pop(req.path.casefold(), None)
        self.txn_counts["deleted"] += 1
        self.ok()

    def op_commit(self, req: Any) -> None:
        txn = self._txn()
        rec = txn.commit(
            clean_text(req.message),
            clean_text(req.author),
            clean_text(req.author_name),
            login=self.login,
        )
        self.txn = None
        self.log("committed", snapshot=rec.id, author=req.author, login=self.login)
        replaced = txn.replaced
        if replaced:
            self.log(
                "damaged-objects-replaced",
                level="warning",
                snapshot=rec.id,
                objects=replaced,
                hint="they did not hash to their names; check the disk (zpool status, SMART)",
            )
            self._audit("repo.objects-replaced", project=self.project, count=len(replaced))
        self.commits.append(rec.id)
        self._audit(
            "sync.commit",
            project=self.project,
            snapshot=rec.id,
            parent=self.txn_parent,
            tx=self.log.tx,
            author=req.author,
            **self.txn_counts,
        )
        self.ok(record=rec.to_dict())

    def op_abort(self, req: Any) -> None:
        if self.txn is not None:
            self.txn.abort()
            self.txn = None
            self._audit("sync.abort", project=self.project, tx=self.log.tx, reason="client abort")
        self.ok()


def serve(access_file: Path | None = None, log_dir: Path | None = None) -> int:
    access = access_file or Path(os.environ.get("DSG_ACCESS_FILE", DEFAULT_ACCESS_FILE))
    log_path = None
    for d in (log_dir, Path(os.environ.get("DSG_LOG_DIR", "/var/log/dsg"))):
        if d is not None and _may_log_in(d):
            log_path = d / "agent.jsonl"
            break
    audit_dir = log_dir or Path(os.environ.get("DSG_LOG_DIR", "/var/log/dsg"))
    # Large buffers on the raw pipes: a batch of small files streams out in few writes.
    sys.stdout.flush()
    rx = open(sys.stdin.fileno(), "rb", buffering=PIPE_BUFFER, closefd=False)  # noqa: SIM115
    tx = open(sys.stdout.fileno(), "wb", buffering=PIPE_BUFFER, closefd=False)  # noqa: SIM115
    agent = Agent(rx, tx, access, log_path, AuditLog.in_dir(audit_dir))
    return agent.serve()


def _may_log_in(d: Path) -> bool:
    """Whether this user may append to `d`/agent.jsonl: the file is there and writable (the
    dsg_server role pre-creates it in a directory members cannot write, so that none can
    delete a log), or it is not and the directory is writable."""
    if not d.is_dir():
        return False
    p = d / "agent.jsonl"
    if os.path.lexists(p):
        return os.access(p, os.W_OK, follow_symlinks=False)
    return os.access(d, os.W_OK)


def main(argv: list[str]) -> int:
    """`dsg serve [--access-file F] [--log-dir D]` without the interactive CLI's imports."""
    import argparse

    ap = argparse.ArgumentParser(prog="dsg serve")
    ap.add_argument("--access-file", default="")
    ap.add_argument("--log-dir", default="")
    ns = ap.parse_args(argv)
    return serve(
        Path(ns.access_file) if ns.access_file else None, Path(ns.log_dir) if ns.log_dir else None
    )
