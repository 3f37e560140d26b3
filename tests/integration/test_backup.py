"""Backups and restore drills on real ZFS: two zfs-fuse pools stand for primary and backup.

Everything goes through the real `dsg admin backup` / `dsg admin restore-drill` commands:
replicate, change, replicate incrementally, an interrupted transfer (the sending dsg process
dies mid-stream) and the resume, holds that keep the newest common snapshot, a diverged backup
refused, a drill that passes, and a drill on a backup whose pool file took bit rot, which
fails loudly and shows in the metric.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RepoSpace
from tests.helpers import DSG, Researcher, tree_content

pytestmark = pytest.mark.zfs


@dataclass
class Pair:
    primary: str
    backup: str
    backup_file: Path
    space: RepoSpace
    access: Path
    textfiles: Path
    log_dir: Path
    lab: object

    def dsg(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        metrics = [] if args[0] == "restore" else ["--textfile-dir", str(self.textfiles)]
        return subprocess.run(
            [DSG, "admin", *args, "--log-dir", str(self.log_dir), *metrics, "--json"],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )  # fmt: skip

    def backup_run(self, env: dict[str, str] | None = None) -> tuple[int, dict]:
        proc = self.dsg("backup", "--to", f"{self.backup}/dsg", "--access-file", str(self.access),
                        env=env)  # fmt: skip
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {"stderr": proc.stderr}
        return proc.returncode, doc

    def drill(self) -> tuple[int, dict]:
        proc = self.dsg("restore-drill", "proj", "--from", f"{self.backup}/dsg")
        assert proc.stdout.strip(), proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    def snaps(self, dataset: str) -> list[str]:
        return [s.snapname for s in self.lab.zfs.list_snapshots(dataset)]  # type: ignore[attr-defined]

    def metric(self, kind: str, name: str) -> float:
        text = (self.textfiles / f"dsg_{kind}_proj.prom").read_text()
        for line in text.splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in {text}")


def _pool(lab, name: str, file: Path, mnt: Path) -> None:
    with open(file, "wb") as fh:
        fh.truncate(128 * 1024 * 1024)
    lab.zfs.zpool("create", "-o", "cachefile=none", "-m", str(mnt), name, str(file))


def _destroy_pool(lab, name: str) -> None:
    lab.zfs.run("zfs", ["unmount", "-f", name], check=False)
    for _ in range(20):
        if lab.zfs.run("zpool", ["destroy", "-f", name], check=False).returncode == 0:
            return
        time.sleep(0.25)
    lab.zfs.run("zpool", ["export", "-f", name], check=False)


@pytest.fixture
def pair(zfs_lab, tmp_path: Path) -> Iterator[Pair]:
    tag = uuid.uuid4().hex[:6]
    primary, backup = f"dsgbk{tag}p", f"dsgbk{tag}b"
    files = {p: tmp_path / f"{p}.img" for p in (primary, backup)}
    mnts = {p: tmp_path / "mnt" / p for p in (primary, backup)}
    _pool(zfs_lab, primary, files[primary], mnts[primary])
    _pool(zfs_lab, backup, files[backup], mnts[backup])
    # Data blocks must be findable in the pool file for the bit-rot test: no compression.
    zfs_lab.zfs.set_property(backup, "compression", "off")
    zfs_lab.zfs.set_property(primary, "compression", "off")
    parent = f"{primary}/dsg"
    zfs_lab.zfs.create_dataset(parent)
    space = RepoSpace("zfs", mnts[primary] / "dsg", primary, parent, zfs_lab)
    access = tmp_path / "access.yml"
    access.write_text(
        json.dumps(
            {
                "projects": {
                    "proj": {
                        "dataset": f"{parent}/proj",
                        "mountpoint": str(space.mountpoint / "proj"),
                        "users": {"alice": "write"},
                    }
                }
            }
        )
    )
    (tmp_path / "prom").mkdir()
    (tmp_path / "logs").mkdir()
    try:
        yield Pair(primary, backup, files[backup], space, access, tmp_path / "prom",
                   tmp_path / "logs", zfs_lab)  # fmt: skip
    finally:
        for p in (primary, backup):  # held snapshots go with their pool
            _destroy_pool(zfs_lab, p)


def researcher(pair: Pair, tmp_path: Path, name: str = "alice") -> Researcher:
    pair.space.prepare("proj")
    return Researcher(
        name, tmp_path / name / "proj", tmp_path / "cfg" / name, pair.space.config("proj")
    )


def test_replicate_change_incremental_and_drill(pair: Pair, tmp_path: Path) -> None:
    alice = researcher(pair, tmp_path)
    alice.write("task1/input/a.csv", "a\n")
    alice.write("task1/input/b.csv", os.urandom(200_000))
    alice.init("first")
    alice.write("task1/output/r.txt", "r\n")
    alice.sync(message="second")

    code, doc = pair.backup_run()
    assert code == 0, doc
    res = doc["projects"][0]
    assert [(s["kind"], s["snapshot"]) for s in res["steps"]] == [
        ("full", "s1"),
        ("incremental", "s2"),
    ]
    target = f"{pair.backup}/dsg/proj"
    assert pair.snaps(target) == ["s1", "s2"]
    # the records travel with the snapshots
    props = pair.lab.zfs.list_snapshots(target)[-1].user_props
    assert props["dsg:id"] == "s2" and json.loads(props["dsg:record"])["message"] == "second"
    # the copy is read-only and not mounted over the primary
    assert pair.lab.zfs.get_property(target, "readonly") == "on"
    assert pair.lab.zfs.get_property(target, "mountpoint") != str(pair.space.mountpoint / "proj")
    # the newest common snapshot is held on both sides, older ones are released
    assert pair.lab.zfs.hold_count(f"{target}@s2") == 1
    assert pair.lab.zfs.hold_count(f"{target}@s1") == 0
    assert pair.lab.zfs.hold_count(f"{pair.space.parent}/proj@s2") == 2  # dsg + dsg-backup
    assert pair.lab.zfs.hold_count(f"{pair.space.parent}/proj@s1") == 1  # dsg only
    assert pair.metric("backup", "dsg_backup_success") == 1
    assert pair.metric("backup", "dsg_backup_snapshot") == 2
    assert pair.metric("backup", "dsg_backup_lag_seconds") == 0

    # nothing new: nothing sent
    code, doc = pair.backup_run()
    assert code == 0 and doc["projects"][0]["steps"] == [], doc

    # change, then an incremental that sends only the new snapshot
    alice.write("task1/input/a.csv", "a v2\n")
    alice.sync(message="third")
    dry = pair.dsg("backup", "--to", f"{pair.backup}/dsg", "--dry-run", "--access-file",
                   str(pair.access))  # fmt: skip
    assert dry.returncode == 0
    planned = json.loads(dry.stdout)["projects"][0]["plan"]["steps"]
    assert planned == [{"snapshot": "s3", "base": "s2", "kind": "incremental"}]
    assert pair.snaps(target) == ["s1", "s2"]  # the dry run changed nothing
    code, doc = pair.backup_run()
    assert code == 0, doc
    assert [s["snapshot"] for s in doc["projects"][0]["steps"]] == ["s3"]
    assert pair.snaps(target) == ["s1", "s2", "s3"]
    assert pair.lab.zfs.hold_count(f"{target}@s2") == 0

    code, doc = pair.drill()
    assert code == 0, doc
    drill = doc["drill"]
    assert drill["ok"] and drill["snapshot"] == "s3" and drill["files"] == 3, drill
    assert drill["cleaned_up"]
    assert not [d for d in pair.lab.zfs.list_datasets(pair.backup) if "/drill-" in d]
    assert pair.metric("restore_drill", "dsg_restore_drill_success") == 1
    assert pair.metric("restore_drill", "dsg_restore_drill_files_verified") == 3

    audit = [json.loads(x) for x in (pair.log_dir / "audit.jsonl").read_text().splitlines()]
    assert [(r["action"], r["outcome"]) for r in audit][-1] == ("admin.restore-drill", "ok")
    assert ("admin.backup", "s3") in [(r["action"], r.get("common")) for r in audit]


def test_interrupted_transfer_resumes_from_the_newest_common_snapshot(
    pair: Pair, tmp_path: Path
) -> None:
    alice = researcher(pair, tmp_path)
    alice.write("task1/input/a.csv", "a\n")
    alice.init("first")
    code, _ = pair.backup_run()
    assert code == 0
    for i in range(2, 5):  # s2..s4, each with enough data to take several chunks
        alice.write(f"task1/input/big{i}.bin", os.urandom(3 * 1024 * 1024))
        alice.sync(message=f"change {i}")

    # The sending dsg dies in the middle of the first incremental's stream.
    code, _ = pair.backup_run(env={"DSG_CRASH_AT": "backup.mid_stream"})
    assert code == 137
    target = f"{pair.backup}/dsg/proj"
    assert pair.snaps(target) == ["s1"]  # the truncated stream was discarded
    assert not [d for d in pair.lab.zfs.list_datasets(pair.backup) if "%" in d]

    code, doc = pair.backup_run()
    assert code == 0, doc
    assert [s["snapshot"] for s in doc["projects"][0]["steps"]] == ["s2", "s3", "s4"]
    assert pair.snaps(target) == ["s1", "s2", "s3", "s4"]
    code, doc = pair.drill()
    assert code == 0 and doc["drill"]["snapshot"] == "s4", doc
    assert doc["drill"]["files"] == 4


def test_diverged_backup_is_refused_and_left_alone(pair: Pair, tmp_path: Path) -> None:
    alice = researcher(pair, tmp_path)
    alice.write("task1/input/a.csv", "a\n")
    alice.init("first")
    assert pair.backup_run()[0] == 0
    target = f"{pair.backup}/dsg/proj"
    # Someone snapshots the backup by hand with a dsg-like name the primary does not have.
    pair.lab.zfs.set_property(target, "readonly", "off")
    pair.lab.zfs.snapshot(target, "s2")
    alice.write("task1/input/a.csv", "a v2\n")
    alice.sync(message="second")
    code, doc = pair.backup_run()
    assert code == 1
    err = doc["projects"][0]["error"]
    assert err["kind"] == "backup_diverged"
    assert f"{target}@s2 differs from the primary's" in err["message"]
    assert pair.snaps(target) == ["s1", "s2"]  # untouched
    assert pair.metric("backup", "dsg_backup_success") == 0


def _rot(pool_file: Path, marker: bytes) -> int:
    """Overwrite every copy of `marker` in the pool file (bit rot under ZFS's feet)."""
    hits = 0
    with open(pool_file, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mm:
        at = mm.find(marker)
        while at != -1:
            mm[at : at + len(marker)] = bytes(b ^ 0x5A for b in marker)
            hits += 1
            at = mm.find(marker, at + len(marker))
        mm.flush()
    return hits


def test_drill_on_a_rotten_backup_fails_loudly_and_the_metric_shows_it(
    pair: Pair, tmp_path: Path
) -> None:
    alice = researcher(pair, tmp_path)
    marker = b"EVIDENCE-" + uuid.uuid4().hex.encode() + b"-"
    alice.write("task1/input/a.csv", "a\n")
    alice.write("task1/input/evidence.bin", marker * (256 * 1024 // len(marker)))
    alice.init("first")
    before = tree_content(alice.root)
    assert pair.backup_run()[0] == 0
    assert pair.drill()[0] == 0
    assert pair.metric("restore_drill", "dsg_restore_drill_success") == 1

    # Rot the data blocks of the backup copy (export first: no cache may hide it).
    pair.lab.zfs.zpool("export", pair.backup)
    assert _rot(pair.backup_file, marker) > 0
    pair.lab.zfs.zpool("import", "-o", "cachefile=none", "-d", str(pair.backup_file.parent),
                       pair.backup)  # fmt: skip

    code, doc = pair.drill()
    assert code == 1, doc
    assert doc["ok"] is False
    err = doc["error"]
    assert err["kind"] == "restore_drill_failed"
    assert "restore drill of proj FAILED" in err["message"]
    assert err["details"]["cleaned_up"] is True
    assert pair.metric("restore_drill", "dsg_restore_drill_success") == 0
    # the last good drill is still on record
    assert pair.metric("restore_drill", "dsg_restore_drill_last_success_timestamp_seconds") > 0
    print("drill on the rotten backup:", err["message"])
    # the primary was never touched, and it still validates
    assert tree_content(alice.root) == before
    assert alice.cli("validate-snapshot", "--json").returncode == 0


def test_restore_a_lost_project_and_keep_syncing(pair: Pair, tmp_path: Path) -> None:
    """The runbook's 'restore a project': the primary dataset is lost, the backup brings back
    its whole history, researchers clone and sync on from it."""
    alice = researcher(pair, tmp_path)
    alice.write("task1/input/a.csv", "a\n")
    alice.init("first")
    alice.write("task1/input/b.csv", "b\n")
    alice.sync(message="second")
    before = tree_content(alice.root)
    assert pair.backup_run()[0] == 0

    lost = f"{pair.space.parent}/proj"
    dest = f"{pair.space.parent}/proj-restored"
    argv = ["restore", "proj", "--from", f"{pair.backup}/dsg", "--to", dest]
    proc = pair.dsg(*argv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(proc.stdout)["restore"]
    assert (res["head"], res["snapshots"]) == ("s2", 2)
    # writable, dsg's holds in place, mounted beside the original
    assert pair.lab.zfs.get_property(dest, "readonly") == "off"
    assert pair.lab.zfs.hold_count(f"{dest}@s1") == 1
    assert res["mountpoint"] == str(pair.space.mountpoint / "proj-restored")
    # never over an existing dataset
    again = pair.dsg(*argv)
    assert again.returncode == 1 and "never overwrites" in again.stdout

    # Swap it into place the way the runbook says (the lost one moved aside), then go on.
    pair.lab.zfs.rename_dataset(lost, f"{pair.space.parent}/proj-damaged")
    pair.lab.zfs.rename_dataset(dest, lost)
    bob = Researcher("bob", tmp_path / "bob" / "proj", tmp_path / "cfg" / "bob",
                     pair.space.config("proj"))  # fmt: skip
    bob.clone()
    assert tree_content(bob.root) == before
    bob.write("task1/output/after.txt", "after restore\n")
    bob.sync(message="after restore")
    assert pair.snaps(lost)[-1] == "s3"
    audit = (pair.log_dir / "audit.jsonl").read_text()
    assert '"action":"admin.restore"' in audit and '"snapshot":"s2"' in audit


def test_health_reports_replication_lag(pair: Pair, tmp_path: Path) -> None:
    cfg = tmp_path / "health.yml"
    cfg.write_text(
        f"backup_target: {pair.backup}/dsg\nsnapshot_age_warn_hours: null\n"
        "snapshot_age_crit_hours: null\nscrub_age_warn_days: null\nscrub_age_crit_days: null\n"
        "stale_locks: false\nreplication_lag_warn_hours: 24\nreplication_lag_crit_hours: 72\n"
    )

    def replication(now: float | None = None) -> tuple[int, dict]:
        args = [DSG, "admin", "health", "--config", str(cfg), "--access-file", str(pair.access),
                "--json"]  # fmt: skip
        if now is not None:
            args += ["--now", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        doc = json.loads(proc.stdout)
        (check,) = [c for c in doc["checks"] if c["check"] == "replication"]
        return proc.returncode, check

    alice = researcher(pair, tmp_path)
    alice.write("task1/input/a.csv", "a\n")
    alice.init("first")
    code, check = replication()
    assert (code, check["status"]) == (2, "CRITICAL") and "no backup" in check["message"]
    assert pair.backup_run()[0] == 0
    code, check = replication()
    assert (code, check["status"], check["message"][:7]) == (0, "OK", "in sync")

    alice.write("task1/input/a.csv", "a v2\n")
    alice.sync(message="not backed up yet")
    created = pair.lab.zfs.list_snapshots(f"{pair.space.parent}/proj")[-1].creation
    assert replication(created + 3600)[1]["status"] == "OK"
    code, check = replication(created + 30 * 3600)
    assert (code, check["status"]) == (1, "WARNING")
    assert "1 snapshot(s) behind" in check["message"]
    assert replication(created + 80 * 3600)[1]["status"] == "CRITICAL"
    assert pair.backup_run()[0] == 0
    assert replication(created + 80 * 3600)[1]["status"] == "OK"


def test_researcher_ahead_of_a_restored_head_is_stopped_then_resyncs(
    pair: Pair, tmp_path: Path
) -> None:
    """The snapshot after the last backup is lost with the primary; the researcher who made
    it is told, nothing changes, and the runbook's re-sync brings the work back."""
    alice = researcher(pair, tmp_path)
    alice.write("task1/input/a.csv", "a\n")
    alice.init("first")
    assert pair.backup_run()[0] == 0
    alice.write("task1/input/b.csv", "b\n")
    alice.sync(message="second, never backed up")
    ahead = tree_content(alice.root)
    lost = f"{pair.space.parent}/proj"
    pair.lab.zfs.rename_dataset(lost, f"{pair.space.parent}/proj-damaged")
    assert pair.dsg("restore", "proj", "--from", f"{pair.backup}/dsg", "--to", lost).returncode == 0

    proc = alice.cli("sync", "--json")
    assert proc.returncode == 1
    err = json.loads(proc.stdout)["error"]
    assert "older than this working copy's base (s2)" in err["message"]
    assert pair.snaps(lost) == ["s1"]

    # Runbook: clone afresh, copy the working files over, sync.
    fresh = Researcher("alice", tmp_path / "alice-fresh" / "proj", tmp_path / "cfg" / "alice",
                       pair.space.config("proj"))  # fmt: skip
    fresh.clone()
    subprocess.run(["rsync", "-a", "--exclude", ".dsg", "--exclude", ".dsgconfig.yml",
                    f"{alice.root}/", f"{fresh.root}/"], check=True)  # fmt: skip
    fresh.sync(message="re-sync after restore")
    assert pair.snaps(lost) == ["s1", "s2"]
    assert tree_content(fresh.root) == ahead
