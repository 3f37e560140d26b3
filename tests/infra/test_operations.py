"""Monitoring and backup schedules (roles dsg_monitoring, dsg_backup) against the inventory."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml

from tests.infra import declared as decl
from tests.infra.conftest import check_path, need_group, report

# crontab(5): NAME=value lines, then "<5 fields or @nickname> <user> <command>".
ENV_LINE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*=")


def cron_line(job: dict[str, Any]) -> str:
    """The line the roles' templates write for a job (cron needs % written \\%)."""
    stamp = f"$(date -u +%Y-%m-%dT%H:%M:%SZ) {job['name']}"
    argv = " ".join(shlex.quote(a) for a in job["argv"])
    command = (
        f'{{ echo "{stamp} start"; flock -n -E 75 {shlex.quote(job["lock"])} {argv}; '
        f'echo "{stamp} exit $?"; }} >>{shlex.quote(job["log"])} 2>&1'
    )
    return f"{job['schedule']} root {command.replace('%', chr(92) + '%')}"


def check_cron(problems: list[str], host: Any, path: str, jobs: list[dict[str, Any]]) -> None:
    """`path` root:root 0644 with exactly the declared jobs (and a PATH that finds zfs)."""
    check_path(problems, host, path, "regular", "root", "root", 0o644)
    f = host.file(path)
    if not f.exists:
        return
    lines = [ln.strip() for ln in f.content_string.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    env = dict(ln.split("=", 1) for ln in lines if ENV_LINE.match(ln))
    got = [ln for ln in lines if not ENV_LINE.match(ln)]
    want = [cron_line(job) for job in jobs]
    path_dirs = env.get("PATH", "").split(":")
    if not {"/usr/sbin", "/usr/local/bin"} <= set(path_dirs):
        problems.append(f"{path}: PATH={env.get('PATH')!r} finds neither zfs nor dsg")
    for job, line in zip(jobs, want, strict=True):
        if line not in got:
            problems.append(
                f"{path}: the {job['name']} job at {job['schedule']!r} is missing or differs; "
                f"the inventory declares: {line}"
            )
    for line in got:
        if line not in want:
            problems.append(f"{path}: undeclared job line {line!r}")


def uses_timers(host: Any, scheduler: str) -> bool:
    """The roles' choice: systemd timers where systemd runs (scheduler auto), or as set."""
    if scheduler in ("systemd", "cron"):
        return scheduler == "systemd"
    return host.file("/run/systemd/system").is_directory


def check_timers(
    problems: list[str], host: Any, prefix: str, jobs: list[dict[str, Any]],
    success: dict[str, list[int]] | None = None,
) -> None:  # fmt: skip
    """Each job's timer (OnCalendar= from its schedule, Persistent=) enabled and active, and
    its service running exactly the declared command (role dsg_timers)."""
    t = decl.timers
    for job in jobs:
        unit = t.dsg_timers_unit_name(prefix, job["name"])
        for suffix in ("service", "timer"):
            check_path(problems, host, f"/etc/systemd/system/{unit}.{suffix}", "regular",
                       "root", "root", 0o644)  # fmt: skip
        timer = host.file(f"/etc/systemd/system/{unit}.timer")
        if timer.exists:
            got = [ln for ln in timer.content_string.splitlines() if ln.startswith("OnCalendar=")]
            want = [f"OnCalendar={c}" for c in t.dsg_timers_oncalendar(job["schedule"])]
            if got != want:
                problems.append(f"{unit}.timer: {got}, the inventory declares {want}")
            if "Persistent=true" not in timer.content_string:
                problems.append(f"{unit}.timer: not Persistent=true")
        service = host.file(f"/etc/systemd/system/{unit}.service")
        if service.exists:
            lock = ["/usr/bin/flock", "-n", "-E", "75", job["lock"]] if job.get("lock") else []
            want = "ExecStart=" + t.dsg_timers_exec(lock + job["argv"])
            if want not in service.content_string.splitlines():
                problems.append(f"{unit}.service: the {job['name']} job differs; declared: {want}")
            if "OnFailure=dsg-job-failed@%n.service" not in service.content_string:
                problems.append(f"{unit}.service: no OnFailure=")
            codes = {75, *(success or {}).get(job["name"], [])}
            line = next((ln for ln in service.content_string.splitlines()
                         if ln.startswith("SuccessExitStatus=")), "")  # fmt: skip
            if {int(c) for c in line.split("=", 1)[-1].split()} != codes:
                problems.append(f"{unit}.service: {line!r}, expected exit codes {sorted(codes)}")
        r = host.run("systemctl is-enabled %s.timer; systemctl is-active %s.timer", unit, unit)
        if r.stdout.split() != ["enabled", "active"]:
            problems.append(f"{unit}.timer: {' '.join(r.stdout.split())}, not enabled and active")


def check_schedule(
    problems: list[str], host: Any, section: dict[str, Any], prefix: str,
    success: dict[str, list[int]] | None = None,
) -> None:  # fmt: skip
    if uses_timers(host, section.get("scheduler", "auto")):
        if host.file(section["cron_file"]).exists:
            problems.append(f"{section['cron_file']}: present beside the systemd timers")
        check_timers(problems, host, prefix, section["jobs"], success)
    else:
        check_cron(problems, host, section["cron_file"], section["jobs"])


def test_monitoring_config_and_schedule(host, declared):
    need_group(declared, "dsg_servers")
    mon = declared["monitoring"]
    problems: list[str] = []
    cfg = mon["config_file"]
    check_path(
        problems, host, cfg, "regular", "root", mon["config_group"], int(mon["config_mode"], 8)
    )
    f = host.file(cfg)
    if f.exists:
        try:
            got = yaml.safe_load(f.content_string)
        except yaml.YAMLError as e:
            problems.append(f"{cfg}: not YAML: {e}")
        else:
            want = mon["health_document"]
            for key in sorted(set(got or {}) | set(want)):
                if (got or {}).get(key, "<missing>") != want.get(key, "<undeclared>"):
                    problems.append(
                        f"{cfg}: {key} is {(got or {}).get(key, '<missing>')!r}, the inventory "
                        f"declares {want.get(key, '<nothing>')!r}"
                    )
    check_schedule(problems, host, mon, "dsg-monitoring", {"health": [1, 2]})
    check_path(problems, host, mon["textfile_dir"], "directory", "root", "root", 0o755)
    check_path(problems, host, mon["state_dir"], "directory", "root", "root", 0o750)
    for job in mon["jobs"]:
        check_path(problems, host, job["log"], "regular", "root", "root", 0o640)
    if mon["install_node_exporter"] and not host.service("prometheus-node-exporter").is_running:
        problems.append("prometheus-node-exporter is not running")
    report(problems, "monitoring")


def test_backup_schedule_and_datasets(host, declared):
    need_group(declared, "dsg_servers")
    bk = declared["backup"]
    problems: list[str] = []
    if not bk["target"]:
        if host.file(bk["cron_file"]).exists:
            problems.append(f"{bk['cron_file']}: present, but no backup target is declared")
        report(problems, "backups")
        return
    check_schedule(problems, host, bk, "dsg-backup")
    datasets = []
    if bk["local"] and bk["create_target"]:
        datasets.append(bk["target"])
    if any("restore-drill" in job["argv"] for job in bk["jobs"]):
        datasets.append(bk["drill_scratch"])
    for ds in datasets:
        if host.run("zfs list -H -o name %s", ds).rc != 0:
            problems.append(f"dataset {ds}: missing")
    if bk["textfile_dir"]:
        check_path(problems, host, bk["textfile_dir"], "directory", "root", "root", 0o755)
    for log in sorted({job["log"] for job in bk["jobs"]}):
        check_path(problems, host, log, "regular", "root", "root", 0o640)
    report(problems, "backups")
