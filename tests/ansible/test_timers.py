"""systemd timers for the roles' periodic jobs (role dsg_timers).

Where systemd runs, dsg_zfs_host's scrubs, dsg_monitoring's jobs and dsg_backup's jobs are
timers with Persistent= and OnFailure= instead of cron files (the lab host has no systemd
and keeps its cron files; the VM tier runs the timers for real). Here: every cron schedule
the roles accept elapses at the same times as its OnCalendar= translation (checked against
systemd-analyze, not against the translator), and the units the role writes pass
`systemd-analyze verify`, are idempotent, and those of jobs that are gone are removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from tests.ansible._load import load

pytestmark = pytest.mark.ansible

timers = load("dsg_timers/filter_plugins/dsg_timers.py")
scrub = load("dsg_zfs_host/filter_plugins/dsg_zfs_host_scrub.py")
BASE = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
SCHEDULES = [
    "*/5 * * * *", "*/10 * * * *", "17 * * * *", "43 4 * * 0", "0 3 1 * *", "@hourly",
    "@daily", "@weekly", "@monthly", "24 0 8-14 * 0", "0 9-17/2 * * 1-5", "30 2 * jan,jul sun",
    "5,35 */6 1,15 * *", "0 0 * * 7",
]  # fmt: skip


def cron_times(schedule: str, count: int) -> list[datetime]:
    """The next `count` minutes after BASE that the cron schedule matches (crontab(5),
    brute force, independent of the translator)."""
    text = timers.NICKNAMES.get(schedule, schedule)
    minute, hour, dom, month, dow = text.split()
    month = timers._names(month, timers.MONTHS)
    dow = timers._names(dow, timers.DOW_NUMBERS)

    def values(field: str, low: int, high: int) -> set[int]:
        out: set[int] = set()
        for part in field.split(","):
            out.update(timers._expand(part, low, high))
        return out

    mins, hours = values(minute, 0, 59), values(hour, 0, 23)
    doms, months = values(dom, 1, 31), values(month, 1, 12)
    dows = {d % 7 for d in values(dow, 0, 7)}
    out, t = [], BASE
    while len(out) < count:
        t += timedelta(minutes=1)
        if t.minute not in mins or t.hour not in hours or t.month not in months:
            continue
        day_ok, dow_ok = t.day in doms, (t.isoweekday() % 7) in dows
        # cron: with both day fields restricted, either one matching is enough
        either = dom != "*" and dow != "*"
        if (day_ok or dow_ok) if either else (day_ok and dow_ok):
            out.append(t)
    return out


def systemd_times(expressions: list[str], count: int) -> list[datetime]:
    got: set[datetime] = set()
    for expr in expressions:
        proc = subprocess.run(
            ["systemd-analyze", "calendar", f"--iterations={count}",
             f"--base-time={BASE:%Y-%m-%d %H:%M:%S} UTC", expr],
            capture_output=True, text=True, timeout=30, env={**os.environ, "TZ": "UTC"},
        )  # fmt: skip
        assert proc.returncode == 0, f"{expr}: {proc.stderr}"
        for m in re.finditer(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", proc.stdout):
            got.add(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC))
    return sorted(got)[:count]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_oncalendar_elapses_when_cron_would(schedule):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    expressions = timers.dsg_timers_oncalendar(schedule)
    assert systemd_times(expressions, 8) == cron_times(schedule, 8), expressions


def test_schedules_without_a_timer_form_are_refused():
    for bad in ("@reboot", "* * *", "61 * * * *", "0 0 0 * *", "*/0 * * * *"):
        with pytest.raises(timers.ScheduleError):
            timers.dsg_timers_oncalendar(bad)


def test_exec_words_and_unit_names():
    assert (
        timers.dsg_timers_exec(["/usr/bin/dsg", "admin", "health"]) == "/usr/bin/dsg admin health"
    )
    assert timers.dsg_timers_exec(["env", "X=ssh -i /k", "50%", "$HOME", 'a"b']) == (
        'env "X=ssh -i /k" 50%% "$$HOME" "a\\"b"'
    )
    assert timers.dsg_timers_unit_name("dsg-backup", "restore-drill lab-alpha") == (
        "dsg-backup-restore-drill-lab-alpha"
    )
    jobs = scrub.dsg_zfs_host_scrub_jobs(
        [{"name": "tank"}, {"name": "backup", "scrub": False}, {"name": "a", "scrub": True}],
        "0 3 1 * *",
    )
    assert [j["name"] for j in jobs] == ["a", "tank"]
    assert jobs[1]["argv"][:2] == ["/bin/sh", "-c"] and "zpool scrub tank" in jobs[1]["argv"][2]


def render(ansible_tools, tmp_path, jobs) -> None:
    play = tmp_path / "timers.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role: {name: dsg_timers}\n"
    )
    extra = {
        "dsg_timers_prefix": "dsg-test",
        "dsg_timers_unit_dir": str(tmp_path / "units"),
        "dsg_timers_manage_units": False,
        "dsg_timers_jobs": jobs,
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    run = ansible_tools.run(
        "ansible-playbook", "-i", "localhost,", "-c", "local", str(play), "-e", json.dumps(extra)
    )
    assert run.returncode == 0, run.explain()
    return run


def test_units_verify_are_idempotent_and_gone_jobs_are_removed(ansible_tools, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    if os.geteuid() != 0:
        pytest.skip("writes root-owned unit files: needs root")
    (tmp_path / "units").mkdir()
    log = tmp_path / "metrics.log"
    jobs = [
        {"name": "metrics", "schedule": "*/5 * * * *", "lock": "/run/lock/dsg-test.lock",
         "log": str(log), "argv": ["/bin/echo", "50% done", "$HOME"]},
        {"name": "restore-drill lab-alpha", "schedule": "24 0 8-14 * 0",
         "argv": ["/bin/true"], "success_exit_status": [1, 2]},
    ]  # fmt: skip
    first = render(ansible_tools, tmp_path, jobs)
    assert first.recap()["localhost"]["changed"] == 3, first.explain()  # reporter, services, timers
    units = tmp_path / "units"
    names = sorted(p.name for p in units.iterdir())
    assert names == [
        "dsg-job-failed@.service", "dsg-test-metrics.service", "dsg-test-metrics.timer",
        "dsg-test-restore-drill-lab-alpha.service", "dsg-test-restore-drill-lab-alpha.timer",
    ]  # fmt: skip
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(units / n) for n in names)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    service = (units / "dsg-test-metrics.service").read_text()
    assert "ExecStart=/usr/bin/flock -n -E 75 /run/lock/dsg-test.lock /bin/echo " in service
    assert '"50%% done" "$$HOME"' in service
    assert f"StandardOutput=append:{log}" in service and "SuccessExitStatus=75\n" in service
    assert "OnFailure=dsg-job-failed@%n.service" in service
    drill = (units / "dsg-test-restore-drill-lab-alpha.service").read_text()
    assert "SuccessExitStatus=75 1 2" in drill and "StandardOutput" not in drill
    timer = (units / "dsg-test-restore-drill-lab-alpha.timer").read_text()
    assert "OnCalendar=*-*-08..14 00:24:00\nOnCalendar=Sun *-*-* 00:24:00\n" in timer
    assert "Persistent=true" in timer

    again = render(ansible_tools, tmp_path, jobs)
    assert again.recap()["localhost"]["changed"] == 0, again.explain()

    # a unit of another owner with a similar name is never touched
    (units / "dsg-test-other.timer").write_text("[Timer]\nOnCalendar=daily\n")
    fewer = render(ansible_tools, tmp_path, jobs[:1])
    assert fewer.recap()["localhost"]["changed"] >= 1, fewer.explain()
    assert sorted(p.name for p in units.iterdir()) == [
        "dsg-job-failed@.service", "dsg-test-metrics.service", "dsg-test-metrics.timer",
        "dsg-test-other.timer",
    ]  # fmt: skip
