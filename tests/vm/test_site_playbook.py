"""The site playbook and the testinfra suite against the lab VM (inventories/lab-vm).

From a bare VM (fresh overlay, blank disks): `ansible-playbook playbooks/site.yml`
converges (real pools on the virtual disks, OpenZFS delegation enforced, sshd drop-in,
sanoid's systemd timer, the engine from a release of this checkout, the host baseline), a
second run changes nothing, and the testinfra suite passes with nothing skipped, including
the delegation check that skips on zfs-fuse.

The guest has no network, and needs none for the engine: it is installed as production
installs it, from a release of this checkout (scripts/release/build into <lab>/vm/release:
the wheel, its dependencies' wheels and the hashed lock), which the role copies over.
"""

from __future__ import annotations

import json
import os
import shutil
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
RELEASE_BUILD = REPO / "scripts" / "release" / "build_release.py"
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


def release_source() -> Path:
    """The tree the VM's releases are built from: this checkout, or the one
    DSG_VM_RELEASE_SOURCE names (a copy of a commit with chosen changes, when the checkout
    holds someone else's unfinished work)."""
    return Path(os.environ.get("DSG_VM_RELEASE_SOURCE") or REPO)


def build_release(
    out: Path, *, source: Path | None = None, build_id: str | None = None, timeout: float = 900
) -> Path:
    """scripts/release/build of `source` (default release_source()) into `out` (replaced if
    there), as a test build (uncommitted changes allowed); skips when PyPI cannot be reached
    for the wheels."""
    source = source or release_source()
    if out.exists():
        shutil.rmtree(out)
    argv = [sys.executable, str(RELEASE_BUILD), str(out), "--source", str(source)]
    argv += ["--allow-dirty", "--verify", "no", "--python", sys.executable]
    if build_id:
        argv += ["--build-id", build_id]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot build a release for the guest (PyPI?): {proc.stderr[-800:]}")
    return out


_release: list[Path] = []


def prepare_release() -> Path:
    """The release inventories/lab-vm installs (<lab>/vm/release), built from
    release_source() once per session."""
    if not _release:
        _release.append(build_release(lab_dir() / "vm" / "release"))
    return _release[0]


def release_id(release: Path) -> str:
    return str(json.loads((release / "release.json").read_text())["release"])


def playbook(tools: AnsibleTools, *args: str) -> tuple[Run, dict[str, int]]:
    # A bare VM's first converge took over 40 min under TCG on 2 loaded cores (2026-12-07).
    run = tools.run("ansible-playbook", "-i", INVENTORY, "playbooks/site.yml", *args, timeout=4800)
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
    prepare_release()
    timings["release build"] = time.monotonic() - t0

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
