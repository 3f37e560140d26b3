"""Starting an SSH session with `dsg serve`: the ssh command line, the hello, the process.

Kept free of heavy imports (no pydantic, no engine), so `dsg sync` and `dsg status` can
start connecting first thing (`start_early`), before loading the CLI; the handshake and
the agent's start (~0.35 s on the lab host) then overlap that load and the scan. The
session is used only if the validated configuration asks for exactly the same ssh command
and hello (`take`); otherwise it is closed unused and a new one is started.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shlex
import socket
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dsg import __version__
from dsg.core.errors import ConfigError, TransportError

PROJECT_CONFIG = ".dsgconfig.yml"
USER_CONFIG = "dsg.yml"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
PROTOCOL_VERSION = 1  # protocol.py re-exports it; the agent checks it in the hello
FRAME_HEAD = struct.Struct(">IB")  # every frame's header (length, type): see protocol.py
# Every ssh dsg runs: no tty, never a prompt, host keys verified, a dead peer noticed within
# a minute, an unreachable host given up after 30 s. Options in $DSG_SSH_COMMAND come first
# and so win (ssh keeps the first value it is given).
SSH_OPTIONS = (
    "-T",
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=yes",
    "-o", "ServerAliveInterval=15",
    "-o", "ServerAliveCountMax=4",
    "-o", "ConnectTimeout=30",
)  # fmt: skip
# Pipes to and from ssh widened from 64 KiB to Linux's unprivileged maximum: fewer, larger
# writes and reads per download (figures: docs/performance.md). Kept as they are where the
# kernel refuses.
PIPE_SIZE = 1 << 20
_HOST = re.compile(
    r"^(?:(?P<user>[^@:/\s]+)@)?(?P<host>[A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?$"
)


def find_project_root(start: Path | None = None) -> Path:
    """Walk up from `start` (default: cwd) to the directory holding `.dsgconfig.yml`."""
    here = (start or Path.cwd()).absolute()
    oldest = None
    for d in (here, *here.parents):
        if (d / PROJECT_CONFIG).is_file():
            return d
        if oldest is None and (d / ".dsg" / "config.yml").is_file():
            oldest = d
    if oldest is not None:  # the first dsg's project file: converted, not read in place
        raise ConfigError(
            f"{oldest} has the oldest form of project file, .dsg/config.yml, and no "
            f"{PROJECT_CONFIG}",
            hint="run 'dsg config upgrade' there (add --write to write the new file)",
        )
    raise ConfigError(
        f"no {PROJECT_CONFIG} found in {here} or any parent directory",
        hint="run dsg inside a project, or create one with 'dsg init'",
    )


def user_config_dirs() -> list[Path]:
    """Directories searched for the user's dsg.yml, lowest precedence first."""
    dirs = [Path("/etc/dsg"), Path.home() / ".config" / "dsg"]
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        dirs.append(Path(xdg) / "dsg")
    dsg_home = os.environ.get("DSG_CONFIG_HOME")
    if dsg_home:
        dirs.append(Path(dsg_home))
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def user_remote_command(host: str) -> str | None:
    """The agent command to run on `host`, chosen by this user only: $DSG_REMOTE_COMMAND,
    else `remote_command` in their dsg.yml (one command, or a mapping of repository host ->
    command). Never from .dsgconfig.yml: a project file is written by every member, and a
    command there would run as each colleague on the server. None: the default."""
    env = os.environ.get("DSG_REMOTE_COMMAND")
    if env:
        return env
    import yaml

    found: str | None = None
    for d in user_config_dirs():
        f = d / USER_CONFIG
        try:
            data = yaml.safe_load(f.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read {f}: {e}") from e
        value = data.get("remote_command") if isinstance(data, dict) else None
        if value is None:
            continue
        if isinstance(value, dict):
            bare = _HOST.match(host)
            value = value.get(host, value.get(bare["host"].strip("[]")) if bare else None)
            if value is None:
                continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f"{f}: remote_command must be a command, or a mapping of host -> command"
            )
        found = value
    return found


def is_local_host(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    try:
        return host in {socket.gethostname(), socket.getfqdn()}
    except OSError:
        return False


def parse_host(spec: str) -> tuple[str | None, str, int | None]:
    """`host`, `user@host`, `user@host:port` or an ssh_config alias -> (user, host, port)."""
    m = _HOST.match(spec)
    if not m:
        raise TransportError(f"repository host {spec!r} is not host, user@host or user@host:port")
    port = int(m["port"]) if m["port"] else None
    return m["user"], m["host"].strip("[]"), port


def ssh_argv(host: str, user: str | None, port: int | None, remote_command: str) -> list[str]:
    argv = [*shlex.split(os.environ.get("DSG_SSH_COMMAND", "ssh")), *SSH_OPTIONS]
    if port:
        argv += ["-p", str(port)]
    if user:
        argv += ["-l", user]
    # The remote command is configuration (trusted), split and re-quoted word by word;
    # no path or other input ever goes into it.
    return [*argv, "--", host, shlex.join(shlex.split(remote_command))]


def hello(name: str, repo_path: str) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "op": "hello",
        "version": PROTOCOL_VERSION,
        "client": f"dsg {__version__}",
    }
    if name:  # no name: a session that only lists repositories
        msg.update(project=name, repo_path=repo_path)
    return msg


def widen_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask the kernel for a `size`-byte pipe buffer on `fd`; keep what it has if it says no."""
    with contextlib.suppress(ImportError, AttributeError, OSError):  # not Linux; over a limit
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


@dataclass
class Session:
    argv: list[str]
    hello: dict[str, Any]
    proc: subprocess.Popen[bytes]
    stderr: IO[bytes]  # a file, not a pipe: a chatty remote side can never block on it


def start(argv: list[str], msg: dict[str, Any]) -> Session:
    """Run ssh and send the hello (its answer is read by the caller). Raises
    FileNotFoundError when there is no ssh program."""
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the session's owner closes it
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, bufsize=0
        )
    except BaseException:
        stderr.close()
        raise
    for pipe in (proc.stdin, proc.stdout):
        widen_pipe(pipe.fileno())  # type: ignore[union-attr]
    payload = json.dumps(msg, separators=(",", ":")).encode()
    # A failed write (the far side already gone) shows up as EOF when reading the answer.
    with contextlib.suppress(OSError):
        proc.stdin.write(FRAME_HEAD.pack(len(payload), ord("J")) + payload)  # type: ignore[union-attr]
    return Session(argv, msg, proc, stderr)


_early: list[Session] = []


def take(argv: list[str], msg: dict[str, Any]) -> Session | None:
    """The session `start_early` opened for exactly this command line and hello, if any."""
    for i, s in enumerate(_early):
        if s.argv == argv and s.hello == msg:
            del _early[i]
            return s
    return None


def _close_unused() -> None:
    while _early:
        s = _early.pop()
        with contextlib.suppress(OSError):
            s.proc.stdin.close()  # type: ignore[union-attr]  # the agent ends on EOF
        s.stderr.close()


atexit.register(_close_unused)


def start_early(start_dir: Path | None = None) -> tuple[Path, Any]:
    """Start the project's SSH session now, from the plain `repository:` form of its
    .dsgconfig.yml. Anything unusual (another form, a local host) starts nothing; an
    unreadable file raises, for the caller to ignore: the command itself then reads,
    validates and reports the configuration. Returns the project's root and the file's
    unvalidated content (for the prescan)."""
    import yaml

    root = find_project_root(start_dir)
    data = yaml.safe_load((root / PROJECT_CONFIG).read_text(encoding="utf-8"))
    argv_hello = _early_session(data)
    if argv_hello is not None:
        _early.append(start(*argv_hello))
    return root, data


def _early_session(data: Any) -> tuple[list[str], dict[str, Any]] | None:
    repo = data.get("repository") if isinstance(data, dict) else None
    if not isinstance(repo, dict) or not isinstance(data.get("name"), str):
        return None
    host, mountpoint = repo.get("host"), repo.get("mountpoint")
    user, port = repo.get("user"), repo.get("port")
    if not (isinstance(host, str) and isinstance(mountpoint, str)):
        return None
    try:
        command = user_remote_command(host) or "dsg serve"  # never the project file's
    except ConfigError:
        return None  # the command itself reports it
    if not (user is None or isinstance(user, str)) or not (port is None or isinstance(port, int)):
        return None
    if is_local_host(host):
        return None
    spec_user, bare_host, spec_port = parse_host(host)
    argv = ssh_argv(bare_host, user or spec_user, port or spec_port, command)
    return argv, hello(data["name"], f"{mountpoint.rstrip('/')}/{data['name']}")
