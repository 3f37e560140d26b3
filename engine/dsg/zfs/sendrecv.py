"""zfs send and receive, and replication between pools through pipelines of processes."""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO

from dsg.zfs.command import ZfsCommand, _decode, _env
from dsg.zfs.names import ZfsError, _check_base, _classify, check_dataset_name, check_snapshot_name

# (argv, stdin, stdout) of one process in a pipeline; stdin None: the previous stdout.
Stage = tuple[list[str], IO[bytes] | int | None, IO[bytes] | int]


def _recv_args(target: str, force: bool, mount: bool, resumable: bool = False) -> list[str]:
    # `-u` is missing from zfs-fuse's usage text but works (checked in the lab). `-s`
    # (keep a partial receive and its receive_resume_token) is OpenZFS's only.
    flags = [*(["-F"] if force else []), *([] if mount else ["-u"]), *(["-s"] if resumable else [])]
    return ["receive", *flags, check_dataset_name(target)]


RESUME_TOKEN_RE = re.compile(r"[0-9]+-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+")
MAX_RESUME_TOKEN = 8192


def check_resume_token(token: str) -> str:
    """A receive_resume_token as `zfs get` prints it (version-checksum-length-hex)."""
    if len(token) > MAX_RESUME_TOKEN or not RESUME_TOKEN_RE.fullmatch(token):
        raise ValueError(f"not a zfs receive resume token: {token[:80]!r}")
    return token


def _wait_all(procs: Iterable[subprocess.Popen[bytes]], timeout: float | None) -> list[int]:
    deadline = None if timeout is None else time.monotonic() + timeout
    codes: list[int] = []
    for proc in procs:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            codes.append(proc.wait(timeout=left))
        except subprocess.TimeoutExpired as exc:
            raise ZfsError(list(proc.args), -1, f"timed out after {timeout:g}s") from exc
    return codes


def _read_err(fh: IO[bytes]) -> str:
    fh.seek(0)
    return _decode(fh.read()).strip()


def _spawn(
    stage: Stage, err: IO[bytes], previous: subprocess.Popen[bytes] | None
) -> subprocess.Popen[bytes]:
    cmd, stdin, stdout = stage
    src = previous.stdout if stdin is None and previous is not None else stdin
    try:
        proc = subprocess.Popen(cmd, stdin=src, stdout=stdout, stderr=err, env=_env())
    except FileNotFoundError as exc:
        raise ZfsError(cmd, 127, f"{cmd[0]}: command not found") from exc
    if stdin is None and previous is not None and previous.stdout is not None:
        previous.stdout.close()  # only the child holds the pipe: a dead reader means EPIPE
    return proc


def _kill_all(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _raise_for_failures(
    cmds: Sequence[list[str]], codes: Sequence[int], errs: Sequence[IO[bytes]]
) -> None:
    """Raise for the last failed stage (a receiver's refusal is the cause, the sender's
    broken pipe the symptom), with the other failures' stderr appended."""
    failed = [i for i, rc in enumerate(codes) if rc != 0]
    if not failed:
        return
    last = failed[-1]
    others = [f"{shlex.join(cmds[i])}: {_read_err(errs[i])}" for i in failed[:-1]]
    stderr = _read_err(errs[last]) + (f"\n(also: {'; '.join(others)})" if others else "")
    raise _classify(cmds[last], codes[last], stderr)


class SendRecvOps(ZfsCommand):
    """zfs send and receive, and replication between pools through pipelines of processes.
    Mixed into :class:`dsg.zfs.ops.Zfs`."""

    def send(
        self,
        snapshot: str,
        out: IO[bytes] | int,
        *,
        base: str | None = None,
        intermediates: bool = False,
        properties: bool = False,
        raw: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Write a send stream of `snapshot` (incremental from `base`) to `out`."""
        args = self._send_args(snapshot, base, intermediates, properties, raw)
        self._stream([(self.argv("zfs", args), subprocess.DEVNULL, out)], timeout)

    def receive(
        self,
        target: str,
        inp: IO[bytes] | int,
        *,
        force: bool = False,
        mount: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Receive a send stream from `inp` into `target`.

        `force` (``-F``) rolls the target back to its last snapshot first: needed for an
        incremental when the target changed since (even an atime update from reading it).
        ``mount=False`` (``-u``) leaves a newly received filesystem unmounted.
        """
        args = _recv_args(target, force, mount)
        with self._receiving_into(target):
            self._stream([(self.argv("zfs", args), inp, subprocess.DEVNULL)], timeout)

    def send_argv(
        self,
        snapshot: str,
        *,
        base: str | None = None,
        properties: bool = True,
        raw: bool = False,
    ) -> list[str]:
        """The argv of ``zfs send`` for `snapshot` (as :meth:`send` runs it), for a pipeline
        this process builds itself (e.g. another host's receive)."""
        return self.argv("zfs", self._send_args(snapshot, base, False, properties, raw))

    def resume_send_argv(self, token: str) -> list[str]:
        """``zfs send -t TOKEN``: the rest of an interrupted stream (OpenZFS); the token
        carries the snapshot, its base and the stream's flags."""
        return self.argv("zfs", ["send", "-t", check_resume_token(token)])

    def receive_resume_token(self, target: str) -> str | None:
        """The target's receive_resume_token (an interrupted ``receive -s``), or None when
        there is none or this ZFS has no such property (zfs-fuse)."""
        if self.platform.is_zfs_fuse:
            return None
        proc = self.run(
            "zfs",
            ["get", "-H", "-o", "value", "receive_resume_token", check_dataset_name(target)],
            check=False,
        )
        value = proc.stdout.strip()
        return value if proc.returncode == 0 and value not in ("", "-") else None

    def receive_from(
        self,
        sender: Sequence[str],
        target: str,
        *,
        force: bool = False,
        mount: bool = True,
        resumable: bool = False,
        timeout: float | None = None,
        relay: Callable[[int], None] | None = None,
    ) -> None:
        """``sender | zfs receive ...``: the stream another command writes (a local
        ``zfs send`` from :meth:`send_argv`, or ssh to a host that sends) received into
        `target`, through this process when `relay` is given. `resumable` (``-s``) keeps
        what an interrupted stream delivered, resumable with ``zfs send -t``."""
        recv = self.argv("zfs", _recv_args(target, force, mount, resumable))
        stages: list[Stage] = [
            (list(sender), subprocess.DEVNULL, subprocess.PIPE),
            (recv, None, subprocess.DEVNULL),
        ]
        with self._receiving_into(target):
            if relay is None:
                self._stream(stages, timeout)
            else:
                self._stream_relayed(stages, relay, timeout)

    def replicate(
        self,
        snapshot: str,
        target: str,
        *,
        base: str | None = None,
        intermediates: bool = False,
        properties: bool = True,
        raw: bool = False,
        force: bool = False,
        mount: bool = True,
        receiver: ZfsCommand | None = None,
        timeout: float | None = None,
        relay: Callable[[int], None] | None = None,
    ) -> None:
        """``zfs send ... | zfs receive ...`` as two processes joined by a pipe (no shell).

        `base` makes it incremental (``-i``, or ``-I`` with `intermediates`); `properties`
        sends dataset and snapshot properties (``-p``), so ``dsg:`` metadata arrives too.
        `raw` (``-w``, OpenZFS only) sends an encrypted dataset as it is on disk: the copy
        stays encrypted with the same key, and no key is needed to send or receive it.
        `force` and `mount` are those of :meth:`receive`. `receiver` runs the receiving side
        (another prefix, e.g. another host). With `relay`, the stream passes through this
        process, which calls `relay(bytes)` per chunk (see :meth:`_stream_relayed`).
        """
        send = self.argv("zfs", self._send_args(snapshot, base, intermediates, properties, raw))
        recv_args = _recv_args(target, force, mount)
        recv_zfs = receiver or self
        recv = recv_zfs.argv("zfs", recv_args)
        stages: list[Stage] = [
            (send, subprocess.DEVNULL, subprocess.PIPE),
            (recv, None, subprocess.DEVNULL),
        ]
        with recv_zfs._receiving_into(target):
            if relay is None:
                self._stream(stages, timeout)
            else:
                self._stream_relayed(stages, relay, timeout)

    def _stream_relayed(
        self, stages: Sequence[Stage], relay: Callable[[int], None], timeout: float | None
    ) -> None:
        """send | (this process) | recv: the stream passes through here in 1 MiB chunks and
        `relay(n)` is called per chunk (progress, byte counts, fault points). When this
        process dies mid-stream, the receiver sees a truncated stream and discards it."""
        (send_cmd, _, _), (recv_cmd, _, _) = stages
        deadline = None if timeout is None else time.monotonic() + timeout
        with contextlib.ExitStack() as stack:
            errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in stages]
            procs: list[subprocess.Popen[bytes]] = []
            stack.callback(_kill_all, procs)
            procs.append(_spawn((send_cmd, subprocess.DEVNULL, subprocess.PIPE), errs[0], None))
            procs.append(_spawn((recv_cmd, subprocess.PIPE, subprocess.DEVNULL), errs[1], None))
            src, dst = procs[0].stdout, procs[1].stdin
            assert src is not None and dst is not None
            try:
                while chunk := src.read1(1 << 20):
                    dst.write(chunk)
                    dst.flush()  # what relay() counts has reached the receiver
                    relay(len(chunk))
                    if deadline is not None and time.monotonic() > deadline:
                        raise ZfsError(send_cmd, -1, f"timed out after {timeout:g}s")
            except BrokenPipeError:
                pass  # the receiver died: its exit code and stderr say why
            finally:
                src.close()
                with contextlib.suppress(BrokenPipeError):
                    dst.close()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            codes = _wait_all(procs, left)
            _raise_for_failures([send_cmd, recv_cmd], codes, errs)

    @contextlib.contextmanager
    def _receiving_into(self, target: str) -> Iterator[None]:
        """zfs-fuse: receiving into a mounted filesystem does not invalidate the kernel's FUSE
        caches, so with attr/entry timeouts (Debian's /etc/zfs/zfsrc sets 3600 s) files the
        receive removed still open, with another file's size and content. Unmount the target
        for the receive and mount it again after: that drops the caches. (The lab daemon runs
        with timeouts 0 and is not affected; a system instance would be.)"""
        if not self.platform.is_zfs_fuse or not self.dataset_exists(target):
            yield
            return
        mounted = self._unmount_tree(target)
        try:
            yield
        finally:
            for ds in mounted:  # parents first
                if self.dataset_exists(ds) and self.get_property(ds, "mounted") != "yes":
                    self.zfs("mount", ds)

    def _send_args(
        self,
        snapshot: str,
        base: str | None,
        intermediates: bool,
        properties: bool,
        raw: bool = False,
    ) -> list[str]:
        # -w (raw) and -L -c -e are OpenZFS's: zfs-fuse (pool version 23) has none of them.
        # A raw stream is sent as stored already; otherwise -L keeps large records whole, -c
        # sends compressed blocks as they are on disk, -e embeds small blocks' data.
        if raw:
            flags = ["-w"]
        elif not self.platform.is_zfs_fuse:
            flags = ["-L", "-c", "-e"]
        else:
            flags = []
        args = ["send", *flags, *(["-p"] if properties else [])]
        if base is not None:
            args += ["-I" if intermediates else "-i", _check_base(base)]
        return [*args, check_snapshot_name(snapshot)]

    def _stream(self, stages: Sequence[Stage], timeout: float | None) -> None:
        """Run a pipeline of zfs commands; a stage's stdin None means the previous stdout.

        Stderr goes to temporary files (a full stderr pipe could deadlock a long stream).
        """
        with contextlib.ExitStack() as stack:
            errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in stages]
            procs: list[subprocess.Popen[bytes]] = []
            stack.callback(_kill_all, procs)  # runs first: no process outlives the call
            for stage, err in zip(stages, errs, strict=True):
                procs.append(_spawn(stage, err, procs[-1] if procs else None))
            codes = _wait_all(procs, timeout)
            _raise_for_failures([s[0] for s in stages], codes, errs)
