"""The testinfra suite (tests/infra/test_{zfs,access,server}.py) against the lab host.

The suite runs in .venv-ansible (where pytest-testinfra and ansible are), as a subprocess:
  .venv-ansible/bin/pytest tests/infra --hosts=ansible://lab-zfs1 --ansible-inventory=inventories/lab
One test, in order: converge the lab if it was never provisioned, the suite passes (also with
--nagios), drift four things by hand, the suite fails naming each of them precisely, the site
playbook repairs them, the suite passes again. Timings are printed (pytest -s) and written to
<lab>/testinfra-timings.txt.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ansible.conftest import lab_provisioned, sh
from tests.ansible.test_lab_run import converge
from tests.helpers import skip_unless_lab_users_can_run

pytestmark = [pytest.mark.ansible, pytest.mark.zfs, pytest.mark.ssh]

HOST = "lab-zfs1"
# Written by the operations roles (site.yml's last play); a lab provisioned before they existed
# is converged first.
OPERATIONS_FILES = ("/etc/dsg/health.yml", "/etc/cron.d/dsg-monitoring", "/etc/cron.d/dsg-backup")
SUITE = ("tests/infra", f"--hosts=ansible://{HOST}", "--ansible-inventory=inventories/lab")


def suite(ansible_tools, *args: str):
    return ansible_tools.run("pytest", *SUITE, "-p", "no:cacheprovider", "--tb=short", *args)


def test_testinfra_suite_detects_drift_and_passes_after_repair(ansible_tools, ansible_lab):
    lab_dir = ansible_lab.lab_dir
    mnt = lab_dir / "zfs" / "mnt" / "dsglab" / "dsg"
    timings: dict[str, float] = {}
    if not lab_provisioned(mnt) or not all(Path(f).is_file() for f in OPERATIONS_FILES):
        run, _ = converge(ansible_tools)  # this lab was not provisioned (by these roles) yet
        timings["initial converge"] = run.seconds
    # the suite's handshake runs the agent as project members
    skip_unless_lab_users_can_run(lab_dir, "/usr/local/bin/dsg")

    clean = suite(ansible_tools)
    timings["suite, converged host"] = clean.seconds
    assert clean.returncode == 0, clean.explain()
    assert " passed" in clean.stdout and "failed" not in clean.stdout, clean.explain()
    # zfs-fuse has no delegation: that check skips, saying so
    assert "zfs-fuse has no delegation" in clean.stdout, clean.explain()

    nagios = suite(ansible_tools, "--nagios")
    timings["suite --nagios"] = nagios.seconds
    assert nagios.returncode == 0, nagios.explain()
    assert nagios.stdout.startswith("TESTINFRA OK - "), nagios.explain()

    # Drift by hand: a declared dataset property, an extra key line that could do more than
    # run the agent, a wrong group on a project mountpoint, and an audit log that lost its
    # append-only attribute.
    extra_key = (lab_dir / "keys" / "alice.pub").read_text().strip()
    sh(["zfs", "set", "quota=64M", "dsglab/dsg/lab-alpha"])
    with open("/etc/dsg/authorized_keys/carol", "a") as f:
        f.write(extra_key + "\n")
    sh(["chgrp", "dsg-lab-alpha", str(mnt / "lab-beta")])
    sh(["chattr", "-a", "/var/log/dsg/audit.jsonl"])
    try:
        drifted = suite(ansible_tools)
        timings["suite, drifted host"] = drifted.seconds
        out = drifted.stdout
        assert drifted.returncode == 1, drifted.explain()
        assert "4 failed" in out, drifted.explain()
        assert (
            f"dsglab/dsg/lab-alpha: quota is '{64 * 1024**2}', the inventory declares "
            f"'{256 * 1024**2}' (256M)"
        ) in out, drifted.explain()
        assert (
            "/etc/dsg/authorized_keys/carol line 4: 'ssh-ed25519 " in out
            and """does not carry exactly 'command="/usr/local/bin/dsg serve",restrict'""" in out
        ), drifted.explain()
        assert (
            f"{mnt}/lab-beta: group is dsg-lab-alpha, expected dsg-lab-beta (project lab-beta)"
        ) in out, drifted.explain()
        assert "/var/log/dsg/audit.jsonl: not append-only" in out, drifted.explain()

        critical = suite(ansible_tools, "--nagios")
        timings["suite --nagios, drifted"] = critical.seconds
        assert critical.returncode == 2, critical.explain()
        assert critical.stdout.startswith("TESTINFRA CRITICAL - "), critical.explain()
        assert " 4 failed" in critical.stdout.splitlines()[0], critical.explain()
    finally:
        repair, recap = converge(ansible_tools)
        timings["repair converge"] = repair.seconds
    assert recap["changed"] >= 4, repair.explain()

    again = suite(ansible_tools)
    timings["suite, repaired host"] = again.seconds
    assert again.returncode == 0, again.explain()

    report = "\n".join(f"{k}: {v:.1f}s" for k, v in timings.items())
    print("\ntestinfra lab timings:\n" + report)
    (lab_dir / "testinfra-timings.txt").write_text(report + "\n")


def test_suite_refuses_a_host_outside_the_inventory(ansible_tools):
    """Naming a host the inventory does not have fails clearly (no silent pass)."""
    run = ansible_tools.run(
        "pytest", "tests/infra", "--hosts=ansible://no-such-host",
        "--ansible-inventory=inventories/lab", "-p", "no:cacheprovider", "-q",
    )  # fmt: skip
    assert run.returncode != 0, run.explain()
    assert "no-such-host" in run.stdout + run.stderr, run.explain()
