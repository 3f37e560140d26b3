"""Filters of the dsg_backup role: the targets (the single-target variables and the
named list as one list), their jobs, and the pull account's authorized_keys lines."""

from __future__ import annotations

import re
from typing import Any

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
DATASET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)*")
HOST_RE = re.compile(r"[A-Za-z0-9_.@:\[\]-]*")
KEY_RE = re.compile(
    r"(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa|sk-ssh-ed25519@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}( [ -~]*)?"
)
PUSH_KEYS = {
    "name", "target", "host", "prefix", "ssh_command", "projects", "schedule", "drill",
    "drill_projects", "drill_schedule", "drill_schedules", "scratch", "create",
    "properties",
}  # fmt: skip


class TargetError(ValueError):
    pass


def dsg_backup_targets(
    legacy: list[dict[str, Any]],
    named: list[dict[str, Any]],
    schedule: str,
    drill_schedule: str,
    drill_projects: list[str],
) -> list[dict[str, Any]]:
    """The single-target variables (`legacy`: zero or one unnamed target, as before) and
    the named targets of dsg_backup_targets, each with every key filled in and checked."""
    out = [dict(t) for t in legacy or []]
    seen: set[str] = set()
    for raw in named or []:
        t = dict(raw)
        unknown = set(t) - PUSH_KEYS
        name = str(t.get("name", ""))
        if unknown:
            raise TargetError(f"dsg_backup_targets {name or '?'}: unknown keys {sorted(unknown)}")
        if not NAME_RE.fullmatch(name):
            raise TargetError(
                f"dsg_backup_targets: name {name!r} must be 1-32 of a-z, 0-9, '-' (it names "
                "the hold dsg-backup-NAME, the jobs and the metrics files)"
            )
        if name in seen:
            raise TargetError(f"dsg_backup_targets: {name} is declared twice")
        seen.add(name)
        target = str(t.get("target", ""))
        if not DATASET_RE.fullmatch(target):
            raise TargetError(f"dsg_backup_targets {name}: target {target!r} is not a dataset")
        host = str(t.get("host") or "")
        if not HOST_RE.fullmatch(host):
            raise TargetError(f"dsg_backup_targets {name}: host {host!r} is not [user@]host")
        local = not host
        projects = list(t.get("projects") or [])
        drill = bool(t.get("drill", local))
        if drill and not local:
            raise TargetError(
                f"dsg_backup_targets {name}: drills read the copy where it is; drill on the "
                f"backup host {host} (role dsg_backup_host), not here (drill: false)"
            )
        scratch = str(t.get("scratch") or f"{target.split('/')[0]}/dsg-drill")
        for ds in (scratch,):
            if not DATASET_RE.fullmatch(ds):
                raise TargetError(f"dsg_backup_targets {name}: scratch {ds!r} is not a dataset")
        if drill and (scratch == target or scratch.startswith(target + "/")):
            raise TargetError(f"dsg_backup_targets {name}: scratch {scratch} inside the target")
        for p in projects + list(t.get("drill_projects") or []):
            if not PROJECT_RE.fullmatch(str(p)):
                raise TargetError(f"dsg_backup_targets {name}: {p!r} is not a project name")
        out.append(
            {
                "name": name,
                "target": target,
                "host": host,
                "prefix": str(t.get("prefix") or ""),
                "ssh_command": str(t.get("ssh_command") or ""),
                "projects": projects,
                "schedule": str(t.get("schedule") or schedule),
                "local": local,
                "create": bool(t.get("create", True)),
                "properties": dict(t.get("properties") or {}),
                "drill": drill,
                "drill_projects": list(t.get("drill_projects") or projects or drill_projects),
                "drill_schedule": str(t.get("drill_schedule") or drill_schedule),
                "drill_schedules": dict(t.get("drill_schedules") or {}),
                "scratch": scratch,
            }
        )
    return out


def dsg_backup_target_jobs(
    targets: list[dict[str, Any]],
    lock_dir: str,
    log_dir: str,
    dsg: str,
    access_file: str,
    textfile_dir: str,
) -> list[dict[str, Any]]:
    """[{name, schedule, lock, log, argv}]: per target its backup job and a drill per
    project. The unnamed target's jobs are named and locked as they always were."""
    jobs: list[dict[str, Any]] = []
    for t in targets:
        name = t.get("name") or ""
        suffix = f" {name}" if name else ""
        argv = (["env", f"DSG_SSH_COMMAND={t['ssh_command']}"] if t["ssh_command"] else []) + [
            dsg, "admin", "backup", "--to", t["target"],
        ]  # fmt: skip
        argv += ["--to-host", t["host"]] if t["host"] else []
        argv += ["--to-prefix", t["prefix"]] if t["prefix"] else []
        argv += ["--name", name] if name else []
        argv += ["--access-file", access_file]
        argv += ["--textfile-dir", textfile_dir] if textfile_dir else []
        argv += list(t["projects"])
        jobs.append(
            {
                "name": f"backup{suffix}",
                "schedule": t["schedule"],
                "lock": f"{lock_dir}/dsg-backup{'-' + name if name else ''}.lock",
                "log": f"{log_dir}/backup.log",
                "argv": argv,
            }
        )
        if t["drill"]:
            jobs += dsg_backup_drill_jobs(
                t["drill_projects"], t["drill_schedule"], t["drill_schedules"], lock_dir,
                f"{log_dir}/restore-drill.log", dsg, t["target"], t["scratch"], textfile_dir,
                name,
            )  # fmt: skip
    return jobs


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
    name: str = "",
) -> list[dict[str, Any]]:
    """[{name, schedule, lock, log, argv}] for `dsg admin restore-drill` of each project."""
    jobs = []
    for project in projects:
        argv = [dsg, "admin", "restore-drill", project, "--from", target, "--scratch", scratch]
        if name:
            argv += ["--name", name]
        if textfile_dir:
            argv += ["--textfile-dir", textfile_dir]
        tag = f"{name}-" if name else ""
        jobs.append(
            {
                "name": f"restore-drill {name + ' ' if name else ''}{project}",
                "schedule": (schedules or {}).get(project, schedule),
                "lock": f"{lock_dir}/dsg-restore-drill-{tag}{project}.lock",
                "log": log,
                "argv": argv,
            }
        )
    return jobs


def dsg_backup_pull_lines(
    keys: list[dict[str, Any]],
    public_keys: dict[str, str],
    projects: list[str],
    parent: str,
    dsg: str,
) -> list[str]:
    """The pull account's authorized_keys lines: per key, a forced `dsg admin
    send-for-backup --name N --project P=<parent>/P ...` and no pty, forwarding or rc.
    `public_keys` maps a key's name to its line when the entry names a from_host."""
    if not re.fullmatch(r"/[A-Za-z0-9_./-]+", dsg or ""):
        raise TargetError(f"dsg_backup_pull: the dsg command {dsg!r} must be a plain path")
    if not DATASET_RE.fullmatch(parent or ""):
        raise TargetError(f"dsg_backup_pull: the project parent {parent!r} is not a dataset")
    for p in projects:
        if not PROJECT_RE.fullmatch(str(p)):
            raise TargetError(f"dsg_backup_pull: {p!r} is not a project name")
    lines = []
    seen: set[str] = set()
    for k in keys or []:
        name = str(k.get("name", ""))
        if not NAME_RE.fullmatch(name) or name in seen:
            raise TargetError(f"dsg_backup_pull_keys: name {name!r} missing, invalid or twice")
        seen.add(name)
        key = str(k.get("key") or (public_keys or {}).get(name) or "").strip()
        if not key:
            continue  # from a backup host whose key is not made yet (a check run)
        if not KEY_RE.fullmatch(key) or '"' in key:
            raise TargetError(
                f"dsg_backup_pull_keys {name}: not one public key line (type base64 [comment], "
                "no options)"
            )
        words = [dsg, "admin", "send-for-backup", "--name", name]
        for p in sorted(projects):
            words += ["--project", f"{p}={parent}/{p}"]
        lines.append(f'restrict,command="{" ".join(words)}" {key}')
    return lines


def dsg_backup_pull_public_keys(keys: list[dict[str, Any]], hostvars: Any) -> dict[str, str]:
    """{key name: public key line} for the keys that name a `from_host`: the key that
    host's dsg_backup_host role made for this target (its dsg_backup_host_public_keys fact;
    absent until that role has run there, e.g. in a check run on a fresh host)."""
    out: dict[str, str] = {}
    for k in keys or []:
        host = k.get("from_host")
        if not host:
            continue
        try:
            facts = hostvars[host].get("dsg_backup_host_public_keys") or {}
        except (KeyError, AttributeError):
            raise TargetError(
                f"dsg_backup_pull_keys {k.get('name')}: from_host {host!r} is not a host of "
                "this inventory"
            ) from None
        key = facts.get(k.get("name")) if isinstance(facts, dict) else None
        if key:
            out[str(k.get("name"))] = str(key)
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "dsg_backup_targets": dsg_backup_targets,
            "dsg_backup_target_jobs": dsg_backup_target_jobs,
            "dsg_backup_drill_jobs": dsg_backup_drill_jobs,
            "dsg_backup_pull_lines": dsg_backup_pull_lines,
            "dsg_backup_pull_public_keys": dsg_backup_pull_public_keys,
        }
