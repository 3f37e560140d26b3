"""Secrets stay out of `--check --diff` output.

The lab inventories keep their secrets the way production does: inventories/lab/group_vars/
all/vault.yml is encrypted with ansible-vault (the password is a public lab fixture,
inventories/lab/vault-password.txt), and vars.yml uses the vault_ names only
(dsg_lab_vault_alerts, an alert channel with a webhook URL and a bearer token). A real
`operations.yml --check --diff -v` against the lab host with that channel enabled reports
the health configuration as changed and prints the other files' diffs, but neither secret.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.ansible.conftest import REPO

pytestmark = pytest.mark.ansible

VAULT = REPO / "inventories" / "lab" / "group_vars" / "all" / "vault.yml"
PASSWORD = REPO / "inventories" / "lab" / "vault-password.txt"


def lab_secrets(ansible_tools) -> dict[str, str]:
    run = ansible_tools.run("ansible-vault", "view", "--vault-id", f"lab@{PASSWORD}", str(VAULT))
    assert run.returncode == 0, run.explain()
    secrets = yaml.safe_load(run.stdout)
    assert set(secrets) == {"vault_dsg_alert_webhook_url", "vault_dsg_alert_webhook_token"}
    return secrets


def test_lab_vault_is_encrypted_and_vars_use_names_only(ansible_tools):
    text = VAULT.read_text()
    assert text.startswith("$ANSIBLE_VAULT;1.2;AES256;lab\n"), "not an ansible-vault file"
    secrets = lab_secrets(ansible_tools)
    for value in secrets.values():
        for path in (REPO / "inventories").rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert value not in path.read_text(errors="replace"), f"{value!r} in {path}"


def test_check_diff_output_carries_no_secret(ansible_tools, ansible_lab):
    secrets = lab_secrets(ansible_tools)
    url = secrets["vault_dsg_alert_webhook_url"]
    needles = {
        "the webhook token": secrets["vault_dsg_alert_webhook_token"],
        "the webhook URL": url,
        "the webhook URL's path": url.split("/", 3)[3],
    }
    extra = {"dsg_monitoring_alerts": "{{ dsg_lab_vault_alerts }}"}
    run = ansible_tools.playbook(
        "lab", "operations.yml", "--check", "--diff", "-v",
        "--tags", "monitoring", "-e", json.dumps(extra),
    )  # fmt: skip
    assert run.returncode == 0, run.explain()
    out = run.stdout + run.stderr
    # the run did see the change: the health configuration gains the alerts section, and
    # the cron file's diff (no secret there) shows the health job gaining --alert
    text = " ".join(run.stdout.split())
    assert "TASK [dsg_monitoring : Write the health configuration]" in run.stdout
    health = text.split("TASK [dsg_monitoring : Write the health configuration]", 1)[1]
    assert health.split("TASK [", 1)[0].count("changed: [lab-zfs1]") == 1, run.explain()
    assert "+" in out and "--alert" in out, run.explain()
    leaked = [what for what, value in needles.items() if value in out]
    assert not leaked, f"--check --diff printed {leaked}:\n{run.explain()}"
