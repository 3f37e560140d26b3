"""tests/infra: testinfra checks of a deployed dsg host against the inventory.

Two ways this directory runs:

* **suite** (`--hosts` given; needs pytest-testinfra, installed in .venv-ansible):
  ``.venv-ansible/bin/pytest tests/infra --hosts=ansible://lab-zfs1 --ansible-inventory=inventories/lab``
  collects test_zfs.py, test_access.py, test_server.py, test_operations.py and
  test_baseline.py against those hosts.
* **wrapper** (no `--hosts`; the default test run in .venv): collects only
  test_run_testinfra.py, which converges the lab with the site playbook and runs the suite
  above in .venv-ansible as a subprocess (also after drifting the lab by hand).

tests/infra/pytest.ini makes this directory its own rootdir when it is named on the command
line, so the suite does not load tests/conftest.py (which needs the engine, not installed in
.venv-ansible).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.conftest import ansible_lab, ansible_tools  # noqa: F401  (for the wrapper)
from tests.infra import declared as decl

SUITE = {
    "test_zfs.py", "test_access.py", "test_server.py", "test_operations.py", "test_baseline.py",
}  # fmt: skip
WRAPPER = {"test_run_testinfra.py"}
CONNECTION_VARS = (
    "ansible_connection", "ansible_host", "ansible_port", "ansible_user", "ansible_become",
    "ansible_become_user", "ansible_ssh_private_key_file", "ansible_private_key_file",
    "ansible_ssh_common_args", "ansible_ssh_extra_args",
)  # fmt: skip


def suite_mode(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("hosts"))
    except ValueError:  # testinfra is not installed: no --hosts option
        return False


def pytest_configure(config: pytest.Config) -> None:
    if not suite_mode(config):
        return
    # testinfra runs `ansible-inventory` from PATH and reads ./ansible.cfg: use this venv's
    # ansible and the repository's configuration wherever pytest was started.
    venv_bin = str(Path(sys.executable).parent)
    if not shutil.which("ansible-inventory") and (Path(venv_bin) / "ansible-inventory").exists():
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("ANSIBLE_CONFIG", str(decl.REPO / "ansible.cfg"))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name in (WRAPPER if suite_mode(config) else SUITE):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """testinfra turns a --hosts pattern that matches nothing into skips; make it an error."""
    if not suite_mode(config) or not items:
        return
    import testinfra.host

    hosts = [getattr(i, "callspec", None) for i in items]
    if not any(
        isinstance(c.params.get("_testinfra_host"), testinfra.host.Host) for c in hosts if c
    ):
        raise pytest.UsageError(
            f"--hosts={config.getoption('hosts')} matches no host of "
            f"--ansible-inventory={config.getoption('ansible_inventory')}"
        )


_control_dir: list[str] = []


def _control_path() -> str:
    """One SSH master per host for the whole run (testinfra opens a connection per command)."""
    if not _control_dir:
        _control_dir.append(tempfile.mkdtemp(prefix="dsg-testinfra-"))
        atexit.register(_close_masters, _control_dir[0])
    return f"{_control_dir[0]}/%C"


def _close_masters(directory: str) -> None:
    # A master left to ControlPersist would keep a caller's output pipes open for a minute.
    for sock in Path(directory).glob("*"):
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "dsg-testinfra"],
            capture_output=True, timeout=10,
        )  # fmt: skip
    shutil.rmtree(directory, ignore_errors=True)


def _pin_connection(backend: Any, inventory: str, connection: dict[str, Any]) -> None:
    """Give testinfra the connection variables as Ansible templates them.

    testinfra 10 builds its SSH connection from `ansible-inventory --list`, which prints
    variables untemplated (the lab's `ansible_port: "{{ lookup('env', ...) }}"`). Replace
    this host's connection variables in testinfra's cached inventory by their resolved values.
    """
    if getattr(backend, "force_ansible", False):
        return  # every command goes through `ansible`, which templates them itself
    from testinfra.utils.ansible_runner import AnsibleRunner

    runner = AnsibleRunner.get_runner(inventory)
    hostvars = runner.inventory["_meta"].setdefault("hostvars", {}).setdefault(backend.host, {})
    for name in CONNECTION_VARS:
        value = connection.get(name)
        if value is None or value == "":
            hostvars.pop(name, None)
        else:
            hostvars[name] = str(value) if name == "ansible_port" else value
    if hostvars.get("ansible_connection", "ssh") in ("ssh", "smart"):
        hostvars["ansible_ssh_extra_args"] = (
            f"{hostvars.get('ansible_ssh_extra_args') or ''} -o ControlMaster=auto "
            f"-o ControlPersist=60s -o ControlPath={_control_path()}"
        ).strip()
    runner._host_cache.pop(backend.host, None)


@pytest.fixture(scope="module")
def declared(host: Any, pytestconfig: pytest.Config) -> dict[str, Any]:
    """The declared state of the host under test (see declared.py)."""
    backend = host.backend
    if backend.NAME != "ansible":
        pytest.fail(
            "the dsg checks read the inventory: run them with "
            "--hosts=ansible://<host> --ansible-inventory=inventories/<env>"
        )
    inventory = backend.ansible_inventory or pytestconfig.getoption("ansible_inventory")
    if not inventory:
        pytest.fail("--ansible-inventory=inventories/<env> is required")
    d = decl.resolve(inventory, backend.host)
    _pin_connection(backend, inventory, d["connection"])
    return d


def need_group(d: dict[str, Any], *groups: str) -> None:
    if not set(groups) & set(d["group_names"]):
        pytest.skip(f"host is not in {' or '.join(groups)}")


def sh(host: Any, command: str, *args: str) -> str:
    """Run on the host; fail with the command and its stderr when it fails."""
    r = host.run(command, *args)
    assert r.rc == 0, f"{r.command!r} failed ({r.rc}): {r.stderr.strip()}"
    return r.stdout


def stat(host: Any, path: str) -> tuple[str, str, str, int] | None:
    """(type, owner, group, mode) of `path` (not following symlinks), None if missing."""
    r = host.run("stat -c '%%F|%%U|%%G|%%a' -- %s", path)
    if r.rc != 0:
        return None
    kind, owner, group, mode = r.stdout.strip().split("|")
    return kind, owner, group, int(mode, 8)


def check_path(
    problems: list[str], host: Any, path: str, kind: str, owner: str, group: str, mode: int,
    why: str = "",
) -> None:  # fmt: skip
    """Append a precise message per difference between `path` and what is declared."""
    suffix = f" ({why})" if why else ""
    st = stat(host, path)
    if st is None:
        problems.append(f"{path}: missing, expected a {kind}{suffix}")
        return
    got_kind, got_owner, got_group, got_mode = st
    if not got_kind.startswith(kind):
        problems.append(f"{path}: is a {got_kind}, expected a {kind}{suffix}")
    if got_owner != owner:
        problems.append(f"{path}: owner is {got_owner}, expected {owner}{suffix}")
    if got_group != group:
        problems.append(f"{path}: group is {got_group}, expected {group}{suffix}")
    if got_mode != mode:
        problems.append(f"{path}: mode is {got_mode:04o}, expected {mode:04o}{suffix}")


def report(problems: list[str], what: str) -> None:
    assert not problems, f"{what}: not as the inventory declares:\n  " + "\n  ".join(problems)
