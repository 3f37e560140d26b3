"""The host baseline (role dsg_baseline, playbooks/baseline.yml) on the lab VM.

Runs after test_site_playbook (the name sorts after it), whose site.yml converged the
baseline too; run alone on a VM that has no baseline yet, this test converges it itself.
Either way it runs baseline.yml once more: changed=0. Then, seen
directly in the guest: the nftables table with SSH and the metrics port admitted from the
host's address only (QEMU brings every host connection in from 10.0.2.2), `sshd -T` with
password logins off globally and for users outside and inside the dsg Match block, the
services running, a mail sent with `mail` (what zfs-zed uses) waiting in nullmailer's queue
addressed to the admin (the guest has no relay), and a .prom file in the textfile directory
served by the node exporter. The testinfra checks (tests/infra/test_baseline.py) pass. Two
refusals, each running only its part of the role (tags baseline_firewall, baseline_sshd),
change nothing: SSH networks that would shut out the controller, and an sshd setting
`sshd -t` rejects (the previous drop-in is put back; sshd keeps working).
"""

from __future__ import annotations

import time

import pytest

from tests.ansible.conftest import AnsibleTools, Run, ansible_tools  # noqa: F401 (fixture)
from tests.vm.conftest import LabVM, lab_dir

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.ansible]

HOST = "lab-vm"
INVENTORY = "inventories/lab-vm"
DROPIN = "/etc/ssh/sshd_config.d/05-dsg-baseline.conf"


def baseline(tools: AnsibleTools, *args: str) -> tuple[Run, dict[str, int]]:
    run = tools.run(
        "ansible-playbook", "-i", INVENTORY, "playbooks/baseline.yml", *args, timeout=1800
    )
    return run, run.recap().get(HOST, {})


def test_baseline_converges_idempotent_hardened_and_refuses_lockouts(
    lab_vm: LabVM,
    ansible_tools: AnsibleTools,  # noqa: F811
) -> None:
    tools = AnsibleTools(
        ansible_tools.venv, {**ansible_tools.env, "DSG_LAB_VM_PORT": str(lab_vm.port)}
    )
    timings: dict[str, float] = {}
    converged = lab_vm.run(
        ["sh", "-c", f"test -f {DROPIN} && nft list table inet dsg_baseline >/dev/null"],
        check=False,
    )
    if converged.returncode != 0:  # run alone: converge it here
        first, recap = baseline(tools)
        timings["baseline.yml"] = first.seconds
        assert first.returncode == 0 and recap["failed"] == 0, first.explain()
    # converged (here, or by site.yml before): another run changes nothing
    second, recap = baseline(tools)
    timings["baseline.yml again"] = second.seconds
    assert second.returncode == 0 and recap["changed"] == 0, second.explain()

    # the firewall, as the kernel has it
    rules = lab_vm.sh("nft list table inet dsg_baseline")
    assert "type filter hook input priority filter; policy drop;" in rules, rules
    assert "tcp dport 22 ip saddr @ssh_v4 accept" in rules, rules
    assert "tcp dport 9100 ip saddr @metrics_v4 accept" in rules, rules
    assert rules.count("elements = { 10.0.2.2 }") == 2, rules  # ssh_v4 and metrics_v4
    assert lab_vm.sh("systemctl is-enabled nftables").strip() == "enabled"

    # sshd as a whole: passwords off for everyone, also outside the dsg Match block
    assert "passwordauthentication no" in lab_vm.sh("sshd -T").splitlines()
    for user in ("nobody", "alice"):
        eff = lab_vm.sh(f"sshd -T -C user={user},host=x,addr=10.0.2.2").splitlines()
        assert "passwordauthentication no" in eff and "kbdinteractiveauthentication no" in eff

    # services, mail into the queue, metrics from the textfile directory
    for unit in ("nftables", "nullmailer", "prometheus-node-exporter", "ssh"):
        assert lab_vm.run(["systemctl", "is-active", unit], check=False).stdout.strip() in (
            "active",
        ), unit
    assert 'ZED_EMAIL_ADDR="ops@lab.invalid"' in lab_vm.sh("cat /etc/zfs/zed.d/zed.rc")
    lab_vm.sh(
        "find /var/spool/nullmailer/queue -type f -delete; "
        "echo 'dsg baseline test' | mail -s 'dsg baseline test' root"
    )
    deadline = time.monotonic() + 30
    queued = ""
    while time.monotonic() < deadline and "ops@lab.invalid" not in queued:
        queued = lab_vm.sh("cat /var/spool/nullmailer/queue/* 2>/dev/null || true")
        time.sleep(1)
    assert "ops@lab.invalid" in queued and "dsg baseline test" in queued, queued
    lab_vm.sh("find /var/spool/nullmailer/queue -type f -delete")
    lab_vm.sh(
        "install -d /var/lib/prometheus/node-exporter && "
        "echo 'dsg_baseline_probe 1' > /var/lib/prometheus/node-exporter/dsg_baseline_probe.prom"
    )
    metrics = lab_vm.sh(
        "python3 -c 'import urllib.request; "
        'print(urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=30).read().decode())\''
    )
    lab_vm.sh("rm -f /var/lib/prometheus/node-exporter/dsg_baseline_probe.prom")
    assert "dsg_baseline_probe 1" in metrics and "node_textfile_scrape_error 0" in metrics

    # testinfra: the hardened state against the inventory
    suite = tools.run(
        "pytest", "tests/infra/test_baseline.py", f"--hosts=ansible://{HOST}",
        f"--ansible-inventory={INVENTORY}", "-p", "no:cacheprovider", "--tb=short", "-rs",
        timeout=900,
    )  # fmt: skip
    timings["testinfra baseline"] = suite.seconds
    assert suite.returncode == 0, suite.explain()
    assert "5 passed" in suite.stdout and "skipped" not in suite.stdout, suite.explain()

    # refusal 1: rules that would not admit the controller are never loaded
    before = lab_vm.sh("nft list table inet dsg_baseline")
    run, recap = baseline(
        tools,
        "--tags",
        "baseline_firewall",
        "-e",
        '{"dsg_baseline_ssh_networks": ["192.0.2.0/24"]}',
    )
    timings["refused: lock-out"] = run.seconds
    assert run.returncode != 0 and recap["failed"] == 1, run.explain()
    said = " ".join(run.stdout.split())  # the YAML callback folds long messages
    assert "which is in none of" in said and "would lock it out" in said, run.explain()
    assert lab_vm.sh("nft list table inet dsg_baseline") == before
    assert "192.0.2.0" not in lab_vm.sh("cat /etc/nftables.conf")

    # refusal 2: a drop-in `sshd -t` rejects is taken back; sshd is untouched
    dropin = lab_vm.sh(f"cat {DROPIN}")
    bad = '{"dsg_baseline_sshd_extra_settings": {"MaxAuthTries": "many"}}'
    run, recap = baseline(tools, "--tags", "baseline_sshd", "-e", bad)
    timings["refused: sshd -t"] = run.seconds
    assert run.returncode != 0 and recap["failed"] == 1, run.explain()
    assert "sshd -t refuses the configuration" in " ".join(run.stdout.split()), run.explain()
    assert lab_vm.sh(f"cat {DROPIN}") == dropin
    assert lab_vm.run(["sshd", "-t"], check=False).returncode == 0
    assert [f for f in lab_vm.sh("ls /etc/ssh/sshd_config.d").split() if "dsg-baseline" in f] == [
        "05-dsg-baseline.conf"
    ]  # no backup left behind

    report = "\n".join(f"{k}: {v:.1f} s" for k, v in timings.items())
    (lab_dir() / "vm" / "baseline-timings.txt").write_text(report + "\n")
    print(report)
