"""The declared state of a dsg host, as the playbooks see it.

`resolve(inventory, host)` runs tests/infra/resolve.yml with the same ansible-playbook,
ansible.cfg and roles as the playbooks: the inventory's variables over the roles' defaults,
templated (lookups and all). No role task runs and nothing connects to the host. The
expected access file, delegations and dataset properties are then computed with the roles'
own filter plugins, so the suite and the playbooks cannot disagree about what the inventory
means.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
PLAYBOOK = Path(__file__).resolve().parent / "resolve.yml"


def role_module(relpath: str) -> ModuleType:
    """Import roles/<relpath> (a filter plugin or module file) as a plain module."""
    name = "dsg_infra_" + relpath.replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROLES / relpath)
    assert spec and spec.loader, relpath
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


access_filters = role_module("dsg_access/filter_plugins/dsg_access.py")
zfs_filters = role_module("dsg_datasets/filter_plugins/dsg_zfs.py")
zfs_allow = role_module("dsg_access/library/dsg_zfs_allow.py")
timers = role_module("dsg_timers/filter_plugins/dsg_timers.py")


def _ansible_playbook() -> str:
    here = Path(sys.executable).parent / "ansible-playbook"
    if here.exists():
        return str(here)
    found = shutil.which("ansible-playbook")
    if not found:
        raise RuntimeError("ansible-playbook not found (run from .venv-ansible)")
    return found


@cache
def resolve_all(inventory: str, limit: str) -> dict[str, dict[str, Any]]:
    """{host: declared state} for the hosts matching `limit` in `inventory`."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=env.get("ANSIBLE_CONFIG") or str(REPO / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ROLES),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_CALLBACKS_ENABLED="ansible.posix.json",  # not profile_tasks: stdout is JSON
        ANSIBLE_NOCOLOR="1",
    )
    argv = [_ansible_playbook(), "-i", inventory, str(PLAYBOOK), "--tags", "dsg_infra_resolve"]
    argv += ["--limit", limit]
    proc = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        doc = json.loads(proc.stdout)
        task = doc["plays"][0]["tasks"][-1]
    except (ValueError, LookupError, IndexError) as e:
        raise RuntimeError(
            f"cannot resolve the inventory ({' '.join(argv)}, exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        ) from e
    out = {}
    for host, result in task["hosts"].items():
        if result.get("failed") or "msg" not in result:
            raise RuntimeError(f"cannot resolve the variables of {host}: {result.get('msg')}")
        out[host] = result["msg"]
    return out


def resolve(inventory: str, host: str) -> dict[str, Any]:
    found = resolve_all(inventory, host)
    if host not in found:
        raise RuntimeError(f"host {host} is not in inventory {inventory}")
    return found[host]


# --- expectations computed with the roles' own code -------------------------------------


def present(item: dict[str, Any]) -> bool:
    return (item.get("state") or "present") == "present"


def present_users(d: dict[str, Any]) -> list[str]:
    return access_filters.dsg_access_present_users(d["access"]["users"])


def active_users(d: dict[str, Any]) -> list[str]:
    return access_filters.dsg_access_active_users(d["access"]["projects"], present_users(d))


def project_members(d: dict[str, Any], project: dict[str, Any]) -> list[str]:
    return access_filters.dsg_access_project_members(project, present_users(d))


def group_members(d: dict[str, Any], project: dict[str, Any]) -> list[str]:
    """Members of the project group (writers and admins; readers too without ACLs)."""
    return access_filters.dsg_access_group_members(
        project, present_users(d), d["access"].get("read_acl", True)
    )


def read_group(project: dict[str, Any]) -> str:
    return access_filters.dsg_access_read_group(project)


def read_members(d: dict[str, Any], project: dict[str, Any]) -> list[str]:
    return access_filters.dsg_access_read_members(project, present_users(d))


def absent_users(d: dict[str, Any]) -> list[str]:
    return access_filters.dsg_access_absent_users(d["access"]["users"])


def access_document(d: dict[str, Any]) -> dict[str, Any]:
    a = d["access"]
    return access_filters.dsg_access_document(
        a["projects"], present_users(d), a["dataset_parent"], a["mountpoint_root"]
    )


def delegations(d: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    a = d["access"]
    return access_filters.dsg_access_delegations(
        a["projects"],
        present_users(d),
        a["zfs_role_permissions"],
        a["dataset_parent"],
        a.get("extra_delegations") or {},
    )


def parent_properties(d: dict[str, Any]) -> dict[str, str]:
    ds = d["datasets"]
    props = {**ds["parent_properties"], "mountpoint": ds["mountpoint_root"]}
    return zfs_filters.dsg_zfs_props(props)


def project_properties(d: dict[str, Any], project: dict[str, Any]) -> dict[str, str]:
    """Declared on the project dataset itself (what dsg_datasets sets there)."""
    ds = d["datasets"]
    props = {**ds["project_properties"], "dsg:project": project["name"]}
    props.update(project.get("properties") or {})
    return zfs_filters.dsg_zfs_props(props)


def key_line(d: dict[str, Any], key: str) -> str:
    return f'command="{d["access"]["agent_command"]}",restrict {key.strip()}'
