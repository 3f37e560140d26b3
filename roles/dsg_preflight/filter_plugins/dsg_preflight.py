"""The production gate's checks (role dsg_preflight), as pure functions of resolved variables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _covers(entry: Mapping[str, Any], dataset: str) -> bool:
    """A sanoid section covers the dataset itself, or a descendant when recursive."""
    name = str(entry.get("name") or "")
    if name == dataset:
        return True
    recursive = str(entry.get("recursive", "no")).lower() in ("yes", "true", "1", "zfs")
    return recursive and dataset.startswith(name + "/")


def _pruning_templates(templates: Mapping[str, Any]) -> set[str]:
    """Templates that prune (autoprune on): the ones that bound how long copies are kept."""
    out = set()
    for name, settings in (templates or {}).items():
        value = (settings or {}).get("autoprune", True)
        if value is True or str(value).lower() in ("yes", "true", "1"):
            out.add(name)
    return out


def _retention_problem(
    extra: Sequence[Mapping[str, Any]] | None,
    dataset: str,
    templates: Mapping[str, Any],
    where: str,
) -> str | None:
    pruning = _pruning_templates(templates)
    for entry in extra or []:
        if _covers(entry, dataset):
            if entry.get("template") in pruning:
                return None
            return (
                f"retention: the backup copies in {dataset} on {where} use sanoid template "
                f"{entry.get('template')!r}, which is unknown or does not prune (autoprune): "
                "nothing bounds how long copies are kept"
            )
    return (
        f"retention: no dsg_retention_extra_datasets entry on {where} covers the backup copies "
        f"in {dataset} (e.g. {{name: {dataset}, template: dsg_backup, recursive: 'yes'}})"
    )


def dsg_preflight_problems(
    groups: Sequence[str],
    backup_target: str = "",
    backup_target_host: str = "",
    alerts: Mapping[str, Any] | None = None,
    projects: Sequence[Mapping[str, Any]] | None = None,
    templates: Mapping[str, Any] | None = None,
    default_template: str = "",
    own_extra: Sequence[Mapping[str, Any]] | None = None,
    remote: Mapping[str, Any] | None = None,
) -> list[str]:
    """Why a host may not be deployed in a gated environment (empty: it may).

    `remote` describes the backup host when `backup_target_host` is set: {"name": inventory
    name or "", "groups": [...], "extra": its dsg_retention_extra_datasets}. Messages name
    variables, never their values (alerts carry secrets).
    """
    problems: list[str] = []
    templates = templates or {}
    if "dsg_servers" in groups:
        if not backup_target:
            problems.append(
                "backup: dsg_backup_target is empty, so no backups would be scheduled (set it, "
                "and dsg_backup_target_host for a backup host)"
            )
        alerts = alerts or {}
        email = alerts.get("email") or {}
        webhook = alerts.get("webhook") or {}
        to = email.get("to") if isinstance(email, Mapping) else None
        url = webhook.get("url") if isinstance(webhook, Mapping) else None
        if not (isinstance(to, list) and any(to)) and not (isinstance(url, str) and url.strip()):
            problems.append(
                "alerts: dsg_monitoring_alerts has no channel (email.to or webhook.url), so "
                "nobody would hear of a failed backup or a full pool"
            )
        for p in projects or []:
            if (p.get("state") or "present") != "present":
                continue
            name = p.get("retention") or default_template
            if name not in templates:
                problems.append(
                    f"retention: project {p.get('name')} uses sanoid template {name!r}, "
                    f"which is not in dsg_retention_templates"
                )
        if backup_target and not backup_target_host:
            problem = _retention_problem(own_extra, backup_target, templates, "this host")
            if problem:
                problems.append(problem)
        elif backup_target:
            remote = remote or {}
            host = remote.get("name") or ""
            if not host:
                problems.append(
                    f"retention: the backup host of dsg_backup_target_host is not a host of "
                    f"this inventory, so the retention of the copies in {backup_target} there "
                    "is not managed (add it to dsg_backup_hosts)"
                )
            elif "dsg_backup_hosts" not in (remote.get("groups") or []):
                problems.append(
                    f"retention: the backup host {host} is not in dsg_backup_hosts, so nothing "
                    f"manages the retention of the copies in {backup_target} there"
                )
            else:
                problem = _retention_problem(remote.get("extra"), backup_target, templates, host)
                if problem:
                    problems.append(problem)
    if "dsg_backup_hosts" in groups and "dsg_servers" not in groups:
        pruning = _pruning_templates(templates)
        if not any(e.get("template") in pruning for e in own_extra or []):
            problems.append(
                "retention: this backup host has no dsg_retention_extra_datasets entry with a "
                "pruning sanoid template for the copies it receives"
            )
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"dsg_preflight_problems": dsg_preflight_problems}
