"""Pools, datasets, mountpoints and `zfs allow` of a deployed host, against the inventory."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from tests.infra import declared as decl
from tests.infra.conftest import check_path, need_group, report, sh
from tests.infra.test_operations import check_timers, uses_timers


def zfs_props(host: Any, dataset: str, props: list[str]) -> dict[str, tuple[str, str]] | None:
    """{property: (value, source)} from `zfs get -H -p`; None when the dataset is missing."""
    r = host.run("zfs get -H -p -o property,value,source %s %s", ",".join(props), dataset)
    if r.rc != 0:
        return None
    out = {}
    for line in r.stdout.splitlines():
        prop, value, source = [*line.split("\t"), "", ""][:3]
        out[prop] = (value, source)
    return out


def pool_property(host: Any, pool: str, prop: str) -> str:
    # zfs-fuse's `zpool get` has no -H/-p: parse the table (NAME PROPERTY VALUE SOURCE).
    lines = sh(host, "zpool get %s %s", prop, pool).splitlines()
    return lines[1].split()[2]


def test_pools_online_with_declared_properties(host, declared):
    need_group(declared, "dsg_zfs_hosts")
    zh = declared["zfs_host"]
    if not zh["pools"]:
        pytest.skip("no pools declared (dsg_zfs_host_pools)")
    problems: list[str] = []
    for pool in zh["pools"]:
        name = pool["name"]
        r = host.run("zpool list -H -o name,health %s", name)
        if r.rc != 0:
            problems.append(f"pool {name}: not imported ({r.stderr.strip()})")
            continue
        health = r.stdout.split()[1]
        if health != "ONLINE":
            problems.append(f"pool {name}: health is {health}, expected ONLINE")
        for prop, value in (pool.get("properties") or {}).items():
            want = decl.zfs_filters.zfs_value(prop, value)
            got = pool_property(host, name, prop)
            if got != want:
                problems.append(f"pool {name}: {prop} is {got!r}, the inventory declares {want!r}")
    if zh["scrub_enabled"] and uses_timers(host, zh.get("scheduler", "auto")):
        check_timers(problems, host, "dsg-zfs-scrub", zh["scrub_jobs"])
    elif zh["scrub_enabled"]:
        cron = host.file(zh["scrub_cron_file"])
        text = cron.content_string if cron.exists else ""
        for pool in zh["pools"]:
            if pool.get("scrub", True) and pool["name"] not in text:
                problems.append(f"{zh['scrub_cron_file']}: no scrub of pool {pool['name']}")
    report(problems, "the pools")


def _compare(problems, dataset, got, want, raw=None):
    for prop, value in want.items():
        have = got.get(prop, ("<unset>", ""))[0]
        if have != value:
            shown = f"{value!r}" + (
                f" ({raw[prop]})" if raw and prop in raw and str(raw[prop]) != value else ""
            )
            problems.append(f"{dataset}: {prop} is {have!r}, the inventory declares {shown}")


def test_datasets_have_declared_properties_and_mountpoints(host, declared):
    need_group(declared, "dsg_servers")
    ds = declared["datasets"]
    parent = ds["parent"]
    problems: list[str] = []
    want_parent = decl.parent_properties(declared)
    got = zfs_props(host, parent, [*want_parent, "mounted"])
    if got is None:
        report([f"{parent}: dataset missing"], "the datasets")
    _compare(problems, parent, got, {**want_parent, "mounted": "yes"}, ds["parent_properties"])
    inherited = {k: v for k, v in want_parent.items() if k != "mountpoint"}
    overrides: list[str] = []
    for project in ds["projects"]:
        if not decl.present(project):
            continue
        name = f"{parent}/{project['name']}"
        own = decl.project_properties(declared, project)
        # the parent's declared properties reach the project by inheritance unless it
        # declares its own; a local override by hand shows up here
        want = dict(own)
        want["mountpoint"] = f"{ds['mountpoint_root'].rstrip('/')}/{project['name']}"
        want["mounted"] = "yes"
        got = zfs_props(host, name, list(want))
        if got is None:
            problems.append(f"{name}: dataset missing (project {project['name']})")
            continue
        _compare(problems, name, got, want, project.get("properties"))
        # The parent's declared properties reach a project by inheritance. A local override
        # by hand is not something the playbook repairs (it only compares properties it
        # declares on that dataset), so it is a warning here, not a failure.
        others = {k: v for k, v in inherited.items() if k not in own}
        got = zfs_props(host, name, list(others)) or {}
        _compare(overrides, name, got, others, ds["parent_properties"])
    for message in overrides:
        warnings.warn(
            f"{message} (set locally on the project; the playbook does not repair this)",
            stacklevel=1,
        )
    report(problems, "the datasets")


def test_mountpoints_owned_by_project_groups_setgid(host, declared):
    need_group(declared, "dsg_servers")
    ds = declared["datasets"]
    root = ds["mountpoint_root"].rstrip("/")
    problems: list[str] = []
    check_path(problems, host, root, "directory", "root", "root", int(ds["root_mode"], 8))
    locks = f"{root}/.dsg-locks"
    check_path(problems, host, locks, "directory", "root", "root", 0o755)
    for project in ds["projects"]:
        if not decl.present(project):
            continue
        name, group = project["name"], project["group"]
        why = f"project {name}"
        check_path(problems, host, f"{root}/{name}", "directory", ds["mountpoint_owner"], group,
                   int(ds["mountpoint_mode"], 8), why)  # fmt: skip
        check_path(problems, host, f"{locks}/{name}.lock", "regular", "root", group, 0o660, why)
    report(problems, "the project mountpoints")


def test_zfs_allow_matches_declared_delegation(host, declared):
    need_group(declared, "dsg_servers")
    access = declared["access"]
    if access["zfs_allow"] == "skip":
        pytest.skip("dsg_access_zfs_allow is skip: delegation is not managed on this host")
    wanted = dict(decl.delegations(declared))
    if access["manage_parent_delegation"]:
        wanted[access["dataset_parent"]] = {}
    allow = decl.zfs_allow
    problems: list[str] = []
    for dataset, users in sorted(wanted.items()):
        # `|| exit 3`: zfs-fuse's `zfs allow` exits 255, which testinfra takes for an ssh error
        r = host.run("zfs allow %s || exit 3", dataset)
        error = (r.stderr + r.stdout).strip()
        if r.rc != 0 and allow.is_unsupported(error):
            impl = declared["zfs_host"]["implementation"]
            pytest.skip(
                f"`zfs allow` does not work on this host ({impl}; zfs-fuse has no delegation): "
                f"{error}"
            )
        if r.rc != 0:
            problems.append(f"{dataset}: `zfs allow` failed: {error}")
            continue
        got = allow.parse_allow(r.stdout, dataset)
        want = allow.desired_perms(users=users)
        for key in sorted(set(got["grants"]) | set(want["grants"])):
            have, need = got["grants"].get(key, frozenset()), want["grants"].get(key, frozenset())
            if have != need:
                kind, who, scope = key
                problems.append(
                    f"{dataset}: {kind} {who or 'everyone'} ({scope}) has "
                    f"{','.join(sorted(have)) or 'nothing'}, the inventory declares "
                    f"{','.join(sorted(need)) or 'nothing'}"
                )
        if got["create"]:
            problems.append(f"{dataset}: create-time permissions {sorted(got['create'])}")
        if got["sets"]:
            problems.append(f"{dataset}: permission sets {sorted(got['sets'])}")
    report(problems, "zfs allow")


def test_encrypted_projects_have_their_keys_loaded(host, declared):
    """Encrypted projects (dsg_datasets `encryption`): encrypted as declared, key loaded, key
    file root-only, the boot unit enabled. Hosts without any pass with nothing to check."""
    need_group(declared, "dsg_servers")
    ds = declared["datasets"]
    problems: list[str] = []
    for spec in ds.get("encrypted") or []:
        name = spec["dataset"]
        want = {**spec["properties"], "keystatus": "available", "mounted": "yes"}
        got = zfs_props(host, name, list(want))
        if got is None:
            problems.append(f"{name}: dataset missing (encrypted project {spec['name']})")
            continue
        _compare(problems, name, got, want)
        check_path(problems, host, spec["key_file"], "regular", "root", "root", 0o400,
                   f"key of project {spec['name']}")  # fmt: skip
    if ds.get("encrypted") and ds["load_keys_at_boot"]:
        unit = host.service(ds["load_keys_unit"])
        if not unit.is_enabled:
            problems.append(f"{ds['load_keys_unit']} is not enabled: keys are not loaded at boot")
    report(problems, "the encrypted projects")
