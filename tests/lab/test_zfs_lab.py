"""scripts/lab/zfs: up/down/status are idempotent and leave nothing running.

Each test drives its own lab instance (its own DSG_LAB_DIR under tmp_path and its own small
pools), so it never disturbs the session lab the other tests use. There is only one zfs-fuse
daemon per machine: when one is already running (the session lab, or another checkout's),
the instance adds its pools to it and `down` must leave that daemon alone; when none is
running, the instance starts its own and `down` must stop it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.zfs_lab import EXIT_DOWN, SCRIPT, parse_up_output, run_script

pytestmark = pytest.mark.zfs


def zfs_fuse_pids() -> set[int]:
    """Live (non-zombie) zfs-fuse processes."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid, _, rest = text.partition(" (zfs-fuse) ")
        if rest and rest[0] not in "ZX":
            pids.add(int(pid))
    return pids


def fuse_zfs_mounts_under(base: Path) -> list[str]:
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "fuse.zfs" and (fields[1] + "/").startswith(str(base) + "/"):
            out.append(fields[1])
    return out


def imported_pools() -> set[str]:
    proc = subprocess.run(["zpool", "list", "-H", "-o", "name"], capture_output=True, text=True)
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


@dataclass
class Instance:
    env: dict[str, str]
    pools: tuple[str, str]
    base: Path

    def run(self, action: str) -> subprocess.CompletedProcess[str]:
        return run_script(action, env=self.env)

    def pid_file(self) -> Path:
        return self.base / "zfs" / "zfs-fuse.pid"

    def mount(self, pool: str) -> Path:
        return self.base / "zfs" / "mnt" / pool


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    if os.geteuid() != 0:
        pytest.skip("the zfs-fuse lab needs root")
    tag = uuid.uuid4().hex[:6]
    pools = (f"dsgt{tag}a", f"dsgt{tag}b")
    env = {
        "DSG_LAB_DIR": str(tmp_path),
        "DSG_LAB_ZFS_POOLS": f"{pools[0]}:64M {pools[1]}:64M",
        # Empty values fall back to the defaults under DSG_LAB_DIR (${VAR:-default}).
        "DSG_LAB_ZFS_DIR": "",
        "DSG_LAB_ZFS_MOUNT_BASE": "",
    }
    inst = Instance(env=env, pools=pools, base=tmp_path)
    first = inst.run("up")
    if first.returncode == 2:
        pytest.skip(f"zfs-fuse lab unavailable: {first.stderr.strip()}")
    assert first.returncode == 0, first.stderr
    try:
        yield inst
    finally:
        inst.run("down")


def test_up_twice_is_idempotent_and_prints_eval_lines(instance: Instance) -> None:
    mount = instance.mount(instance.pools[0])
    (mount / "marker").write_text("kept\n")

    again = instance.run("up")
    assert again.returncode == 0, again.stderr
    assert "created pool" not in again.stderr  # nothing recreated
    printed = parse_up_output(again.stdout)
    assert printed["DSG_LAB_ZFS_POOL"] == instance.pools[0]
    assert printed["DSG_LAB_ZFS_MOUNT"] == str(mount)
    assert printed["DSG_LAB_ZFS_BACKUP_POOL"] == instance.pools[1]
    assert printed["DSG_LAB_ZFS_BACKUP_MOUNT"] == str(instance.mount(instance.pools[1]))
    assert all(line.startswith("DSG_LAB_ZFS_") for line in again.stdout.splitlines())
    assert (mount / "marker").read_text() == "kept\n"
    assert set(instance.pools) <= imported_pools()
    assert sorted(fuse_zfs_mounts_under(instance.base)) == sorted(
        str(instance.mount(p)) for p in instance.pools
    )

    # What callers do: eval the output in a shell.
    shell = subprocess.run(
        ["bash", "-c", 'eval "$("$0" up 2>/dev/null)" && printf %s "$DSG_LAB_ZFS_MOUNT"', SCRIPT],
        capture_output=True,
        text=True,
        env={**os.environ, **instance.env},
        check=False,
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout == str(mount)


def test_status_reports_up_then_down(instance: Instance) -> None:
    up = instance.run("status")
    assert up.returncode == 0, up.stdout + up.stderr
    for pool in instance.pools:
        assert f"pool {pool}: ONLINE" in up.stdout
    assert "daemon: running" in up.stdout

    assert instance.run("down").returncode == 0
    down = instance.run("status")
    assert down.returncode == EXIT_DOWN, down.stdout
    for pool in instance.pools:
        assert f"pool {pool}: not imported" in down.stdout


def test_down_twice_exports_pools_and_stops_own_daemon(instance: Instance) -> None:
    owned = "lab)" in instance.run("status").stdout  # "(pid N, lab)" vs "(pid N, external)"
    daemon_pid = int(instance.pid_file().read_text()) if owned else None
    before = zfs_fuse_pids()

    first = instance.run("down")
    assert first.returncode == 0, first.stderr
    second = instance.run("down")
    assert second.returncode == 0, second.stderr

    assert not set(instance.pools) & imported_pools()
    assert fuse_zfs_mounts_under(instance.base) == []
    if owned:
        assert daemon_pid is not None
        if "also serves pools the lab does not own" in first.stderr:
            pytest.skip("another lab imported pools into this instance's daemon meanwhile")
        assert daemon_pid not in zfs_fuse_pids()
        assert not instance.pid_file().exists()
        assert "already down" in second.stderr
    else:
        # Someone else's daemon (the session lab's, say): still running, untouched.
        assert before and before <= zfs_fuse_pids()


def test_up_recovers_from_a_killed_daemon(instance: Instance) -> None:
    if "lab)" not in instance.run("status").stdout:
        pytest.skip("a zfs-fuse daemon this lab instance did not start is running")
    pid = int(instance.pid_file().read_text())
    data = instance.mount(instance.pools[0]) / "synced"
    with data.open("w") as fh:
        fh.write("survives\n")
        fh.flush()
        os.fsync(fh.fileno())  # ZIL: must survive the crash and be replayed at import

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid in zfs_fuse_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    status = instance.run("status")
    assert status.returncode == EXIT_DOWN
    assert "stale pid file" in status.stdout

    again = instance.run("up")
    assert again.returncode == 0, again.stderr
    assert "stale" in again.stderr  # pid file and FUSE mounts left by the dead daemon
    assert data.read_text() == "survives\n"
    assert instance.run("status").returncode == 0


def test_dead_mounts_of_another_checkout_do_not_block_up(
    instance: Instance, tmp_path: Path
) -> None:
    """A previous checkout's lab died with its pools mounted; a new checkout's lab must come up.

    zfs-fuse finds a dataset's mount by name in /proc/mounts, so the dead mount of a pool named
    like ours (outside our mount base) made `up` fail with "umount: target is busy".
    """
    if "lab)" not in instance.run("status").stdout:
        pytest.skip("a zfs-fuse daemon this lab instance did not start is running")
    pid = int(instance.pid_file().read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid in zfs_fuse_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    old_base = instance.base / "zfs" / "mnt"
    dead = fuse_zfs_mounts_under(old_base)
    assert dead, "the killed daemon should have left its FUSE mounts behind"

    other = {**instance.env, "DSG_LAB_DIR": str(tmp_path / "next-checkout")}
    try:
        proc = run_script("up", env=other)
        assert proc.returncode == 0, proc.stderr
        assert "stale zfs-fuse mount" in proc.stderr
        assert not fuse_zfs_mounts_under(old_base)
        fresh = tmp_path / "next-checkout" / "zfs" / "mnt" / instance.pools[0]
        (fresh / "written").write_text("ok\n")
        assert (fresh / "written").read_text() == "ok\n"
    finally:
        assert run_script("down", env=other).returncode == 0


def test_same_pool_name_from_another_lab_is_refused(instance: Instance, tmp_path: Path) -> None:
    other = {**instance.env, "DSG_LAB_DIR": str(tmp_path / "other")}
    proc = run_script("up", env=other)
    assert proc.returncode == 1
    assert f"a pool named '{instance.pools[0]}' is imported but not from" in proc.stderr
    assert not (tmp_path / "other" / "zfs" / "pools" / f"{instance.pools[0]}.img").exists()

    # The other lab's `down` must not export pools that live on this lab's files.
    assert run_script("down", env=other).returncode == 0
    assert set(instance.pools) <= imported_pools()
    assert instance.run("status").returncode == 0
