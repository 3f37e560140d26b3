"""Filters of the dsg_monitoring role: every backup target of this server, for the health
check and the metrics (HealthConfig.replication_targets in engine/dsg/admin/health.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def dsg_monitoring_replication_targets(
    backup_target: str,
    backup_target_host: str = "",
    targets: Sequence[Mapping[str, Any]] | None = None,
    pull_keys: Sequence[Mapping[str, Any]] | None = None,
    pull_projects: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The targets measured from this primary's holds: the unnamed push target when it is on
    another host (a local one is compared directly: backup_target), each named push target
    (dsg_backup_targets) and each pull (dsg_backup_pull_keys: a backup host pulls)."""
    out: list[dict[str, Any]] = []
    if backup_target and backup_target_host:
        out.append({"target": str(backup_target), "mode": "push"})
    for t in targets or []:
        entry: dict[str, Any] = {"name": str(t["name"]), "mode": "push"}
        if t.get("projects"):
            entry["projects"] = [str(p) for p in t["projects"]]
        out.append(entry)
    for k in pull_keys or []:
        entry = {"name": str(k["name"]), "mode": "pull"}
        if pull_projects:
            entry["projects"] = [str(p) for p in pull_projects]
        out.append(entry)
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"dsg_monitoring_replication_targets": dsg_monitoring_replication_targets}
