"""The inventories' shared layer, and every difference between staging and production.

inventories/{development,staging,production} include inventories/common/group_vars through
symlinks (group_vars/<group>/00-common.yml), overridden by their own vars.yml. Staging must
be production's shape: `ansible-inventory --list` resolves both, and every difference
between a staging host's variables and its production counterpart's must be listed, with
its reason, in inventories/staging-vs-production.yml (and every entry there must still be a
difference).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.ansible.conftest import REPO

pytestmark = pytest.mark.ansible

ALLOW_LIST = REPO / "inventories" / "staging-vs-production.yml"
SHARED = ("all", "dsg_zfs_hosts", "dsg_servers", "dsg_backup_hosts")
PAIRED_GROUPS = ("dsg_servers", "dsg_backup_hosts")


_RESOLVED: dict[str, dict[str, Any]] = {}


def inventory(ansible_tools, env: str) -> dict[str, Any]:
    """`ansible-inventory --list` of inventories/<env> (once per test session)."""
    if env not in _RESOLVED:
        run = ansible_tools.run("ansible-inventory", "-i", f"inventories/{env}", "--list")
        assert run.returncode == 0, run.explain()
        _RESOLVED[env] = json.loads(run.stdout)
    return _RESOLVED[env]


def group_hosts(inv: dict[str, Any], group: str) -> list[str]:
    """The hosts of a group and of its children, sorted."""
    node = inv.get(group) or {}
    hosts = set(node.get("hosts") or [])
    for child in node.get("children") or []:
        hosts.update(group_hosts(inv, child))
    return sorted(hosts)


def differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Leaf differences between two resolved values: (path, a's value, b's value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append((sub, a.get(key, "<unset>"), b.get(key, "<unset>")))
            else:
                out.extend(differences(a[key], b[key], sub))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out.extend(differences(x, y, f"{path}[{i}]"))
        return out
    return [] if a == b else [(path, a, b)]


def covered(path: str, entry: str) -> bool:
    return path == entry or path.startswith((entry + ".", entry + "["))


def test_shared_layer_is_linked_into_every_real_inventory():
    """Each environment's group_vars/<group>/00-common.yml is a link to the shared file
    (a copy would drift again), and what the shared layer sets resolves there."""
    for env in ("development", "staging", "production"):
        for group in SHARED:
            link = REPO / "inventories" / env / "group_vars" / group / "00-common.yml"
            target = REPO / "inventories" / "common" / "group_vars" / f"{group}.yml"
            assert link.is_symlink(), f"{link} must be a symlink to {target}"
            assert link.resolve() == target.resolve(), f"{link} -> {link.resolve()}"


def test_shared_layer_reaches_the_hosts(ansible_tools):
    """What only the shared layer sets arrives in each environment's resolved variables,
    and an environment's own vars.yml overrides it (development's ARC limit)."""
    for env, arc in (("staging", 103079215104), ("production", 103079215104), ("development", 0)):
        inv = inventory(ansible_tools, env)
        for host in group_hosts(inv, "dsg_zfs_hosts"):
            hv = inv["_meta"]["hostvars"][host]
            assert hv["dsg_zfs_host_arc_max_bytes"] == arc, (env, host)
            assert hv["dsg_primary_pool"]["filesystem_properties"]["dnodesize"] == "auto"
            assert hv["dsg_primary_pool"]["filesystem_properties"]["special_small_blocks"] == "64K"
            assert hv["dsg_zfs_host_debian_backports"] is True, (env, host)
        for host in group_hosts(inv, "dsg_servers"):
            hv = inv["_meta"]["hostvars"][host]
            assert hv["dsg_environment"] == env
            # backups are pulled: nothing pushed, the pull account's rights, a key per puller
            assert hv["dsg_backup_target"] == "", (env, host)
            assert hv["dsg_access_extra_delegations"] == {"dsgpull": ["hold", "release", "send"]}
            assert "groups['dsg_backup_hosts']" in hv["dsg_backup_pull_keys"], (env, host)
        for host in group_hosts(inv, "dsg_backup_hosts"):
            hv = inv["_meta"]["hostvars"][host]
            assert hv["dsg_backup_pull_name"], (env, host)
            (pull,) = hv["dsg_backup_host_pulls"]
            assert pull["to"] == "{{ dsg_backup_pool }}/dsg", (env, host)


def compare(staging: dict[str, Any], production: dict[str, Any]) -> list[tuple[str, str, Any, Any]]:
    """(group, path, staging value, production value) for each paired host's differences."""
    found = []
    for group in PAIRED_GROUPS:
        s_hosts, p_hosts = group_hosts(staging, group), group_hosts(production, group)
        assert s_hosts and p_hosts, f"{group}: staging {s_hosts}, production {p_hosts}"
        if len(s_hosts) != len(p_hosts):
            found.append((group, f"(hosts in {group})", len(s_hosts), len(p_hosts)))
        s_vars = staging["_meta"]["hostvars"][s_hosts[0]]
        p_vars = production["_meta"]["hostvars"][p_hosts[0]]
        found.extend((group, path, s, p) for path, s, p in differences(s_vars, p_vars))
    return found


def not_allowed(found, allowed: dict[str, str]) -> list[tuple[str, str]]:
    return [(g, path) for g, path, _, _ in found if not any(covered(path, e) for e in allowed)]


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def test_staging_differs_from_production_only_as_listed(ansible_tools):
    allowed = yaml.safe_load(ALLOW_LIST.read_text())
    assert isinstance(allowed, dict) and allowed, f"{ALLOW_LIST}: a mapping path -> reason"
    unexplained = [k for k, why in allowed.items() if not isinstance(why, str) or not why.strip()]
    assert not unexplained, f"{ALLOW_LIST}: entries without a reason: {unexplained}"

    staging, production = (
        inventory(ansible_tools, "staging"),
        inventory(ansible_tools, "production"),
    )
    # The same group tree: what is a child of what.
    for group in ("all", "dsg_zfs_hosts"):
        s_children = sorted(staging.get(group, {}).get("children") or [])
        p_children = sorted(production.get(group, {}).get("children") or [])
        assert s_children == p_children, f"{group}: children {s_children} vs {p_children}"
    found = compare(staging, production)
    report = "\n".join(f"  {g}: {path}: {short(s)} / {short(p)}" for g, path, s, p in found)
    print(f"\nstaging / production ({len(found)} differences):\n{report}")
    new = not_allowed(found, allowed)
    assert not new, (
        f"differences between staging and production not in {ALLOW_LIST.name} (move the "
        "setting into inventories/common/, or list it there with the reason):\n  "
        + "\n  ".join(f"{g}: {path}" for g, path in new)
    )
    stale = [e for e in allowed if not any(covered(path, e) for _, path, _, _ in found)]
    assert not stale, f"{ALLOW_LIST.name} lists what is no longer a difference: {stale}"


def test_drift_in_staging_is_caught(ansible_tools, tmp_path):
    """The drift of the issue: a staging whose pool lacks production's dnodesize and whose
    ARC limit is unset. A copy of the staging inventory, with the shared layer's files copied
    in and edited there, fails the comparison at exactly those paths."""
    import shutil

    copy = tmp_path / "staging"
    shutil.copytree(REPO / "inventories" / "staging", copy, symlinks=False)
    common = copy / "group_vars" / "dsg_zfs_hosts" / "00-common.yml"
    text = common.read_text()
    common.unlink()  # the copy of the link's target; edit this one only
    text = text.replace("    dnodesize: auto\n", "").replace(
        "dsg_zfs_host_arc_max_bytes: 103079215104", "dsg_zfs_host_arc_max_bytes: 0"
    )
    common.write_text(text)
    run = ansible_tools.run("ansible-inventory", "-i", str(copy), "--list")
    assert run.returncode == 0, run.explain()
    allowed = yaml.safe_load(ALLOW_LIST.read_text())
    new = not_allowed(
        compare(json.loads(run.stdout), inventory(ansible_tools, "production")), allowed
    )
    assert ("dsg_servers", "dsg_primary_pool.filesystem_properties.dnodesize") in new, new
    assert ("dsg_servers", "dsg_zfs_host_arc_max_bytes") in new, new
    assert ("dsg_backup_hosts", "dsg_zfs_host_arc_max_bytes") in new, new


def test_difference_finder_reports_nested_paths():
    """The comparison itself: a nested change is reported at its own path (so an allow-list
    entry cannot hide a sibling), lists element by element."""
    a = {"p": {"fs": {"dnodesize": "auto", "x": 1}}, "l": [1, 2], "only_a": 1}
    b = {"p": {"fs": {"x": 1}}, "l": [1, 3]}
    assert differences(a, b) == [
        ("l[1]", 2, 3),
        ("only_a", 1, "<unset>"),
        ("p.fs.dnodesize", "auto", "<unset>"),
    ]
    assert covered("dsg_projects[0].name", "dsg_projects")
    assert not covered("dsg_projects_extra", "dsg_projects")


@pytest.mark.parametrize("inventory", ["lab", "lab-vm"])
def test_a_controller_play_resolves_the_lab_connection_vars(
    ansible_tools, inventory: str, tmp_path
) -> None:
    """upgrade.yml and rollback.yml check the release in a play on Ansible's implicit
    localhost, which has no inventory_dir: the lab's connection variables (group `all`,
    templated for every host) must still resolve there."""
    play = tmp_path / "controller.yml"
    play.write_text(
        "- name: A controller play\n  hosts: localhost\n  connection: local\n"
        "  gather_facts: false\n  tasks:\n    - name: The lab directory\n"
        "      ansible.builtin.debug:\n        var: dsg_lab_dir\n"
    )
    run = ansible_tools.run("ansible-playbook", "-i", f"inventories/{inventory}", str(play))
    assert run.returncode == 0, run.explain()
    assert run.recap()["localhost"]["failed"] == 0, run.explain()
    assert f"dsg_lab_dir: {tmp_path.parent}/.lab\n" in run.stdout, run.explain()
