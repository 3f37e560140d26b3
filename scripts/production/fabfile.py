"""Fabric tasks for dsg: thin wrappers over engine/dsg/remote.py (see docs/operations.md).

    fab -r scripts/production status --hosts analysis1,analysis2 --workdir ~/proj
    fab -r scripts/production sync --hosts analysis1 --workdir ~/proj -m "new extract" --dry-run
    fab -r scripts/production create-project --inventory inventories/production --project killings

Common options: --dry-run, --ssh-config FILE, --known-hosts FILE, --key FILE, --dsg CMD,
--timeout S. Prints one JSON line per host; exits 1 when any host failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from invoke import task

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "engine"))

from dsg import remote


def _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout):
    kw = {"dry_run": bool(dry_run), "dsg": dsg or "dsg", "command_timeout": float(timeout)}
    if ssh_config:
        kw["ssh_config"] = ssh_config
    if known_hosts:
        kw["known_hosts"] = known_hosts
    if key:
        kw["key_file"] = key
    return remote.RemoteConfig(**kw)


def _report(results) -> None:
    if not isinstance(results, list):
        results = [results]
    for r in results:
        print(json.dumps(r.to_dict(), default=str))
    code = remote.exit_code(results)
    if code:
        sys.exit(code)


COMMON = {
    "dry_run": "plan only: change nothing",
    "ssh_config": "ssh_config file for host aliases",
    "known_hosts": "known_hosts file (default ~/.ssh/known_hosts)",
    "key": "private key file",
    "dsg": "the dsg command on the remote host",
    "timeout": "seconds per command",
}


def _hosts(hosts: str) -> list[str]:
    return [h for h in hosts.split(",") if h]


@task(help={"hosts": "comma-separated hosts", "workdir": "working copy on the host", **COMMON})
def status(c, hosts, workdir, dry_run=False, ssh_config="", known_hosts="", key="", dsg="",
           timeout=3600):  # fmt: skip
    """dsg status in a remote working copy (hosts in parallel)."""
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(remote.status(_hosts(hosts), workdir, cfg))


@task(help={"hosts": "comma-separated hosts", "workdir": "working copy", "message": "message",
            **COMMON})  # fmt: skip
def sync(c, hosts, workdir, message="sync", dry_run=False, ssh_config="", known_hosts="",
         key="", dsg="", timeout=3600):  # fmt: skip
    """dsg sync in a remote working copy (one host after another)."""
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(remote.sync(_hosts(hosts), workdir, cfg, message))


@task(help={"hosts": "comma-separated hosts", "workdir": "working copy", **COMMON})
def log(c, hosts, workdir, n=20, dry_run=False, ssh_config="", known_hosts="", key="", dsg="",
        timeout=3600):  # fmt: skip
    """dsg log from a remote working copy."""
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(remote.log(_hosts(hosts), workdir, cfg, int(n)))


@task(help={"host": "host", "workdir": "working copy", "path": "file", "snapshot": "sN",
            "output": "output path on the host", **COMMON})  # fmt: skip
def fetch(c, host, workdir, path, snapshot, output, dry_run=False, ssh_config="",
          known_hosts="", key="", dsg="", timeout=3600):  # fmt: skip
    """A file from a past snapshot, on the remote host."""
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(remote.fetch(host, workdir, cfg, path, snapshot, output))


@task(help={"hosts": "comma-separated repository hosts", **COMMON})
def list_repos(c, hosts, dry_run=False, ssh_config="", known_hosts="", key="", dsg="",
               timeout=3600):  # fmt: skip
    """Repositories with head, size and last sync, per host."""
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(remote.list_repos(_hosts(hosts), cfg))


@task(help={"hosts": "comma-separated repository hosts", **COMMON})
def health(c, hosts, dry_run=False, ssh_config="", known_hosts="", key="", dsg="",
           timeout=3600):  # fmt: skip
    """dsg admin health on each host (Nagios semantics per host in the JSON)."""
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(remote.health(_hosts(hosts), cfg))


@task(
    help={
        "hosts": "comma-separated repository hosts",
        "to": "backup parent dataset",
        "projects": "comma-separated projects (default: all)",
        **COMMON,
    }
)
def backup(c, hosts, to, projects="", dry_run=False, ssh_config="", known_hosts="", key="",
           dsg="", timeout=3600):  # fmt: skip
    """dsg admin backup on each host, one after another (dry run: the plan)."""
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(remote.backup(_hosts(hosts), cfg, to, _hosts(projects) if projects else ()))


@task(
    help={
        "hosts": "comma-separated hosts holding the backup",
        "project": "project",
        "source": "backup parent dataset",
        "scratch": "scratch parent dataset",
        **COMMON,
    }
)
def restore_drill(c, hosts, project, source, scratch="", dry_run=False, ssh_config="",
                  known_hosts="", key="", dsg="", timeout=3600):  # fmt: skip
    """dsg admin restore-drill: restore the newest backup to scratch, verify, clean up."""
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(remote.restore_drill(_hosts(hosts), cfg, project, source, scratch))


@task(help={"inventory": "inventories/<env>", "project": "project declared there", **COMMON})
def create_project(c, inventory, project, dry_run=False, ssh_config="", known_hosts="", key="",
                   dsg="", timeout=3600):  # fmt: skip
    """playbooks/add-project.yml for one project (dry run: --check --diff)."""
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(remote.create_project(inventory, project, cfg))


@task(help={"inventory": "inventories/<env>", "user": "user declared there", **COMMON})
def add_user(c, inventory, user, dry_run=False, ssh_config="", known_hosts="", key="", dsg="",
             timeout=3600):  # fmt: skip
    """playbooks/add-user.yml for one user (dry run: --check --diff)."""
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(remote.add_user(inventory, user, cfg))
