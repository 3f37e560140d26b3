"""Filters of the dsg_backup role: the restore-drill cron jobs, one per project."""

from __future__ import annotations

from typing import Any


def dsg_backup_drill_jobs(
    projects: list[str],
    schedule: str,
    schedules: dict[str, str],
    lock_dir: str,
    log: str,
    dsg: str,
    target: str,
    scratch: str,
    textfile_dir: str,
) -> list[dict[str, Any]]:
    """[{name, schedule, lock, log, argv}] for `dsg admin restore-drill` of each project."""
    jobs = []
    for project in projects:
        argv = [dsg, "admin", "restore-drill", project, "--from", target, "--scratch", scratch]
        if textfile_dir:
            argv += ["--textfile-dir", textfile_dir]
        jobs.append(
            {
                "name": f"restore-drill {project}",
                "schedule": (schedules or {}).get(project, schedule),
                "lock": f"{lock_dir}/dsg-restore-drill-{project}.lock",
                "log": log,
                "argv": argv,
            }
        )
    return jobs


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"dsg_backup_drill_jobs": dsg_backup_drill_jobs}
