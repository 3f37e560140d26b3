"""The lab SSH host (scripts/lab/sshd) against a real OpenSSH server on loopback.

These tests prove what the engine's SSH tests rely on: key logins per user, refusal of
unknown keys, host-key checking that is really on, forced commands that confine a key and
pass the requested command in SSH_ORIGINAL_COMMAND, and a `down` that leaves nothing behind.
The `down` test runs last and brings the lab back up.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures.sshd_lab import (
    EXIT_DOWN,
    SshLab,
    alias_for,
    client_env,
    generate_key,
    run_script,
)

pytestmark = pytest.mark.ssh


# --- helpers -------------------------------------------------------------------------------


def listener_pid(lab: SshLab) -> int:
    return int((lab.lab_dir / "sshd" / "sshd.pid").read_text().split()[0])


def proc_state(pid: int) -> str | None:
    """The /proc state letter, or None when the process is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data.rpartition(")")[2].split()[0]


def running(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")  # PID 1 here reaps zombies lazily


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def lab_sshd_processes(lab: SshLab) -> list[int]:
    """Running sshd processes started with the lab's config (the listener)."""
    config = str(lab.lab_dir / "sshd" / "sshd_config")
    out = []
    for pid in all_pids():
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if exe.endswith("/sshd") and config in cmdline and running(pid):
            out.append(pid)
    return out


def port_accepts(lab: SshLab) -> bool:
    try:
        with socket.create_connection((lab.host, lab.port), timeout=2):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a TCP listener on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            addr, _, hexport = fields[1].partition(":")
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(addr)
    return found


# --- the lab as set up by `up` ---------------------------------------------------------------


def test_up_twice_is_idempotent(sshd_lab: SshLab) -> None:
    lab = sshd_lab
    pid = listener_pid(lab)
    host_key = (lab.lab_dir / "sshd" / "ssh_host_ed25519_key.pub").read_text()
    user_keys = {u: lab.keys[u].read_bytes() for u in lab.users}
    known = lab.known_hosts.read_text()
    for _ in range(2):
        proc = run_script("up")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-2:] == [
            f"DSG_LAB_SSH_CONFIG={lab.ssh_config}",
            f"DSG_LAB_KNOWN_HOSTS={lab.known_hosts}",
        ]
    assert listener_pid(lab) == pid, "an unchanged lab must not be restarted"
    assert running(pid)
    assert (lab.lab_dir / "sshd" / "ssh_host_ed25519_key.pub").read_text() == host_key
    assert {u: lab.keys[u].read_bytes() for u in lab.users} == user_keys
    assert lab.known_hosts.read_text() == known
    assert run_script("status").returncode == 0


def test_files_and_permissions(sshd_lab: SshLab) -> None:
    lab = sshd_lab
    host_pub = (lab.lab_dir / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    entries = [line.split() for line in lab.known_hosts.read_text().splitlines()]
    assert len(entries) == 1
    names, *key = entries[0]
    assert key == host_pub
    assert f"[{lab.host}]:{lab.port}" in names.split(",")
    assert {alias_for(u) for u in lab.users} <= set(names.split(","))
    for user in lab.users:
        assert stat.S_IMODE(lab.keys[user].stat().st_mode) == 0o600
        pub = lab.keys[user].with_name(user + ".pub").read_text().split()[:2]
        entries = [ln.split()[:2] for ln in lab.authorized_keys_path(user).read_text().splitlines()]
        assert pub in entries
    config = lab.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in config
    assert "StrictHostKeyChecking no" not in config
    assert f'UserKnownHostsFile "{lab.known_hosts}"' in config
    for alias in ("lab-alice", "lab-bob", "lab-carol", "lab-admin"):
        assert f"Host {alias}\n" in config


def test_listens_on_loopback_only(sshd_lab: SshLab) -> None:
    assert listening_addresses(sshd_lab.port) == ["0100007F"]  # 127.0.0.1, no IPv6, no 0.0.0.0


@pytest.mark.parametrize("user", ["alice", "bob", "carol", "dsgadmin"])
def test_each_user_logs_in_with_their_key(sshd_lab: SshLab, user: str) -> None:
    proc = sshd_lab.run(user, ["id", "-un"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{user}\n"


def test_group_membership(sshd_lab: SshLab) -> None:
    for user in sshd_lab.researchers:
        groups = sshd_lab.run(user, ["id", "-nG"], check=True).stdout.split()
        assert sshd_lab.group in groups
    admin_groups = sshd_lab.run(sshd_lab.admin, ["id", "-nG"], check=True).stdout.split()
    assert sshd_lab.group not in admin_groups


def test_admin_has_passwordless_sudo_and_researchers_do_not(sshd_lab: SshLab) -> None:
    proc = sshd_lab.run(sshd_lab.admin, ["sudo", "-n", "id", "-u"])
    assert (proc.returncode, proc.stdout) == (0, "0\n"), proc.stderr
    proc = sshd_lab.run("alice", ["sudo", "-n", "id", "-u"])
    assert proc.returncode != 0
    assert proc.stdout == ""


def test_arguments_arrive_verbatim(sshd_lab: SshLab) -> None:
    args = ["a b", "it's", '"q"', "$HOME", "x;y", "*", "`id`", "new\nline", ""]
    proc = sshd_lab.run("bob", ["printf", r"[%s]\n", *args])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(f"[{a}]\n" for a in args)


# --- authentication and host keys -----------------------------------------------------------


def test_wrong_key_is_refused(sshd_lab: SshLab, tmp_path: Path) -> None:
    lab = sshd_lab
    stranger = generate_key(tmp_path / "stranger")
    # Control: the same command line with alice's own key gets in.
    ok = lab.run_with_key("alice", lab.keys["alice"], ["id", "-un"])
    assert (ok.returncode, ok.stdout) == (0, "alice\n"), ok.stderr
    for key in (stranger, lab.keys["bob"]):
        proc = lab.run_with_key("alice", key, ["id", "-un"])
        assert proc.returncode == 255
        assert proc.stdout == ""
        assert "Permission denied (publickey)" in proc.stderr


def test_empty_known_hosts_fails_host_key_verification(sshd_lab: SshLab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    proc = sshd_lab.run("alice", ["id", "-un"], options=["-o", f"UserKnownHostsFile={empty}"])
    assert proc.returncode == 255
    assert proc.stdout == ""
    assert "Host key verification failed" in proc.stderr
    assert empty.read_text() == "", "an unknown host key must not be added"


def test_changed_host_key_is_refused(sshd_lab: SshLab, tmp_path: Path) -> None:
    impostor = generate_key(tmp_path / "impostor")
    pub = impostor.with_name("impostor.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshd_lab.host}]:{sshd_lab.port} {' '.join(pub)}\n")
    proc = sshd_lab.run("alice", ["id", "-un"], options=["-o", f"UserKnownHostsFile={wrong}"])
    assert proc.returncode == 255
    assert proc.stdout == ""
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr
    assert "Host key verification failed" in proc.stderr


# --- forced commands (how the dsg agent is confined) ------------------------------------------


def test_forced_command_confines_key(sshd_lab: SshLab) -> None:
    lab = sshd_lab
    marker = Path("/tmp") / f"dsg-lab-forced-{uuid.uuid4().hex}"
    requested = ["touch", str(marker)]
    try:
        with lab.authorized_key("carol", 'command="/usr/bin/env",restrict') as key:
            proc = lab.run_with_key("carol", key, requested)
            assert proc.returncode == 0, proc.stderr
            env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
            assert env["USER"] == "carol"
            assert env["SSH_ORIGINAL_COMMAND"] == f"touch {marker}"
            assert not marker.exists(), "the forced command must replace the requested one"
        # Control: carol's unrestricted lab key really runs the requested command.
        proc = lab.run("carol", requested)
        assert proc.returncode == 0, proc.stderr
        assert marker.exists()
    finally:
        marker.unlink(missing_ok=True)


def test_temporary_key_is_revoked_after_use(sshd_lab: SshLab, tmp_path: Path) -> None:
    lab = sshd_lab
    kept = tmp_path / "kept"
    with lab.authorized_key("carol", 'command="/bin/echo in",restrict') as key:
        kept.write_bytes(key.read_bytes())
        kept.chmod(0o600)
        proc = lab.run_with_key("carol", kept)
        assert (proc.returncode, proc.stdout) == (0, "in\n"), proc.stderr
    assert not key.exists()
    proc = lab.run_with_key("carol", kept)
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr


def test_restrict_denies_a_pty(sshd_lab: SshLab) -> None:
    lab = sshd_lab
    with lab.authorized_key("bob", 'command="tty",restrict') as key:
        proc = lab.run_with_key("bob", key, options=["-tt"])
        # ssh -tt treats a refused pty as fatal: nothing runs.
        assert proc.returncode == 255
        assert "PTY allocation request failed" in proc.stderr
        assert proc.stdout == ""
    with lab.authorized_key("bob", 'command="tty"') as key:  # control: no restrict
        proc = lab.run_with_key("bob", key, options=["-tt"])
        assert proc.stdout.startswith("/dev/pts/"), (proc.stdout, proc.stderr)


def test_forced_command_stdio_is_binary_clean(sshd_lab: SshLab) -> None:
    payload = os.urandom(1 << 20) + bytes(range(256)) + b"\r\n\x00\x1a~."
    with sshd_lab.authorized_key("alice", 'command="/bin/cat",restrict') as key:
        proc = sshd_lab.run_with_key("alice", key, ["ignored"], input=payload, text=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == payload


# --- down (last: it stops the lab and brings it back) -----------------------------------------


def test_down_leaves_no_lab_sshd_process(sshd_lab: SshLab) -> None:
    lab = sshd_lab
    pid = listener_pid(lab)
    assert lab_sshd_processes(lab) == [pid]
    # A live session: its sshd processes and the user's command must go too.
    session = subprocess.Popen(
        lab.ssh_argv("bob", ["sleep", "120"]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=client_env(),
    )
    try:

        def sleeper_started() -> bool:
            return any(
                Path(f"/proc/{p}/comm").read_text().strip() == "sleep"
                for p in descendants(pid)
                if Path(f"/proc/{p}/comm").exists()
            )

        assert wait_for(sleeper_started), "the session did not start"
        spawned = {p for p in descendants(pid) if running(p)}
        assert len(spawned) >= 3  # [priv] sshd, bob@notty sshd, sleep

        proc = run_script("down")
        assert proc.returncode == 0, proc.stderr
        assert not running(pid)
        assert [p for p in spawned if running(p)] == []
        assert lab_sshd_processes(lab) == []
        assert not port_accepts(lab)
        assert not (lab.lab_dir / "sshd" / "sshd.pid").exists()
        assert session.wait(timeout=10) == 255  # the client saw the connection close
        assert run_script("status").returncode == EXIT_DOWN
        assert run_script("down").returncode == 0  # safe twice
        assert lab_sshd_processes(lab) == []
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        # Bring the lab back for whatever runs after this module.
        up = run_script("up")
    assert up.returncode == 0, up.stderr
    assert lab.run("alice", ["id", "-un"]).stdout == "alice\n"
