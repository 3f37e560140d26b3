"""Fixtures for the Ansible toolkit tests: the .venv-ansible tooling venv and the labs.

``ansible_tools`` (session) makes sure ``<repo>/.venv-ansible`` exists with the pinned
versions from requirements-ansible.txt (created on first use; re-installed when that file
is newer than the venv's stamp) and returns an :class:`AnsibleTools` that runs
``ansible-playbook`` / ``ansible-lint`` from it. It skips, saying why, when the venv cannot
be built (no network to PyPI, no python3-venv).

``ansible_lab`` (session) brings up the zfs-fuse lab and the lab sshd with their scripts
(``scripts/lab/zfs up``, ``scripts/lab/sshd up``), registers this session as a user of the
zfs lab (``<lab>/zfs/sessions/<pid>``, the convention of tests/fixtures/zfs_lab.py, so other
sessions leave it up meanwhile) and skips when a prerequisite is missing (not root, no
/dev/fuse, packages not installable: the scripts' exit code 2).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-ansible"
REQUIREMENTS = REPO / "requirements-ansible.txt"
# The lab inventories' vault (inventories/lab/group_vars/all/vault.yml) is encrypted with this
# public lab fixture password; every ansible command of the tests can decrypt it.
LAB_VAULT_IDENTITY = f"lab@{REPO / 'inventories' / 'lab' / 'vault-password.txt'}"
STAMP = VENV / ".dsg-requirements-installed"
EXIT_MISSING_PREREQ = 2


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _base_python() -> str:
    return os.environ.get("PYTHON") or (
        "python3" if sys.version_info >= (3, 11) else sys.executable
    )


def ensure_venv() -> str | None:
    """Create or refresh .venv-ansible; return None when ready, else why it is not."""
    if not REQUIREMENTS.is_file():
        return f"{REQUIREMENTS} is missing"
    fresh = STAMP.is_file() and STAMP.stat().st_mtime >= REQUIREMENTS.stat().st_mtime
    if fresh and (VENV / "bin" / "ansible-playbook").exists():
        return None
    if not _venv_python().exists():
        proc = subprocess.run(
            [_base_python(), "-m", "venv", str(VENV)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            return f"cannot create {VENV} (python3-venv missing?): {proc.stderr.strip()[-300:]}"
    proc = subprocess.run(
        [str(_venv_python()), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return f"cannot install {REQUIREMENTS.name} into {VENV}: {proc.stderr.strip()[-500:]}"
    STAMP.touch()
    return None


@dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        """Parse PLAY RECAP lines: {host: {"ok": n, "changed": n, "failed": n, ...}}."""
        out: dict[str, dict[str, int]] = {}
        for line in self.stdout.splitlines():
            m = re.match(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", line.strip())
            if m:
                out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        return out

    def explain(self) -> str:
        tail = "\n".join(self.stdout.splitlines()[-80:])
        return f"$ {' '.join(self.argv)}\nexit {self.returncode}\n{tail}\n{self.stderr[-2000:]}"


@dataclass
class AnsibleTools:
    venv: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, tool: str, *args: str, timeout: float = 600) -> Run:
        argv = [str(self.venv / "bin" / tool), *args]
        t0 = time.monotonic()
        proc = subprocess.run(
            argv,
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Run(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)

    def playbook(self, inventory: str, playbook: str, *args: str) -> Run:
        return self.run(
            "ansible-playbook", "-i", f"inventories/{inventory}", f"playbooks/{playbook}", *args
        )


@pytest.fixture(scope="session")
def ansible_tools() -> AnsibleTools:
    why = ensure_venv()
    if why:
        pytest.skip(f"ansible tooling unavailable: {why}")
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PY_COLORS="0",
        NO_COLOR="1",
        ANSIBLE_VAULT_IDENTITY_LIST=LAB_VAULT_IDENTITY,
    )
    env.pop("VIRTUAL_ENV", None)
    return AnsibleTools(VENV, env)


LAB_AGENT_PYTHON = Path("/opt/dsg/venv/bin/python")  # the lab's dsg_server (method "path")


def lab_provisioned(mount_root: Path) -> bool:
    """The lab host was converged for this checkout: its access file names the lab's
    projects, and the agent at /usr/local/bin/dsg runs this checkout's engine. A lab
    converged from another checkout would run that one's engine, or none once it is gone."""
    access = Path("/etc/dsg/access.yml")
    if not access.is_file() or str(mount_root / "lab-alpha") not in access.read_text():
        return False
    probe = subprocess.run(
        [str(LAB_AGENT_PYTHON), "-c", "import importlib.metadata as m, sys; "
         "sys.stdout.write(m.distribution('dsg').read_text('direct_url.json') or '')"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    try:
        url = json.loads(probe.stdout)["url"] if probe.returncode == 0 else ""
    except (ValueError, KeyError, TypeError):
        return False
    return url.startswith("file://") and Path(url[len("file://") :]).resolve() == REPO


def _lab_dir() -> Path:
    return Path(os.environ.get("DSG_LAB_DIR") or REPO / ".lab").absolute()


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "lab" / name), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def _zfs_session_registration() -> Iterator[None]:
    sessions = _lab_dir() / "zfs" / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    me = sessions / str(os.getpid())
    me.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        me.unlink(missing_ok=True)


@dataclass
class Lab:
    lab_dir: Path

    def up(self) -> None:
        """(Re)run both `up` scripts: idempotent, and heals a lab another session cycled."""
        for name in ("zfs", "sshd"):
            proc = _script(name, "up")
            if proc.returncode == EXIT_MISSING_PREREQ:
                pytest.skip(f"scripts/lab/{name} up: missing prerequisite: {proc.stderr.strip()}")
            if proc.returncode != 0:
                raise AssertionError(
                    f"scripts/lab/{name} up failed ({proc.returncode}):\n{proc.stderr}"
                )


@pytest.fixture(scope="session")
def ansible_lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the Ansible lab run needs root (the lab scripts create users and pools)")
    for name in ("zfs", "sshd"):
        if not (REPO / "scripts" / "lab" / name).exists():
            pytest.skip(f"scripts/lab/{name} is missing")
    with _zfs_session_registration():
        lab = Lab(_lab_dir())
        lab.up()
        yield lab
    # The labs are left up: other sessions may use them, and `down` belongs to whoever
    # manages the machine (CI's run ends with the machine).


def sh(argv: Sequence[str]) -> str:
    """Run a command on the lab host (this machine) and return stdout; fail on error."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout
