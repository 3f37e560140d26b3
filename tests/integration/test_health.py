"""`dsg admin health` and `dsg admin metrics` through the real command.

Every state is driven for real: snapshot age through the injected clock (`--now`), a stale
lock by leaving a holder note in a lock file no process holds, capacity by filling a small
pool of our own, DEGRADED by taking one side of its mirror offline, UNKNOWN with a zfs that
cannot run or a pool that does not exist. Project tests run on both backends (`team`).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from dsg.backends.base import LockOwner
from tests.conftest import RepoSpace
from tests.helpers import DSG, Researcher
from tests.unit.test_metrics import assert_valid_exposition

NO_SCRUB = "scrub_age_warn_days: null\nscrub_age_crit_days: null\n"


def dsg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DSG, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def health(tmp: Path, config: str, access: dict, *args: str, env=None) -> tuple[int, dict]:
    """Run `dsg admin health --json`; return (exit code, the one JSON document)."""
    cfg, acc = tmp / "health.yml", tmp / "access.yml"
    cfg.write_text(config)
    acc.write_text(json.dumps(access))  # JSON is YAML
    proc = dsg(
        "admin", "health", "--config", str(cfg), "--access-file", str(acc), "--json", *args, env=env
    )
    assert proc.stdout.count("\n") == 1, (proc.stdout, proc.stderr)
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == proc.returncode, doc
    return proc.returncode, doc


def by_check(doc: dict, check: str) -> list[dict]:
    return [c for c in doc["checks"] if c["check"] == check]


def access_for(space: RepoSpace, project: str = "proj") -> dict:
    entry: dict = {"mountpoint": str(space.mountpoint / project), "users": {"alice": "write"}}
    if space.backend == "zfs":
        entry["dataset"] = f"{space.parent}/{project}"
    else:
        entry["type"] = "posix"
    return {"projects": {project: entry}}


def lock_file(space: RepoSpace, project: str = "proj") -> Path:
    if space.backend == "zfs":
        return space.mountpoint / ".dsg-locks" / f"{project}.lock"
    return space.mountpoint / project / "lock"


# --- projects: snapshot age, stale locks, metrics (posix and zfs) --------------------------


def test_snapshot_age_ok_warning_critical(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path
) -> None:
    cfg = NO_SCRUB + "snapshot_age_warn_hours: 24\nsnapshot_age_crit_hours: 48\n"
    access = access_for(space)
    code, doc = health(tmp_path, cfg, access)
    assert (code, doc["status"]) == (0, "OK"), doc
    (snap,) = by_check(doc, "snapshot_age")
    assert snap["status"] == "OK" and "newest snapshot s1" in snap["message"]
    if space.backend == "zfs":  # the lab pool's checks are there too
        assert {c["check"] for c in doc["checks"]} == {
            "pool_health", "pool_capacity", "snapshot_age", "stale_lock", "encryption",
        }  # fmt: skip

    later = datetime.now(UTC) + timedelta(hours=30)
    code, doc = health(tmp_path, cfg, access, "--now", later.isoformat())
    assert (code, doc["status"]) == (1, "WARNING")
    assert by_check(doc, "snapshot_age")[0]["status"] == "WARNING"
    assert 30 <= by_check(doc, "snapshot_age")[0]["value"] < 31

    much_later = (datetime.now(UTC) + timedelta(hours=50)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, doc = health(tmp_path, cfg, access, "--now", much_later)
    assert (code, doc["status"]) == (2, "CRITICAL")


def test_stale_lock_warns_and_a_held_lock_does_not(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path
) -> None:
    access = access_for(space)
    path = lock_file(space)
    assert path.exists() and path.read_bytes() == b""  # the last sync released it cleanly
    owner = LockOwner(user="alice@hrdag.org", tx="tx-dead", pid=999999)
    path.write_bytes(orjson.dumps(owner.to_dict()))  # a writer died holding the lock

    code, doc = health(tmp_path, NO_SCRUB, access)
    (lock,) = by_check(doc, "stale_lock")
    assert (code, lock["status"]) == (1, "WARNING"), doc
    assert "stale" in lock["message"] and "alice@hrdag.org" in lock["message"]

    with open(path, "rb") as fh:  # a live writer holds it: not stale
        fcntl.flock(fh, fcntl.LOCK_EX)
        code, doc = health(tmp_path, NO_SCRUB, access)
        (lock,) = by_check(doc, "stale_lock")
        assert (code, lock["status"]) == (0, "OK") and "held by" in lock["message"]
        fcntl.flock(fh, fcntl.LOCK_UN)

    # The probe released its flock: a sync still takes the lock, and clears the note.
    alice, _ = team
    alice.write("task1/input/new.csv", "n\n")
    assert alice.sync(message="after a crash").committed.id == "s2"
    assert path.read_bytes() == b""
    code, doc = health(tmp_path, NO_SCRUB, access)
    assert by_check(doc, "stale_lock")[0]["status"] == "OK"


def test_missing_lock_file_and_missing_repository(tmp_path: Path) -> None:
    access = {"projects": {"ghost": {"type": "posix", "mountpoint": str(tmp_path / "ghost")}}}
    code, doc = health(tmp_path, NO_SCRUB, access)
    assert by_check(doc, "stale_lock")[0]["status"] == "OK"
    snap = by_check(doc, "snapshot_age")[0]
    assert (code, snap["status"]) == (1, "WARNING") and "no dsg repository" in snap["message"]


def test_metrics_file(
    team: tuple[Researcher, Researcher], space: RepoSpace, tmp_path: Path
) -> None:
    alice, _ = team
    alice.write("task1/input/c.csv", "c,3\n")
    alice.sync(message="c")
    acc = tmp_path / "access.yml"
    acc.write_text(json.dumps(access_for(space)))
    out_dir = tmp_path / "textfile"
    out_dir.mkdir()
    target = out_dir / "dsg.prom"
    before = time.time()
    proc = dsg("admin", "metrics", "--access-file", str(acc), "--output", str(target), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] and doc["output"] == str(target) and doc["samples"] > 0
    assert os.listdir(out_dir) == ["dsg.prom"]
    text = target.read_text()
    names = assert_valid_exposition(text)
    for name in (
        "dsg_project_head_snapshot", "dsg_project_snapshots",
        "dsg_project_last_sync_timestamp_seconds", "dsg_project_bytes", "dsg_project_files",
    ):  # fmt: skip
        assert name in names
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if not line.startswith("#")}  # fmt: skip
    assert values['dsg_project_up{project="proj"}'] == 1
    assert values['dsg_project_head_snapshot{project="proj"}'] == 2
    assert values['dsg_project_snapshots{project="proj"}'] == 2
    assert values['dsg_project_files{project="proj"}'] == 4
    assert values['dsg_project_bytes{project="proj"}'] == 4 + 4 + 2 + 4
    assert (
        before - 120
        < values['dsg_project_last_sync_timestamp_seconds{project="proj"}']
        <= time.time()
    )
    if space.backend == "zfs":
        pool = space.pool
        assert values[f'dsg_pool_health{{pool="{pool}",health="ONLINE"}}'] == 1
        assert 0 <= values[f'dsg_pool_capacity_ratio{{pool="{pool}"}}'] < 1
        assert values[f'dsg_pool_size_bytes{{pool="{pool}"}}'] > 0

    # Without --output: the same format on stdout.
    proc = dsg("admin", "metrics", "--access-file", str(acc))
    assert proc.returncode == 0 and assert_valid_exposition(proc.stdout) == names


def test_metrics_for_an_unreadable_project(tmp_path: Path) -> None:
    acc = tmp_path / "access.yml"
    acc.write_text(
        json.dumps({"projects": {"ghost": {"type": "posix", "mountpoint": "/nonexistent/g"}}})
    )
    proc = dsg("admin", "metrics", "--access-file", str(acc))
    assert proc.returncode == 0
    assert 'dsg_project_up{project="ghost"} 0\n' in proc.stdout
    assert "dsg_project_head_snapshot{" not in proc.stdout


# --- UNKNOWN -------------------------------------------------------------------------------


def test_zfs_that_cannot_run_is_unknown(tmp_path: Path) -> None:
    env = {"DSG_ZFS_PREFIX": str(tmp_path / "no-such-zfs-wrapper")}
    code, doc = health(tmp_path, "pools: [tank]\n", {"projects": {}}, env=env)
    assert (code, doc["status"]) == (3, "UNKNOWN")
    assert {c["check"]: c["status"] for c in doc["checks"]} == {
        "pool_health": "UNKNOWN", "pool_capacity": "UNKNOWN", "scrub_age": "UNKNOWN",
    }  # fmt: skip
    assert "command not found" in doc["checks"][0]["message"]

    acc = tmp_path / "access.yml"
    proc = dsg(
        "admin",
        "metrics",
        "--access-file",
        str(acc),
        "--config",
        str(tmp_path / "health.yml"),
        env=env,
    )
    assert proc.returncode == 0
    assert 'dsg_pool_up{pool="tank"} 0\n' in proc.stdout


def test_bad_config_or_access_file_is_unknown(tmp_path: Path) -> None:
    code, doc = health(tmp_path, "capacity_warn_percent: 99\n", {"projects": {}})
    assert (code, doc["status"], doc["ok"]) == (3, "UNKNOWN", False)
    assert "above capacity_crit_percent" in doc["error"]["message"]

    proc = dsg("admin", "health", "--access-file", str(tmp_path / "none.yml"))
    assert proc.returncode == 3
    assert proc.stdout.startswith("DSG HEALTH UNKNOWN - the repository host has no access file")

    proc = dsg("admin", "health", "--access-file", str(tmp_path / "access.yml"), "--now", "soon")
    assert proc.returncode == 3 and "--now" in proc.stdout


def test_text_output_is_a_summary_then_one_line_per_check(tmp_path: Path) -> None:
    (tmp_path / "access.yml").write_text(
        json.dumps({"projects": {"ghost": {"type": "posix", "mountpoint": str(tmp_path / "g")}}})
    )
    (tmp_path / "health.yml").write_text(NO_SCRUB)
    proc = dsg("admin", "health", "--access-file", str(tmp_path / "access.yml"),
               "--config", str(tmp_path / "health.yml"))  # fmt: skip
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1
    assert lines[0].startswith(
        "DSG HEALTH WARNING - 2 checks: 1 warning, 1 ok - snapshot_age ghost:"
    )
    assert lines[1].startswith("WARNING  snapshot_age  ghost: ")
    assert lines[2].startswith("OK       stale_lock    ghost: no lock file")
    assert len(lines) == 3


@pytest.mark.zfs
def test_nonexistent_pool_is_unknown(zfs_lab, tmp_path: Path) -> None:
    pool = f"dsgnopool{uuid.uuid4().hex[:8]}"
    code, doc = health(tmp_path, f"pools: [{pool}]\n", {"projects": {}})
    assert (code, doc["status"]) == (3, "UNKNOWN")
    assert all(c["status"] == "UNKNOWN" and pool in c["message"] for c in doc["checks"])


# --- a small pool of our own: capacity, DEGRADED, scrub ------------------------------------


@pytest.fixture
def small_pool(zfs_lab, tmp_path: Path) -> Iterator[tuple[str, Path, list[Path]]]:
    """A fresh 2 x 64M mirror pool (file-backed, uniquely named), destroyed after the test."""
    name = f"dsghealth{uuid.uuid4().hex[:8]}"
    files = [tmp_path / f"disk{i}.img" for i in (0, 1)]
    for f in files:
        with open(f, "wb") as fh:
            fh.truncate(64 * 1024 * 1024)
    mnt = tmp_path / "mnt"
    zfs_lab.zfs.zpool("create", "-m", str(mnt), name, "mirror", *map(str, files))
    try:
        yield name, mnt, files
    finally:
        zfs_lab.zfs.run("zfs", ["unmount", name], check=False)
        for _ in range(20):
            if zfs_lab.zfs.run("zpool", ["destroy", name], check=False).returncode == 0:
                break
            time.sleep(0.25)
        else:
            zfs_lab.zfs.run("zpool", ["export", "-f", name], check=False)


def _fill(path: Path, mib: int) -> None:
    chunk = os.urandom(1024 * 1024)
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())


def _wait_capacity(zfs_lab, pool: str, at_least: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        cap = zfs_lab.zfs.pool_status(pool).capacity
        if cap >= at_least or time.monotonic() > deadline:
            return cap
        time.sleep(0.5)


@pytest.mark.zfs
def test_capacity_ok_warning_critical(zfs_lab, small_pool, tmp_path: Path) -> None:
    pool, mnt, _ = small_pool
    cfg = NO_SCRUB + f"pools: [{pool}]\ncapacity_warn_percent: 15\ncapacity_crit_percent: 30\n"
    code, doc = health(tmp_path, cfg, {"projects": {}})
    assert (code, by_check(doc, "pool_capacity")[0]["status"]) == (0, "OK"), doc

    _fill(mnt / "a", 12)  # about 20% of the ~60M pool
    assert 15 <= _wait_capacity(zfs_lab, pool, 15) < 30
    code, doc = health(tmp_path, cfg, {"projects": {}})
    cap = by_check(doc, "pool_capacity")[0]
    assert (code, cap["status"]) == (1, "WARNING"), doc
    assert f"{int(cap['value'])}% used" in cap["message"]

    _fill(mnt / "b", 10)  # about 37%
    assert _wait_capacity(zfs_lab, pool, 30) >= 30
    code, doc = health(tmp_path, cfg, {"projects": {}})
    assert (code, by_check(doc, "pool_capacity")[0]["status"]) == (2, "CRITICAL"), doc
    assert doc["summary"].startswith("DSG HEALTH CRITICAL")


@pytest.mark.zfs
def test_degraded_pool_warns(zfs_lab, small_pool, tmp_path: Path) -> None:
    pool, _, files = small_pool
    cfg = NO_SCRUB + f"pools: [{pool}]\n"
    zfs_lab.zfs.zpool("offline", pool, str(files[1]))
    code, doc = health(tmp_path, cfg, {"projects": {}})
    (h,) = by_check(doc, "pool_health")
    assert (code, h["status"], h["message"]) == (1, "WARNING", "pool is DEGRADED")
    acc = tmp_path / "access.yml"
    proc = dsg(
        "admin", "metrics", "--access-file", str(acc), "--config", str(tmp_path / "health.yml")
    )
    assert f'dsg_pool_health{{pool="{pool}",health="DEGRADED"}} 0\n' in proc.stdout
    zfs_lab.zfs.zpool("online", pool, str(files[1]))
    code, doc = health(tmp_path, cfg, {"projects": {}})
    assert by_check(doc, "pool_health")[0]["status"] == "OK"


@pytest.mark.zfs
def test_scrub_age(zfs_lab, small_pool, tmp_path: Path) -> None:
    pool, _, _ = small_pool
    cfg = f"pools: [{pool}]\nscrub_age_warn_days: 35\nscrub_age_crit_days: 60\n"
    code, doc = health(tmp_path, cfg, {"projects": {}})
    (s,) = by_check(doc, "scrub_age")
    if zfs_lab.zfs.platform.is_zfs_fuse:  # a new pool: "none requested"
        assert (code, s["status"]) == (3, "UNKNOWN") and "zfs-fuse" in s["message"]
    else:
        assert (code, s["status"]) == (2, "CRITICAL") and "never been scrubbed" in s["message"]

    zfs_lab.zfs.zpool("scrub", pool)
    deadline = time.monotonic() + 30
    while "scrub in progress" in zfs_lab.zfs.zpool("status", pool) and time.monotonic() < deadline:
        time.sleep(0.2)
    code, doc = health(tmp_path, cfg, {"projects": {}})
    (s,) = by_check(doc, "scrub_age")
    assert (code, s["status"]) == (0, "OK"), doc
    assert s["value"] < 0.01
    # ...and the scrub shows in the metrics: when, and with how many errors
    cfg_file = tmp_path / "health.yml"
    proc = dsg("admin", "metrics", "--config", str(cfg_file), "--access-file",
               str(tmp_path / "access.yml"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    (stamp,) = [
        x for x in lines if x.startswith(f'dsg_pool_last_scrub_timestamp_seconds{{pool="{pool}"}}')
    ]
    assert abs(float(stamp.rsplit(" ", 1)[1]) - time.time()) < 600
    assert f'dsg_pool_scrub_errors{{pool="{pool}"}} 0' in lines
    assert f'dsg_pool_data_errors{{pool="{pool}"}} 0' in lines

    for days, want in ((40, (1, "WARNING")), (61, (2, "CRITICAL"))):
        later = (datetime.now(UTC) + timedelta(days=days)).isoformat()
        code, doc = health(tmp_path, cfg, {"projects": {}}, "--now", later)
        assert (code, by_check(doc, "scrub_age")[0]["status"]) == want
