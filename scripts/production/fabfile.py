"""Fabric tasks for dsg: thin wrappers over the engine's remote module (docs/remote-tasks.md).

    fab -r scripts/production status --hosts analysis1,analysis2 --workdir ~/proj
    fab -r scripts/production sync --hosts analysis1 --workdir ~/proj -m "new extract" --dry-run
    fab -r scripts/production create-project --inventory inventories/production --project killings
    fab -r scripts/production --help sync        # or: fab -r scripts/production sync --help

Common options: --dry-run, --ssh-config FILE, --known-hosts FILE, --key FILE, --dsg CMD,
--timeout S. Prints one JSON line per host; exits 1 when any host failed, 2 when a required
option is missing.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from invoke import Exit, Task, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "engine"))


def _remote():
    # Imported when a task runs, so that --list and --help work without the engine.
    for name in ("dsg.admin.remote", "dsg.remote"):  # the layout since the restructure, then before
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise
    raise Exit("cannot find the dsg engine's remote module under engine/dsg", code=1)


class _Task(Task):
    """Long flags only, as the docs write them, and no positional arguments. Invoke's
    automatic short flags gave --ssh-config the flag `--` (the first free character of
    'ssh-config' is its dash) and made `-h` mean --hosts; a required positional argument
    swallowed `--help` (`fab sync --help` failed). The one short flag kept is `-m`."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name == "message" and "m" not in taken_names:
            opts["names"] = [*opts["names"], "m"]
        return opts


def dsg_task(help: dict[str, str]):
    return task(klass=_Task, help=help, positional=[], auto_shortflags=False)


def _need(task_name: str, **values: str) -> None:
    missing = [k for k, v in values.items() if not v]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise Exit(f"fab {task_name}: {flags} required (see: fab {task_name} --help)", code=2)


def _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout):
    remote = _remote()
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
    code = _remote().exit_code(results)
    if code:
        sys.exit(code)


COMMON = {
    "dry_run": "plan only: change nothing",
    "ssh_config": "ssh_config file for host aliases",
    "known_hosts": "known_hosts file (default ~/.ssh/known_hosts)",
    "key": "private key file",
    "dsg": "the dsg command on the remote host (default: dsg)",
    "timeout": "seconds per command (default 3600)",
}
HOSTS = "comma-separated hosts (required)"
WORKDIR = "the working copy's directory on the host (required)"


def _hosts(hosts: str) -> list[str]:
    return [h for h in hosts.split(",") if h]


@dsg_task(help={"hosts": HOSTS, "workdir": WORKDIR, **COMMON})
def status(c, hosts="", workdir="", dry_run=False, ssh_config="", known_hosts="", key="",
           dsg="", timeout=3600):  # fmt: skip
    """dsg status in a remote working copy (hosts in parallel)."""
    _need("status", hosts=hosts, workdir=workdir)
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(_remote().status(_hosts(hosts), workdir, cfg))


@dsg_task(help={"hosts": HOSTS, "workdir": WORKDIR,
                "message": "the snapshot's message (default: sync)", **COMMON})  # fmt: skip
def sync(c, hosts="", workdir="", message="sync", dry_run=False, ssh_config="", known_hosts="",
         key="", dsg="", timeout=3600):  # fmt: skip
    """dsg sync in a remote working copy (one host after another)."""
    _need("sync", hosts=hosts, workdir=workdir)
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(_remote().sync(_hosts(hosts), workdir, cfg, message))


@dsg_task(help={"hosts": HOSTS, "workdir": WORKDIR, "n": "how many snapshots (default 20)",
                **COMMON})  # fmt: skip
def log(c, hosts="", workdir="", n=20, dry_run=False, ssh_config="", known_hosts="", key="",
        dsg="", timeout=3600):  # fmt: skip
    """dsg log from a remote working copy."""
    _need("log", hosts=hosts, workdir=workdir)
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(_remote().log(_hosts(hosts), workdir, cfg, int(n)))


@dsg_task(help={"host": "the host (required)", "workdir": WORKDIR,
                "path": "the file, relative to the project (required)",
                "snapshot": "the snapshot, e.g. s12 (required)",
                "output": "where to write it on the host (required)", **COMMON})  # fmt: skip
def fetch(c, host="", workdir="", path="", snapshot="", output="", dry_run=False,
          ssh_config="", known_hosts="", key="", dsg="", timeout=3600):  # fmt: skip
    """A file from a past snapshot, on the remote host."""
    _need("fetch", host=host, workdir=workdir, path=path, snapshot=snapshot, output=output)
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(_remote().fetch(host, workdir, cfg, path, snapshot, output))


@dsg_task(help={"hosts": "comma-separated repository hosts (required)", **COMMON})
def list_repos(c, hosts="", dry_run=False, ssh_config="", known_hosts="", key="", dsg="",
               timeout=3600):  # fmt: skip
    """Repositories with head, size and last sync, per host."""
    _need("list-repos", hosts=hosts)
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(_remote().list_repos(_hosts(hosts), cfg))


@dsg_task(help={"hosts": "comma-separated repository hosts (required)", **COMMON})
def health(c, hosts="", dry_run=False, ssh_config="", known_hosts="", key="", dsg="",
           timeout=3600):  # fmt: skip
    """dsg admin health on each host (Nagios semantics per host in the JSON)."""
    _need("health", hosts=hosts)
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(_remote().health(_hosts(hosts), cfg))


@dsg_task(
    help={
        "hosts": "comma-separated repository hosts (required)",
        "to": "backup parent dataset, e.g. backup/dsg (required)",
        "projects": "comma-separated projects (default: all)",
        **COMMON,
    }
)
def backup(c, hosts="", to="", projects="", dry_run=False, ssh_config="", known_hosts="",
           key="", dsg="", timeout=3600):  # fmt: skip
    """dsg admin backup on each host, one after another (dry run: the plan)."""
    _need("backup", hosts=hosts, to=to)
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(_remote().backup(_hosts(hosts), cfg, to, _hosts(projects) if projects else ()))


@dsg_task(
    help={
        "hosts": "comma-separated hosts holding the backup (required)",
        "project": "the project (required)",
        "source": "backup parent dataset, e.g. backup/dsg (required)",
        "scratch": "scratch parent dataset (default: <pool>/dsg-drill)",
        **COMMON,
    }
)
def restore_drill(c, hosts="", project="", source="", scratch="", dry_run=False,
                  ssh_config="", known_hosts="", key="", dsg="", timeout=3600):  # fmt: skip
    """dsg admin restore-drill: restore the newest backup to scratch, verify, clean up."""
    _need("restore-drill", hosts=hosts, project=project, source=source)
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(_remote().restore_drill(_hosts(hosts), cfg, project, source, scratch))


@dsg_task(help={"inventory": "inventories/<env> (required)",
                "project": "a project declared there (required)", **COMMON})  # fmt: skip
def create_project(c, inventory="", project="", dry_run=False, ssh_config="", known_hosts="",
                   key="", dsg="", timeout=3600):  # fmt: skip
    """playbooks/add-project.yml for one project (dry run: --check --diff)."""
    _need("create-project", inventory=inventory, project=project)
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(_remote().create_project(inventory, project, cfg))


@dsg_task(help={"inventory": "inventories/<env> (required)",
                "user": "a user declared there (required)", **COMMON})  # fmt: skip
def add_user(c, inventory="", user="", dry_run=False, ssh_config="", known_hosts="", key="",
             dsg="", timeout=3600):  # fmt: skip
    """playbooks/add-user.yml for one user (dry run: --check --diff)."""
    _need("add-user", inventory=inventory, user=user)
    cfg = _cfg(dry_run, ssh_config, known_hosts, key, dsg, timeout)
    _report(_remote().add_user(inventory, user, cfg))
