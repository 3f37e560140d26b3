"""The early SSH start of `dsg sync` / `dsg status` (sshstart.py): the session it opens is
the one the repository then uses, and nothing else is ever started or adopted.

`ssh` is replaced (DSG_SSH_COMMAND, as users may) by a shell that swallows its input; the
real OpenSSH path is tested over the lab sshd in tests/lab_ssh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsg.backends.registry import open_repository
from dsg.backends.ssh import SshRepository
from dsg.core.manifest import Manifest
from dsg.fs.durable import write_manifest
from dsg.wire import sshstart
from dsg.workcopy.config import load_project_config

CONFIG = """\
name: proj
repository:
  type: posix
  host: researcher@far.example:2200
  mountpoint: /srv/dsg/repos/
"""
# The agent command is the user's own (dsg.yml), never the project file's.
USER_CONFIG = (
    "user_name: Ann\nuser_id: ann@hrdag.org\nremote_command: dsg serve --log-dir /var/log/dsg\n"
)


@pytest.fixture
def fake_ssh(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("DSG_SSH_COMMAND", "sh -c 'exec cat >/dev/null' fake-ssh")
    monkeypatch.delenv("DSG_REMOTE_COMMAND", raising=False)
    cfg = tmp_path_factory.mktemp("cfg")
    (cfg / "dsg.yml").write_text(USER_CONFIG)
    monkeypatch.setenv("DSG_CONFIG_HOME", str(cfg))
    yield cfg
    sshstart._close_unused()


def project(tmp_path: Path, text: str = CONFIG) -> Path:
    (tmp_path / ".dsgconfig.yml").write_text(text)
    (tmp_path / "task1").mkdir()
    return tmp_path / "task1"  # started from a subdirectory, as researchers do


def test_the_early_session_is_the_one_the_repository_uses(tmp_path, fake_ssh) -> None:
    sshstart.start_early(project(tmp_path))
    assert len(sshstart._early) == 1
    early = sshstart._early[0]
    assert early.argv[-2:] == ["far.example", "dsg serve --log-dir /var/log/dsg"]
    assert early.argv[early.argv.index("-p") : early.argv.index("-p") + 2] == ["-p", "2200"]
    assert early.hello["repo_path"] == "/srv/dsg/repos/proj"
    repo = open_repository(load_project_config(tmp_path / ".dsgconfig.yml"))
    assert isinstance(repo, SshRepository)
    repo.warm()
    try:
        assert repo.proc is early.proc
        assert sshstart._early == []
    finally:
        repo.close()
    assert early.proc.returncode is not None


def test_a_session_for_another_command_line_is_not_adopted_and_is_closed(
    tmp_path, fake_ssh
) -> None:
    sshstart.start_early(project(tmp_path))
    early = sshstart._early[0]
    other = SshRepository(
        "researcher@far.example:2200", "proj", "/srv/dsg/repos/proj", remote_command="dsg serve"
    )
    other.warm()
    try:
        assert other.proc is not None and other.proc is not early.proc
        assert sshstart._early == [early]
    finally:
        other.close()
    sshstart._close_unused()  # what runs at exit: the unused agent sees EOF and ends
    assert early.proc.wait(timeout=10) == 0
    assert sshstart._early == []


@pytest.mark.parametrize(
    "text",
    [
        CONFIG.replace("researcher@far.example:2200", "localhost"),  # a local repository
        "transport: ssh\nssh:\n  host: far.example\n  path: /srv\n  type: posix\n  name: p\n",
        "name: proj\nrepository: [not, a, mapping]\n",
        "name: proj\nrepository:\n  host: far.example\n",  # no mountpoint
    ],
    ids=["local-host", "legacy-form", "not-a-mapping", "no-mountpoint"],
)
def test_nothing_starts_early_for_configs_it_does_not_plainly_understand(
    tmp_path, fake_ssh, text
) -> None:
    sshstart.start_early(project(tmp_path, text))
    assert sshstart._early == []


def test_nothing_starts_early_for_a_user_command_it_does_not_understand(tmp_path, fake_ssh) -> None:
    (fake_ssh / "dsg.yml").write_text(
        USER_CONFIG.replace("dsg serve --log-dir /var/log/dsg", "[dsg, serve]")
    )
    sshstart.start_early(project(tmp_path))
    assert sshstart._early == []


def run_spied_status(tmp_path, spy: str, ssh_command: str) -> subprocess.CompletedProcess[str]:
    """`dsg status` in a fresh working copy, run through entry.main after `spy` (Python
    lines that wrap what the test watches), with DSG_SSH_COMMAND standing in for ssh."""
    work = project(tmp_path)
    (tmp_path / ".dsg").mkdir()
    write_manifest(tmp_path / ".dsg" / "base.manifest.gz", Manifest.empty())  # a fresh working copy
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "dsg.yml").write_text("user_name: Ann\nuser_id: ann@hrdag.org\n")
    code = spy + "sys.argv = ['dsg', 'status']\nfrom dsg.entry import main\nmain()\n"
    env = {**os.environ, "DSG_SSH_COMMAND": ssh_command, "DSG_CONFIG_HOME": str(cfg)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_cli_connects_once_and_before_loading_itself(tmp_path) -> None:
    """`dsg status` starts ssh before typer/rich/the engine are imported, and does not
    start a second session; a host that cannot be reached is still reported clearly."""
    spy = (
        "import sys\n"
        "from dsg.wire import sshstart\n"
        "real = sshstart.start\n"
        "def start(argv, msg):\n"
        "    print('START', 'late' if 'dsg.cli.daily' in sys.modules else 'early', file=sys.stderr)\n"
        "    return real(argv, msg)\n"
        "sshstart.start = start\n"
    )
    proc = run_spied_status(
        tmp_path, spy, "sh -c 'echo no route to far.example >&2; exit 255' fake-ssh"
    )
    assert proc.returncode != 0
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("START")] == ["START early"]
    assert "cannot reach the dsg agent on far.example" in proc.stderr
    assert "no route to far.example" in proc.stderr


def test_sync_and_status_load_only_their_own_commands(tmp_path) -> None:
    """`dsg status` (and `dsg sync`) leave out the admin, backup, history and import
    command modules (~30 ms of each run); every other command still has them all."""
    spy = (
        "import sys\n"
        "from dsg.sync import ops\n"
        "real = ops.status\n"
        "def status(*a, **k):\n"
        "    mods = ('dsg.cli.admin', 'dsg.cli.backup', 'dsg.cli.history', 'dsg.cli.imports')\n"
        "    print('LOADED', [m for m in mods if m in sys.modules], file=sys.stderr)\n"
        "    return real(*a, **k)\n"
        "ops.status = status\n"
    )
    proc = run_spied_status(tmp_path, spy, "sh -c 'exit 255' fake-ssh")
    assert "LOADED []" in proc.stderr, proc.stderr
    helped = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv = ['dsg', 'admin', '--help']\n"
         "from dsg.entry import main; main()"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert helped.returncode == 0 and "backup" in helped.stdout, helped.stdout + helped.stderr


def test_every_ssh_carries_the_safety_options_after_the_users_own() -> None:
    os.environ.pop("DSG_SSH_COMMAND", None)
    argv = sshstart.ssh_argv("h", "ann", 2200, "dsg serve")
    for opt in ("BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=30"):
        assert argv[argv.index(opt) - 1] == "-o"
    from dsg.admin.backup import receiver_zfs

    zfs = receiver_zfs("h")
    assert zfs is not None and "ConnectTimeout=30" in zfs.prefix


def test_a_host_that_never_answers_is_given_up_with_a_clear_error(monkeypatch) -> None:
    """A host that accepts the connection but never speaks SSH: the user's ConnectTimeout
    (DSG_SSH_COMMAND, ahead of dsg's 30 s) ends it, reported as unreachable."""
    import socket
    import time

    from dsg.core.errors import TransportError

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    port = silent.getsockname()[1]
    monkeypatch.setenv("DSG_SSH_COMMAND", "ssh -F /dev/null -o ConnectTimeout=2")
    repo = SshRepository(
        f"ann@127.0.0.1:{port}", "proj", "/srv/dsg/proj", remote_command="dsg serve"
    )
    began = time.monotonic()
    try:
        with pytest.raises(
            TransportError, match=r"cannot reach the dsg agent on 127\.0\.0\.1"
        ) as e:
            repo.head()
        assert "timed out" in (e.value.hint or "") + str(e.value)
        assert time.monotonic() - began < 15
    finally:
        repo.close()
        silent.close()


def _pipe_size(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's")
def test_the_pipes_to_and_from_ssh_are_widened(fake_ssh) -> None:
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < sshstart.PIPE_SIZE and os.geteuid():
        pytest.skip("this kernel's pipe-max-size is below PIPE_SIZE: no widening to check")
    argv = ["sh", "-c", "exec cat >/dev/null"]
    session = sshstart.start(argv, {"op": "hello"})
    try:
        for pipe in (session.proc.stdin, session.proc.stdout):
            assert _pipe_size(pipe.fileno()) == sshstart.PIPE_SIZE  # type: ignore[union-attr]
    finally:
        session.proc.stdin.close()  # type: ignore[union-attr]
        session.proc.wait(timeout=10)
        session.proc.stdout.close()  # type: ignore[union-attr]
        session.stderr.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_GETPIPE_SZ is Linux's")
def test_a_pipe_the_kernel_will_not_widen_keeps_its_size(tmp_path) -> None:
    r, w = os.pipe()
    try:
        before = _pipe_size(r)
        sshstart.widen_pipe(r, (1 << 31) + 1)  # over the kernel's limit, even for root
        assert _pipe_size(r) == before
        with open(tmp_path / "f", "wb") as f:
            sshstart.widen_pipe(f.fileno())  # not a pipe: refused, not raised
    finally:
        os.close(r)
        os.close(w)
