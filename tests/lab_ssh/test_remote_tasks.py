"""Fabric tasks (engine/dsg/remote.py, scripts/production/fabfile.py) over the lab sshd.

Alice has a working copy on a remote analysis host (the lab host) syncing to a posix
repository there; the tasks run dsg in it over real SSH, as she would from her laptop.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from dsg.admin import remote
from tests.helpers import REPO_ROOT, skip_unless_lab_users_can_run

pytestmark = pytest.mark.ssh
DSG = str(REPO_ROOT / ".venv" / "bin" / "dsg")


@pytest.fixture
def analysis_host(sshd_lab):
    lab = sshd_lab
    skip_unless_lab_users_can_run(lab, DSG)
    alice = pwd.getpwnam("alice")
    gid = grp.getgrnam(lab.group).gr_gid
    top = Path("/srv/dsg-lab-tests")
    top.mkdir(exist_ok=True)
    base = top / f"fab-{uuid.uuid4().hex[:8]}"
    for d in (base, base / "repos"):
        d.mkdir()
        os.chown(d, 0, gid)
        d.chmod(0o2775)
    wc = base / "alice-wc"
    (wc / "t" / "input").mkdir(parents=True)
    (wc / "t" / "input" / "a.csv").write_text("a\n")
    cfg_home = base / "alice-cfg"
    cfg_home.mkdir()
    (cfg_home / "dsg.yml").write_text("user_name: Alice\nuser_id: alice@hrdag.org\n")
    for p in (wc, *wc.rglob("*"), cfg_home, cfg_home / "dsg.yml"):
        os.chown(p, alice.pw_uid, alice.pw_gid)
    init = lab.run(
        "alice",
        ["env", "-C", str(wc), f"DSG_CONFIG_HOME={cfg_home}", DSG, "init", "--repo-type", "posix",
         "--host", "localhost", "--repo-path", str(base / "repos"), "--repo-name", "proj",
         "--no-interactive"],
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    cfg = remote.RemoteConfig(
        ssh_config=str(lab.ssh_config),
        known_hosts=str(lab.known_hosts),
        key_file=str(lab.keys["alice"]),
        dsg=f"env DSG_CONFIG_HOME={cfg_home} {DSG}",
        command_timeout=120,
    )
    yield lab, base, wc, cfg
    shutil.rmtree(base, ignore_errors=True)


def test_researcher_tasks_status_sync_log_fetch(analysis_host) -> None:
    lab, base, wc, cfg = analysis_host
    host = lab.alias("alice")
    [st] = remote.status([host], str(wc), cfg)
    assert st.ok, st.error
    assert st.data["remote_head"] == "s1"
    new = wc / "t" / "input" / "b.csv"
    new.write_text("b\n")
    os.chown(new, pwd.getpwnam("alice").pw_uid, -1)
    # dry run: the plan, and nothing changes
    dry = remote.RemoteConfig(**{**cfg.__dict__, "dry_run": True})
    [plan] = remote.sync([host], str(wc), dry, "x")
    assert plan.ok and plan.dry_run
    assert {f["path"]: f["action"] for f in plan.data["files"]} == {"t/input/b.csv": "upload"}
    assert (base / "repos" / "proj" / "HEAD").read_text().strip() == "s1"
    [done] = remote.sync([host], str(wc), cfg, "b from the analysis host")
    assert done.ok, done.error
    assert done.data["committed"]["id"] == "s2"
    [lg] = remote.log([host], str(wc), cfg)
    assert [s["message"] for s in lg.data["snapshots"]] == [
        "b from the analysis host",
        "initial snapshot",
    ]
    out = base / "a-s1.csv"
    fx = remote.fetch(host, str(wc), cfg, "t/input/a.csv", "s1", str(out))
    assert fx.ok, fx.error
    assert out.read_text() == "a\n"


def test_per_host_results_and_exit_code(analysis_host, tmp_path) -> None:
    lab, _, wc, cfg = analysis_host
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    bad = remote.RemoteConfig(**{**cfg.__dict__, "known_hosts": str(empty)})
    results = remote.status([lab.alias("alice")], str(wc), bad)
    assert not results[0].ok and "known_hosts" in results[0].error
    mixed = remote.status([lab.alias("alice"), "nonexistent.invalid"], str(wc), cfg)
    assert [r.ok for r in mixed] == [True, False]
    assert remote.exit_code(mixed) == 1 and remote.exit_code(mixed[:1]) == 0


def test_fab_command_line(analysis_host) -> None:
    lab, _, wc, cfg = analysis_host
    fab = str(REPO_ROOT / ".venv" / "bin" / "fab")
    proc = subprocess.run(
        [fab, "-r", str(REPO_ROOT / "scripts" / "production"), "status", "--hosts",
         lab.alias("alice"), "--workdir", str(wc), "--ssh-config", cfg.ssh_config,
         "--known-hosts", cfg.known_hosts, "--key", cfg.key_file, "--dsg", cfg.dsg],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = json.loads(proc.stdout.splitlines()[0])
    assert line["ok"] and line["data"]["base"] == "s1"
