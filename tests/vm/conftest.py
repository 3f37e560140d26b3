"""Fixtures for the QEMU lab VM tier (tests/vm, marker ``vm``; run by scripts/run-vm-tests).

``lab_vm`` (session) runs ``scripts/lab/vm up`` (builds the image on first use, ≈ 12 min;
boots in 30-90 s under TCG) and yields a :class:`LabVM` that runs commands in the guest over
the lab's SSH config, host key verified. It skips, naming what is missing, when not root or
when the script exits 2 (host tools not installable, image cannot be built). It brings the VM
down at the end of the session unless it was up before.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "lab" / "vm"
EXIT_MISSING_PREREQ = 2
# Image build from nothing (≈ 12 min on 2 cores, more under load) plus a TCG boot.
UP_TIMEOUT = 3600


def lab_dir() -> Path:
    return Path(os.environ.get("DSG_LAB_DIR") or REPO / ".lab").absolute()


def _script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _parse_env(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("DSG_LAB_VM_"):
            words = shlex.split(value)  # printf %q output
            out[name] = words[0] if len(words) == 1 else " ".join(words)
    return out


def users_ssh_config(port: int, known_hosts: Path, users: Sequence[str], path: Path) -> Path:
    """An ssh_config with a `vm-<user>` alias per lab user (their lab keys, the VM's pinned
    host key), for the engine's ssh transport."""
    keys = lab_dir() / "keys"
    blocks = [
        f"Host vm-{user}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f'  IdentityFile "{keys / user}"\n  IdentitiesOnly yes\n'
        f'  UserKnownHostsFile "{known_hosts}"\n  GlobalKnownHostsFile /dev/null\n'
        "  StrictHostKeyChecking yes\n  UpdateHostKeys no\n  CheckHostIP no\n"
        "  BatchMode yes\n  ConnectTimeout 30\n  LogLevel ERROR\n"
        for user in users
    ]
    path.write_text("".join(blocks))
    return path


@dataclass
class LabVM:
    env: dict[str, str]

    @property
    def ssh_config(self) -> Path:
        return Path(self.env["DSG_LAB_VM_SSH_CONFIG"])

    @property
    def known_hosts(self) -> Path:
        return Path(self.env["DSG_LAB_VM_KNOWN_HOSTS"])

    @property
    def port(self) -> int:
        return int(self.env["DSG_LAB_VM_PORT"])

    @property
    def alias(self) -> str:
        return self.env["DSG_LAB_VM_ALIAS"]

    @property
    def disks(self) -> list[str]:
        return self.env["DSG_LAB_VM_DISKS"].split()

    def ssh_argv(
        self, argv: Sequence[str], user: str = "root", key: Path | None = None
    ) -> list[str]:
        """ssh through the lab config; `argv` is quoted for the remote shell."""
        opts = ["-F", str(self.ssh_config)]
        if user != "root":
            if key is None:
                raise ValueError(f"a key is needed to log in as {user}")
            opts += ["-l", user, "-o", f"IdentityFile={key}"]
        return ["ssh", *opts, self.alias, "--", shlex.join(argv)]

    def run(
        self,
        argv: Sequence[str],
        user: str = "root",
        key: Path | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        proc = subprocess.run(
            self.ssh_argv(argv, user, key),
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{user}@vm$ {shlex.join(argv)}\nexit {proc.returncode}\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
        return proc

    def sh(self, script: str, user: str = "root", key: Path | None = None) -> str:
        """Run a bash script in the guest (set -euo pipefail); return stdout, fail on error."""
        return self.run(["bash", "-c", "set -euo pipefail\n" + script], user, key).stdout


@pytest.fixture(scope="session")
def lab_vm() -> Iterator[LabVM]:
    if os.geteuid() != 0:
        pytest.skip("the lab VM needs root (debootstrap builds its image; QEMU and its cache)")
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is missing")
    was_up = _script("status", timeout=60).returncode == 0
    proc = _script("up", timeout=UP_TIMEOUT)
    if proc.returncode == EXIT_MISSING_PREREQ:
        pytest.skip(f"scripts/lab/vm up: missing prerequisite: {proc.stderr.strip()[-1500:]}")
    if proc.returncode != 0:
        raise AssertionError(f"scripts/lab/vm up failed ({proc.returncode}):\n{proc.stderr}")
    try:
        yield LabVM(_parse_env(proc.stdout))
    finally:
        if not was_up:
            down = _script("down", timeout=180)
            assert down.returncode == 0, down.stderr


@pytest.fixture
def guest_user(lab_vm: LabVM, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fresh unprivileged guest user (no sudo) with an SSH key; removed afterwards."""
    name = f"t{os.getpid() % 100000}"
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"dsg-vm-test-{name}", "-f", str(key)],
        check=True,
    )  # fmt: skip
    pub = key.with_suffix(".pub").read_text().strip()
    lab_vm.sh(
        f"""
        id -u {name} >/dev/null 2>&1 && userdel -r {name}
        useradd --create-home --shell /bin/bash {name}
        usermod -p '*' {name}
        install -d -m 700 -o {name} -g {name} /home/{name}/.ssh
        printf '%s\\n' {shlex.quote(pub)} > /home/{name}/.ssh/authorized_keys
        chown {name}: /home/{name}/.ssh/authorized_keys
        chmod 600 /home/{name}/.ssh/authorized_keys
        """
    )
    try:
        yield name, key
    finally:
        lab_vm.run(["userdel", "-r", name], check=False)
