"""Static checks of the Ansible toolkit: ansible-lint (production profile) and --syntax-check."""

from __future__ import annotations

import pytest

from tests.ansible.conftest import REPO

pytestmark = pytest.mark.ansible

INVENTORIES = ["lab", "lab-vm", "development", "staging", "production"]
PLAYBOOKS = sorted(p.name for p in (REPO / "playbooks").glob("*.yml"))


def test_playbooks_exist():
    assert {"site.yml", "provision-host.yml", "add-project.yml", "add-user.yml"} <= set(
        PLAYBOOKS
    ) and "deploy-dsg.yml" in PLAYBOOKS


def test_ansible_lint_production_profile(ansible_tools):
    run = ansible_tools.run("ansible-lint", "--profile", "production", "--offline", timeout=300)
    assert run.returncode == 0, run.explain()
    assert "Profile 'production' was required, and it passed" in run.stdout + run.stderr


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_syntax_check(ansible_tools, inventory):
    # every playbook in one run per inventory (ansible's start-up is most of a check);
    # a failure names the playbook file
    run = ansible_tools.run(
        "ansible-playbook",
        "-i",
        f"inventories/{inventory}",
        "--syntax-check",
        *(f"playbooks/{p}" for p in PLAYBOOKS),
    )
    assert run.returncode == 0, run.explain()
    assert len(PLAYBOOKS) >= 10


@pytest.mark.parametrize("inventory", ["development", "staging", "production"])
def test_inventory_variables_resolve(ansible_tools, inventory):
    """Every host's merged variables template cleanly (catches typos in group_vars)."""
    run = ansible_tools.run(
        "ansible-inventory", "-i", f"inventories/{inventory}", "--list", "--yaml"
    )
    assert run.returncode == 0, run.explain()
    assert "dsg_servers" in run.stdout
    assert "dsg_backup_hosts" in run.stdout
