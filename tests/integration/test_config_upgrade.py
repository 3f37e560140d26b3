"""Every project file an existing project may have is read or converted: the legacy
`transport: ssh` form (also `type: zfs` without a pool, which the original found on the host),
the oldest `.dsg/config.yml`, and `dsg config upgrade` (dry run by default, --write) rewriting
any of them as the current `.dsgconfig.yml`. Through the real console script; the pool is
found in the zfs-fuse lab."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from dsg.core.errors import ConfigError
from dsg.workcopy.config import load_project_config, plan_upgrade
from tests.helpers import DSG

FIXTURE = Path(os.environ.get("DSG_FIXTURES", "/work/shared/fixtures")) / "dsg044-two-users"
# The oldest form, as the first dsg's own tests wrote it.
OLDEST = """repo_name: KO
repo_type: xfs
host: scott
repo_path: /var/repos/dsg
data_dirs:
  - input/
  - output/
  - frozen/
ignored_names: [.DS_Store, __pycache__]
ignored_suffixes: [.tmp]
ignored_paths:
  - graphs/
"""


def dsg(*args: str, cwd: Path, cfg: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if cfg is not None:
        env["DSG_CONFIG_HOME"] = str(cfg)
    return subprocess.run(
        [DSG, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "dsg.yml").write_text("user_name: Ana\nuser_id: ana@hrdag.org\n")
    return d


def test_upgrade_of_the_044_fixture_legacy_form(tmp_path: Path) -> None:
    src = FIXTURE / "repo/.dsgconfig.yml"
    if not src.is_file():
        pytest.skip(f"the dsg 0.4.4 fixture is not at {FIXTURE}")
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / ".dsgconfig.yml").write_text(src.read_text())
    before = (proj / ".dsgconfig.yml").read_text()
    dry = dsg("config", "upgrade", cwd=proj)
    assert dry.returncode == 0, dry.stderr
    assert "(legacy form)" in dry.stdout and "Dry run: nothing was written" in dry.stdout
    assert "type xfs -> posix" in dry.stdout and "+repository:" in dry.stdout
    assert (proj / ".dsgconfig.yml").read_text() == before  # dry run by default
    doc = json.loads(dsg("config", "upgrade", "--write", "--json", cwd=proj).stdout)
    assert doc["ok"] and doc["written"] and doc["form"] == "legacy"
    new = yaml.safe_load((proj / ".dsgconfig.yml").read_text())
    assert new == {
        "name": "p44",
        "repository": {"type": "posix", "host": "localhost", "mountpoint": "/var/repos/zsd"},
        "data_dirs": ["input", "output", "frozen"],
    }
    again = json.loads(dsg("config", "upgrade", "--json", cwd=proj).stdout)
    assert again["form"] == "current" and again["needed"] is False
    assert "nothing to change" in dsg("config", "upgrade", cwd=proj).stdout


def test_oldest_form_is_recognised_and_converted(tmp_path: Path, cfg: Path) -> None:
    proj = tmp_path / "old"
    (proj / ".dsg").mkdir(parents=True)
    (proj / ".dsg/config.yml").write_text(OLDEST)
    (proj / "task1/input").mkdir(parents=True)
    # Read directly, it is the same project as its conversion.
    c = load_project_config(proj / ".dsg/config.yml")
    assert (c.name, c.repository.type, c.repository.host, c.repo_path) == (
        "KO",
        "posix",
        "scott",
        "/var/repos/dsg/KO",
    )
    assert c.data_dirs == ["input", "output", "frozen"]
    assert (c.ignore.names, c.ignore.suffixes, c.ignore.paths) == (
        [".DS_Store", "__pycache__"],
        [".tmp"],
        ["graphs"],
    )
    # A command run there names the file and the fix, instead of "no .dsgconfig.yml".
    st = dsg("status", cwd=proj / "task1/input", cfg=cfg)
    assert st.returncode == 1
    assert ".dsg/config.yml" in st.stderr and "dsg config upgrade" in st.stderr
    dry = dsg("config", "upgrade", cwd=proj / "task1/input")
    assert dry.returncode == 0, dry.stderr
    assert "(oldest form)" in dry.stdout and "repo_name -> name" in dry.stdout
    assert not (proj / ".dsgconfig.yml").exists()
    wrote = json.loads(dsg("config", "upgrade", "--write", "--json", cwd=proj).stdout)
    assert wrote["written"] and wrote["target"] == str(proj / ".dsgconfig.yml")
    assert (proj / ".dsg/config.yml").read_text() == OLDEST  # left as it was
    assert load_project_config(proj / ".dsgconfig.yml") == c
    ok = dsg("validate-config", cwd=proj, cfg=cfg)
    assert "configuration is valid" in ok.stdout, ok.stdout + ok.stderr


def test_unknown_keys_of_old_forms_are_still_refused(tmp_path: Path) -> None:
    p = tmp_path / "config.yml"
    p.write_text(OLDEST + "colour: red\n")
    with pytest.raises(ConfigError, match="colour"):
        load_project_config(p)
    p.write_text(OLDEST.replace("repo_path: /var/repos/dsg", "repo_path: relative"))
    with pytest.raises(ConfigError, match=r"repo_path.*absolute"):
        load_project_config(p)


def test_zfs_without_pool_not_found_says_to_add_it(tmp_path: Path) -> None:
    proj = tmp_path / "z"
    proj.mkdir()
    (proj / ".dsgconfig.yml").write_text(
        "name: X\ntransport: ssh\nssh: {host: h, path: /nowhere/at/all, type: zfs}\n"
    )
    bad = dsg("config", "upgrade", "--json", cwd=proj)
    assert bad.returncode == 1
    err = json.loads(bad.stdout)["error"]
    assert "without its pool" in err["message"] and "/nowhere/at/all/X" in err["message"]
    assert "pool:" in err["hint"] and "--pool" in err["hint"]
    doc = json.loads(
        dsg("config", "upgrade", "--pool", "tank", "--write", "--json", cwd=proj).stdout
    )
    assert doc["written"] and "pool tank: from --pool" in doc["changes"]
    assert load_project_config(proj / ".dsgconfig.yml").repository.pool == "tank"


@pytest.mark.zfs
def test_legacy_zfs_without_pool_gets_it_from_the_host(
    tmp_path: Path, cfg: Path, zfs_dataset: str
) -> None:
    """The dataset mounted at the project's path on this machine names the pool (what the
    original auto-detected); validate-config accepts it, upgrade writes it."""
    mnt = subprocess.run(
        ["zfs", "get", "-H", "-o", "value", "mountpoint", zfs_dataset],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    base, name = os.path.dirname(mnt), os.path.basename(mnt)
    pool = zfs_dataset.split("/")[0]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / ".dsgconfig.yml").write_text(
        f"name: {name}\ntransport: ssh\nssh:\n  host: localhost\n  path: {base}\n  type: zfs\n"
    )
    assert load_project_config(legacy / ".dsgconfig.yml").repository.pool == pool
    ok = dsg("validate-config", cwd=legacy, cfg=cfg)
    assert "configuration is valid" in ok.stdout, ok.stdout + ok.stderr
    up = plan_upgrade(legacy / ".dsgconfig.yml")
    assert f"pool {pool}: found on this machine (dataset {zfs_dataset} is mounted there)" in (
        up.changes
    )
    oldest = tmp_path / "oldest"
    (oldest / ".dsg").mkdir(parents=True)
    (oldest / ".dsg/config.yml").write_text(
        f"repo_name: {name}\nrepo_type: zfs\nhost: localhost\nrepo_path: {base}\n"
    )
    doc = json.loads(dsg("config", "upgrade", "--write", "--json", cwd=oldest).stdout)
    assert doc["written"], doc
    c = load_project_config(oldest / ".dsgconfig.yml")
    assert (c.repository.type, c.repository.pool, c.repo_path) == ("zfs", pool, mnt)
