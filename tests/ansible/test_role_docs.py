"""Every role's README.md is what scripts/maintenance/role_docs.py makes of its
argument_specs, defaults and assert/fail tasks: the two cannot drift."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "maintenance" / "role_docs.py"


def check(roles: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", "--roles", str(roles)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_every_role_readme_matches_its_argument_specs() -> None:
    roles = [p for p in (REPO_ROOT / "roles").iterdir() if (p / "meta/argument_specs.yml").exists()]
    assert roles and all((p / "README.md").exists() for p in roles)
    proc = check(REPO_ROOT / "roles")
    assert proc.returncode == 0, proc.stderr


def test_a_changed_default_makes_the_readme_stale(tmp_path: Path) -> None:
    role = tmp_path / "roles" / "dsg_retention"
    shutil.copytree(REPO_ROOT / "roles" / "dsg_retention", role)
    assert check(tmp_path / "roles").returncode == 0
    defaults = role / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text().replace("/etc/sanoid", "/etc/elsewhere", 1))
    proc = check(tmp_path / "roles")
    assert proc.returncode == 1 and "dsg_retention/README.md" in proc.stderr
