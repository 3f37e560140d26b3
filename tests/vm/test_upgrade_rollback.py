"""Releases on the lab VM: install, a failed upgrade switched back by the health gate, a
good upgrade, and a rollback (playbooks/upgrade.yml, playbooks/rollback.yml).

Three releases are built here with scripts/release/build (in parallel): A from this
checkout (the one inventories/lab-vm installs, so site.yml has put it in place), B from a
copy whose agent refuses to start (`dsg --version` still works, so the install and the
pre-switch smoke test pass and only the health gate's hello can catch it), and C, this
checkout again under another build id. Then on the VM:

- upgrade to B fails on the host, the role's rescue switches /opt/dsg/current back to A
  (and /opt/dsg/previous back to what it was), and a researcher's agent session works;
- C with a byte appended to its wheelhouse is refused by the host's sha256 check before
  anything is installed, and upgrade.yml with a wrong release.json pin stops before any host
  task;
- upgrade to C succeeds: current -> C, previous -> A, the agent answers as C;
- rollback.yml goes back to A (previous -> C), without installing anything.

Runs after test_site_playbook (converging the VM itself when run alone) and leaves the VM
on release A, as the inventory declares, for the tests after it.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.ansible.conftest import AnsibleTools, Run, ansible_tools  # noqa: F401 (fixture)
from tests.vm import test_site_playbook as site
from tests.vm.conftest import LabVM, lab_dir

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.ansible]

HOST = "lab-vm"
INVENTORY = "inventories/lab-vm"
CURRENT, PREVIOUS, VENVS = "/opt/dsg/current", "/opt/dsg/previous", "/opt/dsg/venvs"
# Appended to a copy of engine/dsg/entry.py: the console script's `main` is looked up at
# run time, so this wrapper takes over `dsg serve` and nothing else.
BROKEN_AGENT = """

_real_main = main


def main() -> None:  # tests/vm/test_upgrade_rollback.py: a deliberately broken build
    import sys as _sys

    if _sys.argv[1:2] == ["serve"]:
        _sys.stderr.write("dsg: deliberately broken build, the agent refuses to start\\n")
        raise SystemExit(70)
    _real_main()
"""


def broken_source(dest: Path) -> Path:
    src = site.release_source()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(src / name, dest / name)
    shutil.copytree(
        src / "engine", dest / "engine",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )  # fmt: skip
    with (dest / "engine" / "dsg" / "entry.py").open("a") as f:
        f.write(BROKEN_AGENT)
    return dest


def manifest(release: Path) -> dict:
    return json.loads((release / "release.json").read_text())


def playbook(tools: AnsibleTools, name: str, *args: str) -> tuple[Run, dict[str, int]]:
    run = tools.run("ansible-playbook", "-i", INVENTORY, f"playbooks/{name}", *args, timeout=1800)
    return run, run.recap().get(HOST, {})


def said(run: Run) -> str:
    """The run's output with whitespace collapsed (the YAML callback folds long messages)."""
    return " ".join(run.stdout.split())


def links(vm: LabVM) -> tuple[str, str]:
    """(current, previous) link targets, "" for a missing link."""
    current = vm.run(["readlink", CURRENT], check=False).stdout.strip()
    return current, vm.run(["readlink", PREVIOUS], check=False).stdout.strip()


def hello_as(vm: LabVM, user: str, project: str) -> dict:
    """What a researcher's SSH session starts: `dsg serve` as `user`, one hello."""
    hello = json.dumps({"op": "hello", "version": 1, "project": project}).encode()
    frame = base64.b64encode(struct.pack(">IB", len(hello), ord("J")) + hello).decode()
    out = vm.sh(
        f"printf %s {frame} | base64 -d | runuser -u {user} -- /usr/local/bin/dsg serve "
        "| base64 -w0"
    )
    reply = base64.b64decode(out.strip() or b"")
    assert len(reply) >= 5, f"`dsg serve` as {user} answered nothing"
    (length,) = struct.unpack(">I", reply[:4])
    return json.loads(reply[5 : 5 + length])


def test_failed_upgrade_switches_back_good_upgrade_and_rollback(
    lab_vm: LabVM,
    ansible_tools: AnsibleTools,  # noqa: F811
    tmp_path: Path,
) -> None:
    tools = AnsibleTools(
        ansible_tools.venv, {**ansible_tools.env, "DSG_LAB_VM_PORT": str(lab_vm.port)}
    )
    releases = lab_dir() / "vm" / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(3) as pool:
        a = pool.submit(site.prepare_release)
        b = pool.submit(
            site.build_release, releases / "broken",
            source=broken_source(tmp_path), build_id="broken1",
        )  # fmt: skip
        c = pool.submit(site.build_release, releases / "good", build_id="good2")
        rel_a, rel_b, rel_c = a.result(), b.result(), c.result()
    ida, idb, idc = (manifest(r)["release"] for r in (rel_a, rel_b, rel_c))
    version = manifest(rel_a)["version"]
    assert len({ida, idb, idc}) == 3, (ida, idb, idc)

    # release A in place, as site.yml leaves it (converge when this test runs alone)
    has_access = lab_vm.run(["test", "-f", "/etc/dsg/access.yml"], check=False).returncode == 0
    if links(lab_vm)[0] != f"{VENVS}/{ida}" or not has_access:
        site.ensure_lab_user_keys()
        site.playbook(tools)
    current, previous_before = links(lab_vm)
    assert current == f"{VENVS}/{ida}"

    # B: installed, switched to, refused by the gate, switched back
    run, recap = playbook(tools, "upgrade.yml", "-e", f"dsg_server_release_dir={rel_b}")
    assert run.returncode != 0, run.explain()
    assert recap.get("failed") == 1 and recap.get("rescued") == 1, run.explain()
    assert f"dsg {idb} failed on {HOST}" in said(run), run.explain()
    assert "the agent answers a hello" in said(run), run.explain()
    assert "deliberately broken build" in said(run), run.explain()
    assert f"current switched back to {VENVS}/{ida}" in said(run), run.explain()
    assert links(lab_vm) == (f"{VENVS}/{ida}", previous_before)
    assert lab_vm.sh(f"test -f {VENVS}/{idb}/.dsg-release.json && echo installed").strip()
    assert lab_vm.sh("readlink /usr/local/bin/dsg").strip() == f"{CURRENT}/bin/dsg"
    reply = hello_as(lab_vm, "alice", "lab-alpha")
    assert reply.get("ok") and reply.get("server") == f"dsg {version}", reply

    # C tampered with (one byte appended to its wheelhouse): deploy-dsg.yml (no controller
    # pre-check) copies it, and the host's check against release.json refuses it before
    # anything is installed; upgrade.yml with a wrong pin stops before touching the host
    tampered = tmp_path / "tampered"
    shutil.copytree(rel_c, tampered)
    with (tampered / "wheelhouse.tar").open("ab") as f:
        f.write(b"\0")
    run, recap = playbook(
        tools, "deploy-dsg.yml", "--tags", "server", "-e", f"dsg_server_release_dir={tampered}"
    )
    assert run.returncode != 0 and recap.get("failed") == 1, run.explain()
    assert "Check the wheelhouse's and the lock's sha256 against release.json" in said(run)
    assert "wheelhouse.tar: FAILED" in said(run), run.explain()
    assert lab_vm.run(["test", "-e", f"{VENVS}/{idc}"], check=False).returncode != 0
    pin = "0" * 64
    run, recap = playbook(
        tools, "upgrade.yml", "-e", f"dsg_server_release_dir={rel_c}",
        "-e", f"dsg_server_release_manifest_sha256={pin}",
    )  # fmt: skip
    assert run.returncode != 0, run.explain()
    assert "does not have the sha256 the inventory pins" in said(run), run.explain()
    assert links(lab_vm) == (f"{VENVS}/{ida}", previous_before)

    # C: a good upgrade
    run, recap = playbook(tools, "upgrade.yml", "-e", f"dsg_server_release_dir={rel_c}")
    assert run.returncode == 0, run.explain()
    assert recap["failed"] == 0 and recap["changed"] > 0, run.explain()
    assert f"dsg {idc} (switched from {ida})" in said(run), run.explain()
    assert links(lab_vm) == (f"{VENVS}/{idc}", f"{VENVS}/{ida}")
    installed = json.loads(lab_vm.sh(f"cat {CURRENT}/.dsg-release.json"))
    assert installed["wheel"]["sha256"] == manifest(rel_c)["wheel"]["sha256"]
    reply = hello_as(lab_vm, "alice", "lab-alpha")
    assert reply.get("ok") and reply.get("server") == f"dsg {version}", reply
    # three releases kept (A, B, C: dsg_server_keep_releases 3)
    kept = set(lab_vm.sh(f"ls -1 {VENVS}").split())
    assert kept == {ida, idb, idc}, kept

    # rollback: back to A, C becomes the previous release; nothing installed or removed
    run, recap = playbook(tools, "rollback.yml")
    assert run.returncode == 0, run.explain()
    assert f"current -> {ida} (switched); previous -> {idc}" in said(run), run.explain()
    assert links(lab_vm) == (f"{VENVS}/{ida}", f"{VENVS}/{idc}")
    assert set(lab_vm.sh(f"ls -1 {VENVS}").split()) == kept
    reply = hello_as(lab_vm, "bob", "lab-beta")
    assert reply.get("ok") and reply.get("server") == f"dsg {version}", reply
