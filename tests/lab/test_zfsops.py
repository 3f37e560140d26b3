"""dsg.zfs.ops against real ZFS: the zfs-fuse lab pools (tests/fixtures/zfs_lab.py)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from dsg.zfs.ops import (
    DatasetBusy,
    DatasetNotFound,
    RollbackRefused,
    Zfs,
    ZfsError,
    ZfsUnsupported,
    detect_platform,
    parse_size,
)
from tests.fixtures.zfs_lab import ZfsLab

pytestmark = pytest.mark.zfs


def mnt(zfs: Zfs, dataset: str) -> Path:
    path = zfs.mountpoint(dataset)
    assert path is not None, f"{dataset} is not mounted"
    return path


def write(zfs: Zfs, dataset: str, rel: str, text: str) -> None:
    (mnt(zfs, dataset) / rel).write_text(text)


def read(zfs: Zfs, dataset: str, rel: str) -> str:
    return (mnt(zfs, dataset) / rel).read_text()


def snap_names(zfs: Zfs, dataset: str) -> list[str]:
    return [s.snapname for s in zfs.list_snapshots(dataset)]


# --- platform ------------------------------------------------------------------------------


def test_platform_detection_matches_what_the_lab_does(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    zfs = zfs_lab.zfs
    platform = detect_platform(zfs, zfs_dataset, refresh=True)
    assert platform.is_zfs_fuse
    assert platform.pool_version == 23
    # Each flag agrees with what the commands really do here.
    assert platform.snapshot_dir == (mnt(zfs, zfs_dataset) / ".zfs" / "snapshot").is_dir()
    assert not platform.snapshot_dir
    allow = zfs.run("zfs", ["allow", zfs_dataset], check=False)
    assert platform.allow == (allow.returncode == 0)
    assert not platform.allow
    enc = zfs.run("zfs", ["get", "encryption", zfs_dataset], check=False)
    assert not platform.encryption and enc.returncode != 0
    pool_p = zfs.run("zpool", ["list", "-H", "-p", "-o", "name"], check=False)
    assert platform.parsable_pool_list == (pool_p.returncode == 0)
    assert not platform.holds_list
    assert not platform.rename_mounted
    # Cached: the instance's platform is the same object every time.
    assert zfs.platform is zfs.platform


def test_rename_of_mounted_dataset_needs_the_workaround(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    zfs = zfs_lab.zfs
    child, renamed = f"{zfs_dataset}/a", f"{zfs_dataset}/b"
    zfs.create_dataset(child)
    write(zfs, child, "f", "x")
    raw = zfs.run("zfs", ["rename", child, renamed], check=False)
    assert raw.returncode != 0 and "busy" in raw.stderr  # the quirk zfsops works around

    zfs.rename_dataset(child, renamed)
    assert not zfs.dataset_exists(child)
    assert read(zfs, renamed, "f") == "x"


# --- datasets and properties ----------------------------------------------------------------


def test_dataset_exists_create_destroy(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    zfs = zfs_lab.zfs
    child = f"{zfs_dataset}/child"
    assert zfs.dataset_exists(zfs_dataset)
    assert not zfs.dataset_exists(child)
    zfs.create_dataset(child, {"dsg:role": "test", "compression": "on"})
    assert zfs.dataset_exists(child)
    assert zfs.get_property(child, "compression") == "on"
    assert zfs.list_datasets(zfs_dataset) == [zfs_dataset, child]
    write(zfs, child, "f", "data")  # mounted, so destroy needs the unmount workaround
    zfs.destroy_dataset(child)
    assert not zfs.dataset_exists(child)
    with pytest.raises(DatasetNotFound):
        zfs.get_property(child, "used")
    with pytest.raises(ValueError):
        zfs.destroy_dataset(zfs_lab.pool)  # never a pool's root


def test_mountpoint(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    zfs = zfs_lab.zfs
    path = zfs.mountpoint(zfs_dataset)
    assert path == zfs_lab.mount / zfs_dataset.split("/", 1)[1]
    assert path.is_dir() and os.path.ismount(path)
    zfs.zfs("unmount", zfs_dataset)
    try:
        assert zfs.mountpoint(zfs_dataset) is None
    finally:
        zfs.zfs("mount", zfs_dataset)


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "with spaces",
        "héllo ünïcode ✓",
        "a=b,c:d;'\"$(x)`",
        "-starts-with-dash",
        "x" * 8191,
    ],
)
def test_user_property_round_trip(zfs_lab: ZfsLab, zfs_dataset: str, value: str) -> None:
    zfs = zfs_lab.zfs
    zfs.set_property(zfs_dataset, "dsg:value", value)
    assert zfs.get_property(zfs_dataset, "dsg:value") == value
    assert zfs.user_properties(zfs_dataset) == {"dsg:value": value}


def test_user_properties_set_inherit_and_namespace(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    zfs = zfs_lab.zfs
    zfs.set_properties(zfs_dataset, {"dsg:a": "1", "dsg:b": "2", "other:c": "3"})
    assert zfs.user_properties(zfs_dataset) == {"dsg:a": "1", "dsg:b": "2"}
    assert zfs.user_properties(zfs_dataset, namespace="other:") == {"other:c": "3"}
    assert zfs.get_properties(zfs_dataset, ["dsg:a", "dsg:unset"]) == {
        "dsg:a": "1",
        "dsg:unset": None,
    }
    zfs.inherit_property(zfs_dataset, "dsg:a")
    assert zfs.get_property(zfs_dataset, "dsg:a") is None
    # Inherited values are not the child's own properties.
    child = f"{zfs_dataset}/c"
    zfs.create_dataset(child)
    assert zfs.get_property(child, "dsg:b") == "2"
    assert zfs.user_properties(child) == {}


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("dsg:UPPER", "x"),  # user property names are lowercase
        ("dsg:sp ace", "x"),  # no spaces in property names
        ("dsg:x", "line\nbreak"),  # would break -H parsing
        ("dsg:x", "tab\there"),
        ("dsg:x", "x" * 8192),  # ZFS's limit is 8191 bytes (8192 aborts zfs-fuse's CLI)
        ("-o", "x"),
    ],
)
def test_bad_properties_are_refused_before_running_zfs(
    zfs_lab: ZfsLab, zfs_dataset: str, prop: str, value: str
) -> None:
    with pytest.raises(ValueError):
        zfs_lab.zfs.set_property(zfs_dataset, prop, value)
    assert zfs_lab.zfs.user_properties(zfs_dataset) == {}


@pytest.mark.parametrize("name", ["-r", "-", "pool/a b", "pool/a\nb", "pool//a", "pool/../x", ""])
def test_bad_names_never_reach_argv(zfs_lab: ZfsLab, name: str) -> None:
    with pytest.raises(ValueError):
        zfs_lab.zfs.dataset_exists(name)
    with pytest.raises(ValueError):
        zfs_lab.zfs.snapshot(name, "s1")


# --- snapshots ------------------------------------------------------------------------------


def test_snapshot_with_user_props_and_list_order(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    zfs = zfs_lab.zfs
    zfs.set_property(zfs_dataset, "dsg:project", "p")  # inherited: not a snapshot's own prop
    order = ["s10", "s2", "a", "z", "s1"]  # creation order differs from name order
    for i, name in enumerate(order):
        write(zfs, zfs_dataset, "f", str(i))
        full = zfs.snapshot(zfs_dataset, name, {"dsg:n": str(i), "dsg:msg": f"take {name}"})
        assert full == f"{zfs_dataset}@{name}"
    child = f"{zfs_dataset}/child"
    zfs.create_dataset(child)
    zfs.snapshot(child, "s99")  # a child's snapshots are not the dataset's

    snaps = zfs.list_snapshots(zfs_dataset)
    assert [s.snapname for s in snaps] == order
    assert [s.createtxg for s in snaps] == sorted(s.createtxg for s in snaps)
    assert len({s.createtxg for s in snaps}) == len(snaps)
    for i, snap in enumerate(snaps):
        assert snap.dataset == zfs_dataset
        assert snap.user_props == {"dsg:n": str(i), "dsg:msg": f"take {order[i]}"}
        assert snap.userrefs == 0
        assert abs(snap.creation - snaps[0].creation) < 120
    assert zfs.snapshots_after(f"{zfs_dataset}@z") == snaps[4:]
    with pytest.raises(DatasetNotFound):
        zfs.snapshots_after(f"{zfs_dataset}@nope")
    with pytest.raises(ZfsError):
        zfs.snapshot(zfs_dataset, "a")  # exists already


def test_list_snapshots_of_dataset_without_any(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    assert zfs_lab.zfs.list_snapshots(zfs_dataset) == []


def test_rollback_to_latest_discards_uncommitted_changes(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    zfs = zfs_lab.zfs
    write(zfs, zfs_dataset, "f", "committed")
    snap = zfs.snapshot(zfs_dataset, "s1")
    write(zfs, zfs_dataset, "f", "half-written")
    write(zfs, zfs_dataset, "stray", "x")
    assert zfs.rollback(snap) == []
    assert read(zfs, zfs_dataset, "f") == "committed"
    assert not (mnt(zfs, zfs_dataset) / "stray").exists()


def test_rollback_over_later_snapshots_is_explicit(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    zfs = zfs_lab.zfs
    for i in range(1, 4):
        write(zfs, zfs_dataset, "f", f"v{i}")
        zfs.snapshot(zfs_dataset, f"s{i}")
    write(zfs, zfs_dataset, "f", "live")

    with pytest.raises(RollbackRefused) as refused:
        zfs.rollback(f"{zfs_dataset}@s1")
    assert refused.value.later == (f"{zfs_dataset}@s2", f"{zfs_dataset}@s3")
    assert snap_names(zfs, zfs_dataset) == ["s1", "s2", "s3"]  # nothing changed
    assert read(zfs, zfs_dataset, "f") == "live"

    destroyed = zfs.rollback(f"{zfs_dataset}@s1", destroy_later=True)
    assert destroyed == [f"{zfs_dataset}@s2", f"{zfs_dataset}@s3"]
    assert snap_names(zfs, zfs_dataset) == ["s1"]
    assert read(zfs, zfs_dataset, "f") == "v1"


def test_rollback_refuses_when_a_later_snapshot_is_held(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    # Plain `zfs rollback -r` would destroy s2, then fail on the held s3: half done.
    zfs = zfs_lab.zfs
    for i in range(1, 4):
        write(zfs, zfs_dataset, "f", f"v{i}")
        zfs.snapshot(zfs_dataset, f"s{i}")
    zfs.hold(f"{zfs_dataset}@s3", "dsg-test")
    try:
        with pytest.raises(RollbackRefused) as refused:
            zfs.rollback(f"{zfs_dataset}@s1", destroy_later=True)
        assert list(refused.value.blocked) == [f"{zfs_dataset}@s3"]
        assert snap_names(zfs, zfs_dataset) == ["s1", "s2", "s3"]
        assert read(zfs, zfs_dataset, "f") == "v3"
    finally:
        zfs.release(f"{zfs_dataset}@s3", "dsg-test")


def test_rollback_refuses_when_a_later_snapshot_is_cloned(
    zfs_lab: ZfsLab, zfs_dataset: str
) -> None:
    zfs = zfs_lab.zfs
    zfs.snapshot(zfs_dataset, "s1")
    zfs.snapshot(zfs_dataset, "s2")
    clone = zfs.clone(f"{zfs_dataset}@s2", zfs_lab.unique_name("clone"))
    try:
        with pytest.raises(RollbackRefused) as refused:
            zfs.rollback(f"{zfs_dataset}@s1", destroy_later=True)
        assert refused.value.blocked == {f"{zfs_dataset}@s2": f"cloned as {clone}"}
        assert snap_names(zfs, zfs_dataset) == ["s1", "s2"]
    finally:
        zfs.destroy_clone(clone)


def test_hold_release_destroy(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    zfs = zfs_lab.zfs
    snap = zfs.snapshot(zfs_dataset, "s1")
    zfs.hold(snap, "dsg-a")
    zfs.hold(snap, "dsg-b")
    try:
        assert zfs.hold_count(snap) == 2
        assert zfs.list_snapshots(zfs_dataset)[0].userrefs == 2
        with pytest.raises(DatasetBusy):
            zfs.destroy_snapshot(snap)
        with pytest.raises(ZfsUnsupported):
            zfs.holds(snap)  # zfs-fuse cannot list tags
    finally:
        zfs.release(snap, "dsg-a")
        zfs.release(snap, "dsg-b")
    assert zfs.hold_count(snap) == 0
    zfs.destroy_snapshot(snap)
    assert zfs.list_snapshots(zfs_dataset) == []
    with pytest.raises(ValueError):
        zfs.destroy_snapshot(zfs_dataset)  # a filesystem is not a snapshot


# --- clones ---------------------------------------------------------------------------------


def test_read_only_clone_shows_old_data(zfs_lab: ZfsLab, zfs_dataset: str, tmp_path: Path) -> None:
    zfs = zfs_lab.zfs
    write(zfs, zfs_dataset, "f", "old")
    snap = zfs.snapshot(zfs_dataset, "s1")
    write(zfs, zfs_dataset, "f", "new")
    where = zfs_lab.mount_base / f"clone-{zfs_dataset.rsplit('/', 1)[1]}"
    clone = zfs.clone(snap, zfs_lab.unique_name("clone"), mountpoint=where)
    try:
        assert zfs.mountpoint(clone) == where
        assert (where / "f").read_text() == "old"
        assert zfs.get_property(clone, "origin") == snap
        with pytest.raises(OSError) as err:
            (where / "g").write_text("must fail")
        assert err.value.errno == errno.EROFS
        with pytest.raises(DatasetBusy):
            zfs.destroy_snapshot(snap)  # the clone depends on it
    finally:
        zfs.destroy_clone(clone)
        if where.is_dir():
            where.rmdir()  # zfs made the mountpoint directory; it does not remove it
    assert not zfs.dataset_exists(clone)
    assert read(zfs, zfs_dataset, "f") == "new"
    with pytest.raises(ZfsError, match="not a clone"):
        zfs.destroy_clone(zfs_dataset)
    assert zfs.dataset_exists(zfs_dataset)


# --- replication ----------------------------------------------------------------------------


def test_replicate_full_then_incremental(
    zfs_lab: ZfsLab, zfs_dataset: str, zfs_backup_target: str
) -> None:
    zfs, src, dst = zfs_lab.zfs, zfs_dataset, zfs_backup_target
    zfs.set_property(src, "dsg:project", "p1")
    write(zfs, src, "a", "1")
    zfs.snapshot(src, "s1", {"dsg:msg": "first"})
    zfs.replicate(f"{src}@s1", dst)
    assert snap_names(zfs, dst) == ["s1"]
    assert read(zfs, dst, "a") == "1"
    assert zfs.list_snapshots(dst)[0].user_props == {"dsg:msg": "first"}
    assert zfs.get_property(dst, "dsg:project") == "p1"  # -p: dataset properties too

    # -i: one step. The target was changed after its last snapshot (any write, even an atime
    # update from reading it), so the receiver refuses an incremental until it may roll the
    # target back first (-F, force=True); the stray change is gone afterwards.
    write(zfs, dst, "stray", "x")
    write(zfs, src, "b", "2")
    zfs.snapshot(src, "s2", {"dsg:msg": "second"})
    with pytest.raises(ZfsError, match="has been modified"):
        zfs.replicate(f"{src}@s2", dst, base=f"{src}@s1")
    assert snap_names(zfs, dst) == ["s1"]
    zfs.replicate(f"{src}@s2", dst, base=f"{src}@s1", force=True)
    assert not (mnt(zfs, dst) / "stray").exists()
    # -I: every intermediate snapshot.
    for i in (3, 4):
        write(zfs, src, "c", str(i))
        zfs.snapshot(src, f"s{i}", {"dsg:msg": f"n{i}"})
    zfs.replicate(f"{src}@s4", dst, base=f"{src}@s2", intermediates=True, force=True)
    assert snap_names(zfs, dst) == ["s1", "s2", "s3", "s4"]
    assert [s.user_props for s in zfs.list_snapshots(dst)] == [
        s.user_props for s in zfs.list_snapshots(src)
    ]
    assert (read(zfs, dst, "a"), read(zfs, dst, "b"), read(zfs, dst, "c")) == ("1", "2", "4")


def test_replicate_unmounted_target_takes_increments_without_force(
    zfs_lab: ZfsLab, zfs_dataset: str, zfs_backup_target: str
) -> None:
    zfs, src, dst = zfs_lab.zfs, zfs_dataset, zfs_backup_target
    write(zfs, src, "f", "1")
    zfs.snapshot(src, "s1")
    zfs.replicate(f"{src}@s1", dst, mount=False)
    assert zfs.dataset_exists(dst)
    assert zfs.mountpoint(dst) is None  # -u: nobody can touch it, so no -F needed later
    write(zfs, src, "f", "2")
    zfs.snapshot(src, "s2")
    zfs.replicate(f"{src}@s2", dst, base=f"{src}@s1", mount=False)
    assert snap_names(zfs, dst) == ["s1", "s2"]
    zfs.zfs("mount", dst)
    assert read(zfs, dst, "f") == "2"


def test_replicate_failure_carries_the_receivers_error(
    zfs_lab: ZfsLab, zfs_dataset: str, zfs_backup_target: str
) -> None:
    zfs, src, dst = zfs_lab.zfs, zfs_dataset, zfs_backup_target
    zfs.snapshot(src, "s1")
    zfs.snapshot(src, "s2")
    zfs.replicate(f"{src}@s1", dst)
    # A full stream into an existing dataset with snapshots is refused by the receiver.
    with pytest.raises(ZfsError) as err:
        zfs.replicate(f"{src}@s2", dst)
    assert err.value.returncode != 0
    assert err.value.cmd[-2:] == ("receive", dst) or err.value.cmd[-1] == dst
    assert "exists" in err.value.stderr or "snapshots" in err.value.stderr
    assert "\n" not in err.value.message  # zfs's wrapped lines are joined
    assert snap_names(zfs, dst) == ["s1"]
    # An incremental from a base the target does not have.
    with pytest.raises(ZfsError):
        zfs.replicate(f"{src}@s2", f"{zfs_lab.backup_pool}/nonexistent/x", base=f"{src}@s1")


def test_send_to_file_and_receive_from_file(
    zfs_lab: ZfsLab, zfs_dataset: str, zfs_backup_target: str, tmp_path: Path
) -> None:
    zfs = zfs_lab.zfs
    write(zfs, zfs_dataset, "f", "payload " * 1000)
    snap = zfs.snapshot(zfs_dataset, "s1", {"dsg:msg": "file"})
    stream = tmp_path / "s1.zstream"
    with stream.open("wb") as out:
        zfs.send(snap, out, properties=True)
    assert stream.stat().st_size > 8000
    with stream.open("rb") as inp:
        zfs.receive(zfs_backup_target, inp)
    assert read(zfs, zfs_backup_target, "f") == "payload " * 1000
    assert zfs.list_snapshots(zfs_backup_target)[0].user_props == {"dsg:msg": "file"}
    # A truncated stream is an error, not a silent partial receive.
    cut = tmp_path / "cut.zstream"
    cut.write_bytes(stream.read_bytes()[: stream.stat().st_size // 2])
    partial = zfs_lab.unique_name("cut", pool=zfs_lab.backup_pool)
    try:
        with cut.open("rb") as inp, pytest.raises(ZfsError):
            zfs.receive(partial, inp)
        assert not zfs.dataset_exists(partial)
    finally:
        zfs_lab.destroy(partial)


# --- pools, errors, prefix ------------------------------------------------------------------


def test_pool_status(zfs_lab: ZfsLab) -> None:
    zfs = zfs_lab.zfs
    assert {zfs_lab.pool, zfs_lab.backup_pool} <= set(zfs.list_pools())
    status = zfs.pool_status(zfs_lab.pool)
    assert status.name == zfs_lab.pool
    assert status.health == "ONLINE"
    assert status.exact is zfs.platform.parsable_pool_list
    assert 0.9 * 2**30 < status.size <= 2**30  # 1G sparse file, minus labels
    assert 0 <= status.capacity <= 100
    assert abs(status.size - status.allocated - status.free) <= 0.02 * status.size
    with pytest.raises(DatasetNotFound):
        zfs.pool_status("dsgnosuchpool")


def test_parse_size() -> None:
    assert parse_size("1016M") == 1016 * 2**20
    assert parse_size("1.50G") == int(1.5 * 2**30)
    assert parse_size("556K") == 556 * 1024
    assert parse_size("0") == 0
    assert parse_size("-") == 0
    with pytest.raises(ValueError):
        parse_size("12Q")


def test_zfs_error_is_clear(zfs_lab: ZfsLab) -> None:
    missing = f"{zfs_lab.pool}/no-such-dataset"
    with pytest.raises(DatasetNotFound) as err:
        zfs_lab.zfs.zfs("get", "used", missing)
    e = err.value
    assert e.returncode == 1
    assert e.cmd[-3:] == ("get", "used", missing)
    assert "does not exist" in e.stderr
    assert missing in str(e) and "exit 1" in str(e)
    assert e.to_dict()["details"]["cmd"] == list(e.cmd)


def test_command_prefix(zfs_lab: ZfsLab, zfs_dataset: str) -> None:
    # `env` stands in for `sudo -n`: it must be in front of every command.
    prefixed = Zfs(prefix=["env", "DSG_ZFS_PREFIX_TEST=1"], platform=zfs_lab.zfs.platform)
    assert prefixed.argv("zfs", ["list"])[:2] == ["env", "DSG_ZFS_PREFIX_TEST=1"]
    assert prefixed.dataset_exists(zfs_dataset)
    prefixed.snapshot(zfs_dataset, "p1", {"dsg:via": "prefix"})
    assert zfs_lab.zfs.list_snapshots(zfs_dataset)[0].user_props == {"dsg:via": "prefix"}
    assert Zfs.from_env({"DSG_ZFS_PREFIX": "sudo -n"}).prefix == ("sudo", "-n")

    broken = Zfs(prefix=["/nonexistent/sudo"], platform=zfs_lab.zfs.platform)
    with pytest.raises(ZfsError) as err:
        broken.dataset_exists(zfs_dataset)
    assert err.value.returncode == 127


def test_non_root_cannot_use_zfs_fuse(zfs_lab: ZfsLab) -> None:
    # The daemon's socket directory is 0700 root: non-root users need a prefix (sudo -n).
    proc = subprocess.run(
        ["runuser", "-u", "nobody", "--", zfs_lab.zfs.zfs_cmd, "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "Permission denied" in proc.stderr
