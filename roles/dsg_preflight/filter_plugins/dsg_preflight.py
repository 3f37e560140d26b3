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


def _host_of(destination: str) -> str:
    """The host of an ssh destination ([user@]host, [v6])."""
    host = str(destination or "").rpartition("@")[2]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _push_targets(
    backup_target: str, backup_target_host: str, targets: Sequence[Mapping[str, Any]] | None
) -> list[tuple[str, str, str]]:
    """(label, parent dataset, host) of every push target; host "" is this host."""
    out = []
    if backup_target:
        out.append(("dsg_backup_target", backup_target, _host_of(backup_target_host)))
    for t in targets or []:
        label = f"dsg_backup_targets {t.get('name') or '?'}"
        out.append((label, str(t.get("target") or ""), _host_of(str(t.get("host") or ""))))
    return out


def _server_backups(
    host: str,
    push: list[tuple[str, str, str]],
    pull_keys: Sequence[Mapping[str, Any]],
    templates: Mapping[str, Any],
    own_extra: Sequence[Mapping[str, Any]] | None,
    remote: Mapping[str, Any] | None,
    inventory: Mapping[str, Mapping[str, Any]] | None,
) -> list[str]:
    """A dsg server: every push target and every pull has a backup host that keeps the
    copies under pruning retention (and, for a pull, a backup host that does pull)."""
    problems: list[str] = []
    for label, target, where in push:
        if not target:
            problems.append(f"backup: {label} has no target dataset")
            continue
        if not where:
            problem = _retention_problem(own_extra, target, templates, "this host")
            if problem:
                problems.append(problem)
            continue
        info = (inventory or {}).get(where)
        if info is None and label == "dsg_backup_target" and remote:
            info = remote if remote.get("name") == where else None
        if info is None:
            problems.append(
                f"retention: the backup host {where} of {label} is not a host of this "
                f"inventory, so the retention of the copies in {target} there is not managed "
                "(add it to dsg_backup_hosts)"
            )
        elif "dsg_backup_hosts" not in (info.get("groups") or []):
            problems.append(
                f"retention: the backup host {where} is not in dsg_backup_hosts, so nothing "
                f"manages the retention of the copies in {target} there"
            )
        else:
            problem = _retention_problem(info.get("extra"), target, templates, where)
            if problem:
                problems.append(problem)
    for key in pull_keys:
        name = str(key.get("name") or "?")
        source = str(key.get("from_host") or "")
        if not source:
            problems.append(
                f"retention: the pull key {name} is given as a bare key, so its backup host is "
                "not a host of this inventory and the retention of its copies is not managed "
                "(give from_host: the backup host in dsg_backup_hosts)"
            )
            continue
        info = (inventory or {}).get(source)
        if info is None or "dsg_backup_hosts" not in (info.get("groups") or []):
            problems.append(
                f"backup: the pull key {name} names {source}, which is not a host of this "
                "inventory's dsg_backup_hosts: nothing would pull"
            )
            continue
        pulls = [
            p for p in info.get("pulls") or []
            if str(p.get("name") or "") == name and str(p.get("from_inventory_host") or "") == host
        ]  # fmt: skip
        if not pulls:
            problems.append(
                f"backup: the backup host {source} has no pull {name} from {host} "
                "(dsg_backup_host_pulls with name and from_inventory_host): nothing would pull"
            )
            continue
        problem = _retention_problem(
            info.get("extra"), str(pulls[0].get("to") or ""), templates, source
        )
        if problem:
            problems.append(problem)
    # the other way round: a backup host of the inventory pulling from here needs a key here
    for source, info in sorted((inventory or {}).items()):
        for p in info.get("pulls") or []:
            name = str(p.get("name") or "?")
            if str(p.get("from_inventory_host") or "") != host:
                continue
            if not any(
                str(k.get("name") or "") == name and str(k.get("from_host") or "") == source
                for k in pull_keys
            ):
                problems.append(
                    f"backup: {source} pulls {name} from here, but dsg_backup_pull_keys has no "
                    f"entry {{name: {name}, from_host: {source}}}, so the pull account would "
                    "refuse it"
                )
    return problems


def _backup_host_problems(
    host: str,
    pulls: Sequence[Mapping[str, Any]],
    templates: Mapping[str, Any],
    own_extra: Sequence[Mapping[str, Any]] | None,
    inventory: Mapping[str, Mapping[str, Any]] | None,
) -> list[str]:
    """A backup host: what it receives is pruned, each pull's copies in particular. (That a
    pull from a server of the inventory has that server's key is checked on the server.)"""
    problems: list[str] = []
    pruning = _pruning_templates(templates)
    if not any(e.get("template") in pruning for e in own_extra or []):
        problems.append(
            "retention: this backup host has no dsg_retention_extra_datasets entry with a "
            "pruning sanoid template for the copies it receives"
        )
    for p in pulls:
        name = str(p.get("name") or "?")
        to = str(p.get("to") or "")
        problem = _retention_problem(own_extra, to, templates, "this host") if to else None
        if problem and problem not in problems:
            problems.append(f"pull {name}: {problem}")
    return problems


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
    targets: Sequence[Mapping[str, Any]] | None = None,
    pull_keys: Sequence[Mapping[str, Any]] | None = None,
    pulls: Sequence[Mapping[str, Any]] | None = None,
    inventory: Mapping[str, Mapping[str, Any]] | None = None,
    host: str = "",
) -> list[str]:
    """Why a host may not be deployed in a gated environment (empty: it may).

    Every backup target counts, push or pull: `backup_target` (the unnamed push target, on
    `backup_target_host` or here), `targets` (dsg_backup_targets) and `pull_keys`
    (dsg_backup_pull_keys: backup hosts that pull from this one). `inventory` describes the
    inventory's hosts by name: {"groups": [...], "extra": their dsg_retention_extra_datasets,
    "pulls": their dsg_backup_host_pulls}; `remote`
    (the older form) describes only the unnamed target's host. `pulls` are this host's own
    dsg_backup_host_pulls. Messages name variables, never their values (alerts carry secrets).
    """
    problems: list[str] = []
    templates = templates or {}
    push = _push_targets(backup_target, backup_target_host, targets)
    if "dsg_servers" in groups:
        if not push and not pull_keys:
            problems.append(
                "backup: no backup target - dsg_backup_target, dsg_backup_targets and "
                "dsg_backup_pull_keys are all empty, so no backups would be taken (push: set "
                "dsg_backup_target and dsg_backup_target_host; pull: dsg_backup_pull_keys, with "
                "the backup host's dsg_backup_host_pulls)"
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
        problems += _server_backups(
            host, push, pull_keys or [], templates, own_extra, remote, inventory
        )
    if "dsg_backup_hosts" in groups and "dsg_servers" not in groups:
        problems += _backup_host_problems(host, pulls or [], templates, own_extra, inventory)
    elif "dsg_backup_hosts" in groups and pulls:
        # a host that is both (development, the lab VM): its pulls' copies and accounts
        for why in _backup_host_problems(host, pulls, templates, own_extra, inventory):
            if why not in problems and not why.startswith("retention: this backup host"):
                problems.append(why)
    return problems


def dsg_preflight_inventory(
    hosts: Sequence[str],
    groups: Sequence[Sequence[str]],
    extra: Sequence[Sequence[Mapping[str, Any]]],
    pulls: Sequence[Sequence[Mapping[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """The `inventory` argument above from per-host lists, each resolved in Jinja with
    extract (group_names, dsg_retention_extra_datasets, dsg_backup_host_pulls), in the order
    of `hosts`. (ansible-core 2.19 resolves another host's variable without `hostvars`, so
    its dsg_backup_pull_keys cannot be read from here: keys are checked on their server.)"""
    out: dict[str, dict[str, Any]] = {}
    for name, g, e, p in zip(hosts, groups, extra, pulls, strict=True):
        out[str(name)] = {"groups": list(g or []), "extra": list(e or []), "pulls": list(p or [])}
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "dsg_preflight_problems": dsg_preflight_problems,
            "dsg_preflight_inventory": dsg_preflight_inventory,
        }
