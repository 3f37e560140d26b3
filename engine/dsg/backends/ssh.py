"""The ssh transport: a Repository whose verbs run in `dsg serve` on the repository host.

The client starts OpenSSH (`ssh -T -o BatchMode=yes -o StrictHostKeyChecking=yes ...`) with
the agent as the remote command and speaks the framed protocol over its stdin/stdout.
OpenSSH rather than paramiko: it honours ~/.ssh/config aliases, agents and known_hosts the
way researchers already use them, and moves bulk data faster (docs/performance.md).
`DSG_SSH_COMMAND` replaces the `ssh` program and its options, like GIT_SSH_COMMAND.

Host keys are always verified: an unknown or changed key stops with the key's fingerprint
and how to accept it, never a silent accept.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dsg.backends.base import LockOwner, Repository, Transaction
from dsg.core.errors import (
    ConfigError,
    ConflictsBlocked,
    DsgError,
    HeadMoved,
    IntegrityError,
    LockTimeout,
    ManifestError,
    PathError,
    PermissionDenied,
    RepositoryError,
    RepositoryExists,
    RepositoryNotFound,
    TransportError,
)
from dsg.core.manifest import Manifest, SnapshotRecord
from dsg.wire.protocol import (
    PIPE_BUFFER,
    ProtocolError,
    StreamReader,
    recv_json,
    send_json,
    send_stream,
)
from dsg.wire.sshstart import hello, parse_host, ssh_argv, start, take
from dsg.workcopy.rules import ScanRules

ERRORS: dict[str, type[DsgError]] = {
    cls.kind: cls
    for cls in (
        ConfigError,
        ConflictsBlocked,
        HeadMoved,
        IntegrityError,
        LockTimeout,
        ManifestError,
        PathError,
        PermissionDenied,
        RepositoryError,
        RepositoryExists,
        RepositoryNotFound,
        ProtocolError,
    )
}

READ_BATCH = 500  # files per read_files request
PUT_WINDOW = 128  # uploads in flight; at this many, answers are collected down to half


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for ssh to exit, woken the moment it does (Popen.wait with a timeout polls with
    sleeps, which cost a small sync tens of milliseconds); kill it after `timeout`."""
    waiter = threading.Thread(target=proc.wait, daemon=True)
    waiter.start()
    waiter.join(timeout)
    if waiter.is_alive():
        proc.kill()
        waiter.join()


class SshRepository(Repository):
    def __init__(
        self,
        host: str,
        name: str,
        repo_path: str,
        *,
        user: str | None = None,
        port: int | None = None,
        remote_command: str | None = None,
    ) -> None:
        spec_user, self.host, spec_port = parse_host(host)
        self.user = user or spec_user
        self.port = port or spec_port
        self.name = name
        self.repo_path = repo_path
        self.location = f"{host}:{repo_path}"
        self.remote_command = remote_command or "dsg serve"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pending = 0  # pipelined requests whose answers are not read yet
        self.role: str | None = None
        self.recovered: list[str] = []
        self.stale_holder: str | None = None
        self.locked = False
        self._hello_pending = False
        self._shape: ScanRules | None = None

    # --- connection
    def ssh_argv(self) -> list[str]:
        return ssh_argv(self.host, self.user, self.port, self.remote_command)

    def _conn(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            self._start()
        if self._hello_pending:
            self._finish_hello()
        assert self.proc is not None
        return self.proc

    def warm(self) -> None:
        """Start ssh and send the hello now; its answer is read at the first request, so the
        SSH handshake and the agent's start overlap the caller's local work (the scan)."""
        if self.proc is None:
            with contextlib.suppress(DsgError):  # reported again, in order, by _conn
                self._start()

    def _start(self) -> None:
        argv, msg = self.ssh_argv(), hello(self.name, self.repo_path)
        try:
            session = take(argv, msg) or start(argv, msg)  # started early by the CLI?
        except FileNotFoundError as e:
            raise TransportError(
                "the ssh client is not installed", hint="apt install openssh-client"
            ) from e
        self.proc, self._stderr = session.proc, session.stderr
        # Buffered both ways: small uploads leave in one write per ~PIPE_BUFFER, and
        # answers and downloads are read many frames per read (ssh's pipes are raw).
        self.rx = io.BufferedReader(session.proc.stdout, PIPE_BUFFER)  # type: ignore[arg-type]
        self.tx = io.BufferedWriter(session.proc.stdin, PIPE_BUFFER)  # type: ignore[arg-type]
        self._hello_pending = True

    def _finish_hello(self) -> None:
        assert self.proc is not None
        self._hello_pending = False
        try:
            resp = recv_json(self.rx)
        except (EOFError, BrokenPipeError, OSError) as e:
            raise self._connect_error() from e
        if not resp.get("ok"):
            self.close()
            raise _error(resp)
        self.role = resp.get("role")
        shape = resp.get("shape")
        self._shape = (
            ScanRules.from_json(shape.encode(), origin=f"the project shape from {self.host}")
            if isinstance(shape, str)
            else None
        )

    def _connect_error(self) -> DsgError:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        self.proc = None
        if (
            "Host key verification failed" in text
            or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text
        ):
            fp = self._fingerprints()
            changed = "CHANGED" in text
            what = "has CHANGED" if changed else "is not known"
            return TransportError(
                f"the SSH host key of {self.host} {what}; refusing to connect.\n"
                f"The host offers: {fp or '(could not read its key)'}",
                hint=(
                    "if your admin confirms this fingerprint, accept it with: "
                    f"ssh-keyscan {'-p ' + str(self.port) + ' ' if self.port else ''}"
                    f"{self.host} >> ~/.ssh/known_hosts"
                    if not changed
                    else "this may be an attack; ask your admin before removing the old key"
                ),
            )
        if "Permission denied" in text:
            return PermissionDenied(
                f"SSH login to {self.host} was refused: {text.splitlines()[-1]}",
                hint="check your SSH key and user name (repository.host user@host)",
            )
        return TransportError(
            f"cannot reach the dsg agent on {self.host}: {text or 'connection closed'}",
            hint="check the host name and network, and that dsg is installed on the host",
        )

    def _fingerprints(self) -> str:
        """The key the host offers, as ssh itself resolved the host (aliases included)."""
        argv = self.ssh_argv()[:-1]  # same options and host, no remote command
        argv.insert(1, "-v")
        try:
            out = subprocess.run(
                [*argv, "true"], capture_output=True, timeout=20, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        m = re.search(r"Server host key: (\S+) (\S+)", out.stderr.decode(errors="replace"))
        return f"{m.group(1)} {m.group(2)}" if m else ""

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        self._conn()
        self._drain()
        try:
            send_json(self.tx, msg)
            resp = recv_json(self.rx)
        except (EOFError, BrokenPipeError, OSError) as e:
            raise self._lost() from e
        if not resp.get("ok"):
            raise _error(resp)
        return resp

    def _lost(self) -> DsgError:
        self.proc = None
        self.pending = 0  # no answer will come
        self._drop_tx()
        return TransportError(
            f"the connection to {self.host} was lost",
            hint="run the command again; an interrupted sync is finished by the next one",
        )

    def _drop_tx(self) -> None:
        """Close ssh's stdin without flushing: what is still buffered has nowhere to go, and
        a flush into a peer that reads no more could block."""
        with contextlib.suppress(Exception):
            self.tx.raw.close()
        with contextlib.suppress(Exception):
            self.tx.close()

    def close(self) -> None:
        self._end(polite=True)

    def _abandon(self) -> None:
        """Drop a session whose stream cannot be read in step any more."""
        self._end(polite=False)

    def _end(self, *, polite: bool) -> None:
        """End the session: `polite` says bye and lets the agent finish; otherwise ssh is
        killed (the agent then sees the end of its input, aborts and unlocks)."""
        proc, self.proc = self.proc, None
        self.pending = 0
        self._hello_pending = False
        if proc is None:
            return
        stderr, self._stderr = getattr(self, "_stderr", None), None
        if stderr is not None:
            stderr.close()
        if polite:
            with contextlib.suppress(Exception):
                send_json(self.tx, {"op": "bye"})
            with contextlib.suppress(Exception):
                self.tx.close()  # the agent ends on EOF
        else:
            self._drop_tx()
            proc.kill()
        _reap(proc, timeout=10)

    # --- reads
    def exists(self) -> bool:
        return bool(self.call({"op": "exists"})["exists"])

    def create(self, shape: ScanRules | None = None) -> None:
        msg: dict[str, Any] = {"op": "create"}
        if shape is not None:
            msg["shape"] = shape.to_json().decode()
        self.call(msg)
        self._shape = shape

    def shape(self) -> ScanRules | None:
        self._conn()  # the agent sends it with its answer to hello
        return self._shape

    def destroy_new(self) -> None:
        with contextlib.suppress(DsgError):
            self.call({"op": "destroy_new"})

    def head(self) -> str | None:
        return self.call({"op": "head"})["head"]

    def record(self, snapshot: str) -> SnapshotRecord:
        return SnapshotRecord.from_dict(self.call({"op": "record", "snapshot": snapshot})["record"])

    def history(self) -> Iterator[SnapshotRecord]:
        for d in self.call({"op": "history"})["records"]:
            yield SnapshotRecord.from_dict(d)

    def manifest_digest(self, snapshot: str) -> str:
        return self.call({"op": "manifest_digest", "snapshot": snapshot})["digest"]

    def manifest(self, snapshot: str) -> Manifest:
        self.call({"op": "manifest", "snapshot": snapshot})
        reader = StreamReader(self.rx)
        try:
            data = reader.read()
        except (EOFError, OSError) as e:
            raise self._lost() from e
        # Full validation here too: a hostile or broken server cannot inject bad entries.
        m = Manifest.from_bytes(data, origin=f"manifest of {snapshot} from {self.host}")
        if m.snapshot != snapshot:
            raise ManifestError(f"{self.host} sent the manifest of {m.snapshot} for {snapshot}")
        return m

    def open_file(self, snapshot: str, path: str) -> BinaryIO:
        self.call({"op": "open_file", "snapshot": snapshot, "path": path})
        return StreamReader(self.rx)  # type: ignore[return-value]

    def read_files(self, snapshot: str, paths: list[str]) -> Iterator[tuple[str, BinaryIO]]:
        """One request per batch of files; the agent streams each batch back to back. The
        next batch is asked for while this one is read, so the agent never idles between
        them. A reader that stops early leaves the stream mid-answer: the session is then
        dropped (the agent aborts and unlocks on its side), never read out of step."""
        batches = [paths[i : i + READ_BATCH] for i in range(0, len(paths), READ_BATCH)]
        if not batches:
            return
        self._conn()
        self._drain()
        proc, asked, clean = self.proc, 0, False
        try:
            for k, batch in enumerate(batches):
                while asked < min(k + 2, len(batches)):
                    req = {"op": "read_files", "snapshot": snapshot, "paths": batches[asked]}
                    send_json(self.tx, req)
                    asked += 1
                for path in batch:
                    resp = recv_json(self.rx)
                    if not resp.get("ok"):
                        if asked > k + 1:
                            self._skip_batch(batches[k + 1])
                        clean = True  # the agent ends a batch at its error: in step
                        raise _error(resp)
                    if resp.get("path") != path:
                        raise ProtocolError(
                            f"expected {path!r}, the agent sent {resp.get('path')!r}"
                        )
                    reader = StreamReader(self.rx)
                    yield path, reader  # type: ignore[misc]
                    reader.drain()
            clean = True
        except (EOFError, BrokenPipeError, OSError) as e:
            raise self._lost() from e
        finally:
            if not clean and self.proc is proc:
                self._abandon()

    def _skip_batch(self, batch: list[str]) -> None:
        """Read past a batch already asked for, up to its end or its error."""
        for _ in batch:
            if not recv_json(self.rx).get("ok"):
                return
            StreamReader(self.rx).drain()

    def _drain(self, keep: int = 0) -> None:
        """Collect the answers to pipelined requests (puts) until at most `keep` are still
        in flight; raise the first error, after collecting every answer then outstanding."""
        first: DsgError | None = None
        if self.pending > keep and self.proc is not None:
            try:
                self.tx.flush()  # the requests go out before their answers are awaited
            except (BrokenPipeError, OSError) as e:
                raise self._lost() from e
        while self.pending > keep and self.proc is not None:
            self.pending -= 1
            try:
                resp = recv_json(self.rx)
            except (EOFError, BrokenPipeError, OSError) as e:
                raise self._lost() from e
            if not resp.get("ok") and first is None:
                first = _error(resp)
                keep = 0  # leave no answer unread behind an error (abort must follow)
        if first is not None:
            raise first

    def snapshot_path(self, snapshot: str) -> Path:
        raise TransportError(
            "browsing a snapshot as a directory needs the repository host",
            hint="use 'dsg snapfetch PATH --snapshot ...' to get files from a past snapshot",
        )

    def tags(self) -> dict[str, dict[str, str]]:
        return self.call({"op": "tags"})["tags"]

    def add_tag(self, name: str, snapshot: str, message: str, author: str) -> dict[str, str]:
        req = {"op": "add_tag", "name": name, "snapshot": snapshot, "message": message}
        return self.call({**req, "author": author})["tag"]

    # --- writes
    @contextlib.contextmanager
    def lock(self, owner: LockOwner, timeout: float) -> Iterator[None]:
        resp = self.call({"op": "lock", "owner": owner.to_dict(), "timeout": timeout})
        self.recovered = resp.get("recovered") or []
        self.stale_holder = resp.get("stale_holder")
        self.locked = True
        try:
            yield
        finally:
            self.locked = False
            if self.proc is not None:
                with contextlib.suppress(DsgError):
                    self.call({"op": "unlock"})

    def begin(self, parent: str | None, tx: str) -> Transaction:
        self.call({"op": "begin", "parent": parent, "tx": tx})
        return SshTransaction(self, tx)


class SshTransaction(Transaction):
    def __init__(self, repo: SshRepository, tx: str) -> None:
        self.repo = repo
        self.tx = tx

    def put_file(self, path: str, src: BinaryIO, size: int, mtime_ns: int, digest: bytes) -> None:
        # Pipelined and buffered: small uploads leave together in large writes, their answers
        # are collected later (all of them before any other request), and at most
        # PUT_WINDOW are in flight; then answers are read down to half of that, so the agent
        # still has the next files in its pipe while the client reads.
        repo = self.repo
        repo._conn()
        try:
            send_json(repo.tx, {
                "op": "put_file", "path": path, "size": size, "mtime_ns": mtime_ns,
                "hash": digest.hex(),
            }, flush=False)  # fmt: skip
            send_stream(repo.tx, src, flush=False)
        except (EOFError, BrokenPipeError, OSError) as e:
            raise repo._lost() from e
        repo.pending += 1
        if repo.pending >= PUT_WINDOW:
            repo._drain(keep=PUT_WINDOW // 2)

    def put_link(self, path: str, target: str) -> None:
        self.repo.call({"op": "put_link", "path": path, "target": target})

    def restore(self, path: str, snapshot: str) -> None:
        self.repo.call({"op": "restore", "path": path, "snapshot": snapshot})

    def delete(self, path: str) -> None:
        self.repo.call({"op": "delete", "path": path})

    def commit(
        self,
        message: str,
        author: str,
        author_name: str,
        *,
        login: str = "",
        original_at: str = "",
    ) -> SnapshotRecord:
        if original_at:  # the agent dates every commit itself; a client may not backdate
            raise RepositoryError(
                "an original date can be recorded only on the repository host",
                hint="run 'dsg import' on the repository host",
            )
        resp = self.repo.call(
            {"op": "commit", "message": message, "author": author, "author_name": author_name}
        )
        return SnapshotRecord.from_dict(resp["record"])

    def abort(self) -> None:
        if self.repo.proc is not None:
            with contextlib.suppress(DsgError):
                self.repo.call({"op": "abort"})


def _error(resp: dict[str, Any]) -> DsgError:
    err = resp.get("error") or {}
    cls = ERRORS.get(str(err.get("kind")), RepositoryError)
    e = cls(str(err.get("message") or "the agent reported an error"), hint=err.get("hint"))
    return e


def list_remote_repos(host: str, remote_command: str | None = None) -> list[dict[str, Any]]:
    """The repositories the caller may see on `host` (a session without a project)."""
    session = SshRepository(host, "", "", remote_command=remote_command)
    try:
        return session.call({"op": "list_repos"})["repos"]
    finally:
        session.close()
