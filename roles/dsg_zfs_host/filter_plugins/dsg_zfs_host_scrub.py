"""The scrub jobs of dsg_zfs_host's pools, for systemd timers (role dsg_timers)."""

from __future__ import annotations

from typing import Any

# A pool already scrubbing (or resilvering) is left alone, as in the cron file.
COMMAND = (
    "zpool status {pool} | grep -Eq 'scrub in progress|resilver in progress' || zpool scrub {pool}"
)


def dsg_zfs_host_scrub_jobs(pools: list[dict[str, Any]], schedule: str) -> list[dict[str, Any]]:
    """One job per pool in the scrub schedule (`scrub` not false), sorted by name."""
    names = sorted(p["name"] for p in pools if p.get("scrub", True) is not False)
    return [
        {"name": n, "schedule": schedule, "argv": ["/bin/sh", "-c", COMMAND.format(pool=n)]}
        for n in names
    ]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"dsg_zfs_host_scrub_jobs": dsg_zfs_host_scrub_jobs}
