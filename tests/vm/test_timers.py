"""The roles' periodic jobs as systemd timers on the lab VM (role dsg_timers), for real.

After site.yml the VM (systemd) has timers, not cron files: the scrub of dsglab, the metrics
and health jobs, the backup and one restore drill per project, the pull the VM makes as its
own backup host and its drill, each Persistent= and with an OnFailure= reporter; Debian's
own monthly scrub skips the pool the role scrubs. Starting a job's service runs it as its
timer would: the metrics job writes dsg.prom and its log gets the same start and exit lines
as the cron form; the health job's WARNING/CRITICAL exit is not a failure. A job made to
fail (a drop-in replacing its command) starts dsg-job-failed@<unit>.service, which logs the
failure to the journal.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.ansible.conftest import AnsibleTools, ansible_tools  # noqa: F401 (fixture)
from tests.vm.conftest import LabVM
from tests.vm.test_zfs_encryption import ensure_converged

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.ansible]

TIMERS = (
    "dsg-zfs-scrub-dsglab",
    "dsg-monitoring-metrics",
    "dsg-monitoring-health",
    "dsg-backup-backup",
    "dsg-backup-restore-drill-lab-alpha",
    # the VM is also its own backup host: the pull named offsite and its drill
    "dsg-backup-host-pull-offsite",
    "dsg-backup-host-restore-drill-offsite-lab-alpha",
)
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def show(vm: LabVM, unit: str, prop: str) -> str:
    return vm.sh(f"systemctl show -p {prop} --value {unit}").strip()


def test_timers_run_their_jobs_and_report_failures(
    lab_vm: LabVM,
    ansible_tools: AnsibleTools,  # noqa: F811
) -> None:
    vm = lab_vm
    ensure_converged(vm, ansible_tools)

    listed = vm.sh("systemctl list-timers --all --no-legend --plain 'dsg-*'")
    for unit in TIMERS:
        assert f"{unit}.timer" in listed, listed
        assert show(vm, f"{unit}.timer", "UnitFileState") == "enabled"
        assert show(vm, f"{unit}.timer", "Persistent") == "yes"
        assert show(vm, f"{unit}.service", "OnFailure") == f"dsg-job-failed@{unit}.service.service"
    assert "dsg-zfs-scrub-dsgbackup.timer" not in listed  # declared scrub: false
    for cron in ("dsg-zfs-scrub", "dsg-monitoring", "dsg-backup"):
        assert vm.run(["test", "-e", f"/etc/cron.d/{cron}"], check=False).returncode != 0, cron
    # Debian's monthly scrub (/etc/cron.d/zfsutils-linux) skips the pool the role scrubs
    prop = "zfs get -H -o value org.debian:periodic-scrub"
    assert vm.sh(f"{prop} dsglab").strip() == "disable"
    assert vm.sh(f"{prop} dsgbackup").strip() == "auto"

    # the metrics job, started as its timer starts it (a oneshot: start returns when done)
    prom = "/var/lib/prometheus/node-exporter/dsg.prom"
    vm.sh(f"rm -f {prom}; systemctl start dsg-monitoring-metrics.service")
    assert show(vm, "dsg-monitoring-metrics.service", "Result") == "success"
    assert "dsg_metrics_generated_timestamp_seconds" in vm.sh(f"cat {prom}")
    tail = vm.sh("tail -n 50 /var/log/dsg/metrics.log").splitlines()
    assert re.fullmatch(rf"{STAMP} metrics exit 0", tail[-1]), tail
    assert any(re.fullmatch(rf"{STAMP} metrics start", ln) for ln in tail), tail

    # health: whatever the VM's state (OK, WARNING, CRITICAL), the run is not a failure
    vm.run(["systemctl", "start", "dsg-monitoring-health.service"], check=False)
    status = int(show(vm, "dsg-monitoring-health.service", "ExecMainStatus"))
    assert status in (0, 1, 2), status
    assert show(vm, "dsg-monitoring-health.service", "Result") == "success"

    # a failing run reaches the OnFailure reporter
    dropin = "/run/systemd/system/dsg-monitoring-metrics.service.d"
    since = vm.sh("date -u '+%Y-%m-%d %H:%M:%S'").strip()
    try:
        vm.sh(
            f"mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n'"
            f" > {dropin}/fail.conf && systemctl daemon-reload"
        )
        vm.run(["systemctl", "start", "dsg-monitoring-metrics.service"], check=False)
        assert show(vm, "dsg-monitoring-metrics.service", "Result") == "exit-code"
        journal = ""
        for _ in range(60):
            journal = vm.sh(f"journalctl -t dsg-job --since '{since}' --no-pager -o cat || true")
            if "dsg-monitoring-metrics.service failed on" in journal:
                break
            time.sleep(1)
        assert "dsg-monitoring-metrics.service failed on" in journal, journal
    finally:
        vm.sh(
            f"rm -rf {dropin} && systemctl daemon-reload && "
            "systemctl reset-failed dsg-monitoring-metrics.service || true"
        )
    assert show(vm, "dsg-monitoring-metrics.timer", "ActiveState") == "active"
