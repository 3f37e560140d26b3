"""The site playbook and the testinfra suite against the lab VM (inventories/lab-vm).

From a bare VM (fresh overlay, blank disks): `ansible-playbook playbooks/site.yml`
converges (real pools on the virtual disks, OpenZFS delegation enforced, sshd drop-in,
sanoid's systemd timer, the engine from a wheel of this checkout), a second run changes
nothing, and the testinfra suite passes with nothing skipped, including the delegation check
that skips on zfs-fuse.

The guest has no network: the engine's dependencies come from a wheelhouse built here
(`pip wheel` of this checkout) and copied into the guest with an /etc/pip.conf pointing at
it; that file stands in for the package index a production server reaches.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ansible.conftest import AnsibleTools, Run, ansible_tools  # noqa: F401 (fixture)
from tests.vm.conftest import REPO, LabVM, lab_dir

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.ansible]

HOST = "lab-vm"
INVENTORY = "inventories/lab-vm"
GUEST_WHEELS = "/var/cache/dsg-wheels"
RESEARCHERS = ("alice", "bob", "carol")


def ensure_lab_user_keys() -> None:
    """The inventory's users log in with the lab's keys (made by scripts/lab/sshd up)."""
    keys = lab_dir() / "keys"
    if all((keys / f"{u}.pub").is_file() for u in RESEARCHERS):
        return
    proc = subprocess.run(
        [str(REPO / "scripts" / "lab" / "sshd"), "up"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"lab user keys missing and scripts/lab/sshd up failed: {proc.stderr[-500:]}")


def build_wheelhouse() -> Path:
    out = lab_dir() / "vm" / "wheels"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("dsg-*.whl"):
        old.unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot build the wheelhouse for the guest (PyPI?): {proc.stderr[-800:]}")
    return out


def push_wheelhouse(vm: LabVM, wheels: Path) -> None:
    tar = subprocess.Popen(["tar", "-C", str(wheels), "-cf", "-", "."], stdout=subprocess.PIPE)
    proc = subprocess.run(
        vm.ssh_argv(
            ["sh", "-c", f"rm -rf {GUEST_WHEELS} && mkdir -p {GUEST_WHEELS} && "
             f"tar -C {GUEST_WHEELS} -xf - && chmod -R a+rX {GUEST_WHEELS}"]
        ),
        stdin=tar.stdout, capture_output=True, timeout=300,
    )  # fmt: skip
    assert tar.wait() == 0 and proc.returncode == 0, proc.stderr
    vm.sh(f"printf '[global]\\nno-index = true\\nfind-links = {GUEST_WHEELS}\\n' > /etc/pip.conf")


def playbook(tools: AnsibleTools, *args: str) -> tuple[Run, dict[str, int]]:
    run = tools.run("ansible-playbook", "-i", INVENTORY, "playbooks/site.yml", *args, timeout=2400)
    recap = run.recap()
    assert run.returncode == 0, run.explain()
    assert set(recap) == {HOST}, run.explain()
    assert recap[HOST]["failed"] == 0 and recap[HOST]["unreachable"] == 0, run.explain()
    return run, recap[HOST]


def test_site_converges_idempotent_and_testinfra_passes(
    lab_vm: LabVM,
    ansible_tools: AnsibleTools,  # noqa: F811
) -> None:
    ensure_lab_user_keys()
    tools = AnsibleTools(
        ansible_tools.venv, {**ansible_tools.env, "DSG_LAB_VM_PORT": str(lab_vm.port)}
    )
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    push_wheelhouse(lab_vm, build_wheelhouse())
    timings["wheelhouse"] = time.monotonic() - t0

    # bare: no pools, no dsg
    assert lab_vm.sh("zpool list -H -o name").strip() == ""
    assert lab_vm.run(["test", "-e", "/usr/local/bin/dsg"], check=False).returncode != 0

    first, recap = playbook(tools)
    timings["site.yml from bare"] = first.seconds
    assert recap["changed"] > 0, first.explain()
    second, recap = playbook(tools)
    timings["site.yml again"] = second.seconds
    assert recap["changed"] == 0, second.explain()

    # what zfs-fuse cannot have, seen directly
    pools = lab_vm.sh("zpool status -P dsglab dsgbackup")
    assert "/dev/disk/by-id/virtio-dsg-pool1" in pools and "virtio-dsg-pool2" in pools, pools
    allowed = lab_vm.sh("zfs allow dsglab/dsg/lab-alpha")
    assert "user alice hold,release,rollback,snapshot,userprop" in allowed, allowed
    assert lab_vm.sh("systemctl is-enabled sanoid.timer").strip() == "enabled"
    assert lab_vm.sh("systemctl is-active zfs-zed").strip() == "active"

    suite = tools.run(
        "pytest", "tests/infra", f"--hosts=ansible://{HOST}", f"--ansible-inventory={INVENTORY}",
        "-p", "no:cacheprovider", "--tb=short", "-rs", timeout=1800,
    )  # fmt: skip
    timings["testinfra suite"] = suite.seconds
    assert suite.returncode == 0, suite.explain()
    summary = suite.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, suite.explain()
    assert "skipped" not in summary, suite.explain()  # delegation is checked, not skipped

    report = "\n".join(f"{k}: {v:.1f} s" for k, v in timings.items())
    (lab_dir() / "vm" / "ansible-timings.txt").write_text(report + "\n")
    print(report)
