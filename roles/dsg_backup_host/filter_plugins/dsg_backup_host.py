"""Filters of the dsg_backup_host role: the pulls checked and completed, and their jobs."""

from __future__ import annotations

import re
import shlex
from typing import Any

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
DATASET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)*")
HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*|\[[0-9A-Fa-f:.]+\]")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
KEY_RE = re.compile(r"(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,3}")
KEYS = {
    "name", "from", "port", "user", "to", "projects", "schedule", "host_key",
    "from_inventory_host", "drill", "drill_projects", "drill_schedule", "drill_schedules",
    "scratch",
}  # fmt: skip


class PullError(ValueError):
    pass


def _inventory_projects(hostvars: Any, host: str) -> list[str]:
    try:
        projects = hostvars[host].get("dsg_projects") or []
    except (KeyError, AttributeError):
        return []
    return [
        str(p["name"])
        for p in projects
        if isinstance(p, dict) and (p.get("state") or "present") == "present"
    ]


def dsg_backup_host_pulls(
    pulls: list[dict[str, Any]], schedule: str, drill_schedule: str, hostvars: Any = None
) -> list[dict[str, Any]]:
    """Each pull with every key filled in; anything malformed raises, naming the pull."""
    out = []
    seen: set[str] = set()
    targets: set[str] = set()
    for raw in pulls or []:
        p = dict(raw)
        name = str(p.get("name", ""))
        where = f"dsg_backup_host_pulls {name or '?'}"
        unknown = set(p) - KEYS
        if unknown:
            raise PullError(f"{where}: unknown keys {sorted(unknown)}")
        if not NAME_RE.fullmatch(name) or name in seen:
            raise PullError(f"{where}: name must be 1-32 of a-z, 0-9, '-' and unique")
        seen.add(name)
        host = str(p.get("from", ""))
        if not HOST_RE.fullmatch(host):
            raise PullError(f"{where}: from {host!r} is not a host name or address")
        port = int(p.get("port") or 22)
        if not 0 < port < 65536:
            raise PullError(f"{where}: port {port} out of range")
        user = str(p.get("user") or "dsgpull")
        if not USER_RE.fullmatch(user):
            raise PullError(f"{where}: user {user!r} is not an account name")
        to = str(p.get("to", ""))
        if not DATASET_RE.fullmatch(to) or "/" not in to:
            raise PullError(f"{where}: to {to!r} must be a dataset below a pool (pool/dsg)")
        if to in targets:
            raise PullError(f"{where}: {to} is already another pull's target")
        targets.add(to)
        inv = str(p.get("from_inventory_host") or "")
        host_key = str(p.get("host_key") or "").strip()
        if bool(inv) == bool(host_key):
            raise PullError(
                f"{where}: give the primary's host key (host_key) or the inventory host it is "
                "(from_inventory_host), one of them: it is pinned, never learnt on first use"
            )
        if host_key and not KEY_RE.fullmatch(host_key):
            raise PullError(f"{where}: host_key must be 'type base64', e.g. ssh-ed25519 AAAA...")
        projects = [str(x) for x in p.get("projects") or []]
        drill_projects = [str(x) for x in p.get("drill_projects") or []] or projects
        if not drill_projects and inv:
            drill_projects = _inventory_projects(hostvars, inv)
        for x in projects + drill_projects:
            if not PROJECT_RE.fullmatch(x):
                raise PullError(f"{where}: {x!r} is not a project name")
        scratch = str(p.get("scratch") or f"{to.split('/')[0]}/dsg-drill")
        if not DATASET_RE.fullmatch(scratch) or scratch == to or scratch.startswith(to + "/"):
            raise PullError(f"{where}: scratch {scratch!r} must be a dataset outside {to}")
        out.append(
            {
                "name": name,
                "from": host,
                "port": port,
                "user": user,
                "to": to,
                "projects": projects,
                "schedule": str(p.get("schedule") or schedule),
                "host_key": host_key,
                "from_inventory_host": inv,
                "known_host": host if port == 22 else f"[{host.strip('[]')}]:{port}",
                "drill": bool(p.get("drill", True)),
                "drill_projects": drill_projects,
                "drill_schedule": str(p.get("drill_schedule") or drill_schedule),
                "drill_schedules": dict(p.get("drill_schedules") or {}),
                "scratch": scratch,
            }
        )
    return out


def dsg_backup_host_jobs(
    pulls: list[dict[str, Any]],
    dsg: str,
    account: str,
    key_dir: str,
    lock_dir: str,
    log_dir: str,
    textfile_dir: str,
) -> list[dict[str, Any]]:
    """[{name, schedule, lock, log, argv}]: a `dsg admin pull` per pull, a drill per project."""
    jobs: list[dict[str, Any]] = []
    for p in pulls:
        name = p["name"]
        ssh = shlex.join([
            "ssh", "-i", f"{key_dir}/{name}", "-o", f"UserKnownHostsFile={key_dir}/known_hosts",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
            "-p", str(p["port"]),
        ])  # fmt: skip
        argv = ["env", f"DSG_SSH_COMMAND={ssh}", dsg, "admin", "pull",
                "--from-host", f"{p['user']}@{p['from'].strip('[]')}", "--to", p["to"],
                "--name", name, "--to-prefix", f"runuser -u {account} --"]  # fmt: skip
        argv += ["--textfile-dir", textfile_dir] if textfile_dir else []
        argv += list(p["projects"])
        jobs.append(
            {
                "name": f"pull {name}",
                "schedule": p["schedule"],
                "lock": f"{lock_dir}/dsg-pull-{name}.lock",
                "log": f"{log_dir}/backup.log",
                "argv": argv,
            }
        )
        if not p["drill"]:
            continue
        for project in p["drill_projects"]:
            argv = [dsg, "admin", "restore-drill", project, "--from", p["to"], "--scratch",
                    p["scratch"], "--name", name]  # fmt: skip
            argv += ["--textfile-dir", textfile_dir] if textfile_dir else []
            jobs.append(
                {
                    "name": f"restore-drill {name} {project}",
                    "schedule": p["drill_schedules"].get(project, p["drill_schedule"]),
                    "lock": f"{lock_dir}/dsg-restore-drill-{name}-{project}.lock",
                    "log": f"{log_dir}/restore-drill.log",
                    "argv": argv,
                }
            )
    return jobs


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "dsg_backup_host_pulls": dsg_backup_host_pulls,
            "dsg_backup_host_jobs": dsg_backup_host_jobs,
        }
