#!/usr/bin/env python3
"""Run the runbook's recovery procedures in the zfs-fuse lab and time them (MTTR).

    scripts/lab/zfs up
    sudo .venv/bin/python scripts/maintenance/recovery_drills.py [--files 2000] [--mib 200] [--json]

Creates its own pools (a two-way mirror "primary" and a "backup", file-backed under a temp
dir), a project with --files files totalling --mib MiB, and then, timing each recovery
(the commands, not the human reading the runbook):

1. restore a lost project: backup, the dataset is moved aside as damaged, `dsg admin
   restore` into a new dataset, swapped into place, a researcher clones and syncs on;
   plus the periodic `dsg admin restore-drill` of the same project.
2. recover a stuck transaction: a sync killed after its data was written but before the
   snapshot (DSG_CRASH_AT=zfs.before_snapshot); the next `dsg sync` rolls back and commits.
3. replace a failed disk: one side of the mirror is wiped; `zpool replace` with a new disk,
   resilver until ONLINE, scrub clean, `dsg validate-snapshot` passes.

Everything it creates is destroyed at the end. Numbers go to docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "engine"))
from dsg.zfs.ops import Zfs  # noqa: E402

DSG = str(REPO / ".venv" / "bin" / "dsg")


def sh(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


class Copy:
    """A researcher's working copy driven through the real `dsg` command."""

    def __init__(self, root: Path, cfg: Path, name: str, mount: Path, pool: str) -> None:
        self.root, self.cfg = root, cfg
        root.mkdir(parents=True)
        cfg.mkdir(parents=True, exist_ok=True)
        (cfg / "dsg.yml").write_text(f"user_name: {name.title()}\nuser_id: {name}@hrdag.org\n")
        (root / ".dsgconfig.yml").write_text(
            f"name: proj\nrepository:\n  type: zfs\n  host: localhost\n"
            f"  mountpoint: {mount}\n  pool: {pool}\n"
        )

    def dsg(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [DSG, *args], cwd=self.root, capture_output=True, text=True,
            env={**os.environ, "DSG_CONFIG_HOME": str(self.cfg), **(env or {})},
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise SystemExit(f"dsg {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc.stdout


def timed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return round(time.monotonic() - t0, 2)


def wait_for(cond: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting")
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (zfs-fuse lab): run scripts/lab/zfs up, then sudo")
    tmp = Path(tempfile.mkdtemp(prefix="dsg-drills-"))
    tag = uuid.uuid4().hex[:6]
    prim, bk = f"dsgdr{tag}p", f"dsgdr{tag}b"
    disks = [tmp / f"{prim}-{i}.img" for i in range(3)]
    size = max(512, ns.mib * 3) * 1024 * 1024
    for d in [*disks, tmp / f"{bk}.img"]:
        with open(d, "wb") as fh:
            fh.truncate(size)
    mnt = tmp / "mnt"
    sh("zpool", "create", "-o", "cachefile=none", "-m", str(mnt / prim), prim, "mirror",
       str(disks[0]), str(disks[1]))  # fmt: skip
    sh("zpool", "create", "-o", "cachefile=none", "-m", str(mnt / bk), bk, str(tmp / f"{bk}.img"))
    sh("zfs", "create", f"{prim}/dsg")
    sh("zfs", "create", f"{prim}/dsg/proj")
    repo_mnt = mnt / prim / "dsg"
    access = tmp / "access.yml"
    access.write_text(json.dumps({"projects": {"proj": {
        "dataset": f"{prim}/dsg/proj", "mountpoint": str(repo_mnt / "proj")}}}))  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    try:
        alice = Copy(tmp / "alice" / "proj", tmp / "cfg-alice", "alice", repo_mnt, prim)
        per = max(1, ns.mib * 1024 * 1024 // ns.files)
        for i in range(ns.files):
            p = alice.root / "task1" / "input" / f"d{i // 100:03d}" / f"f{i:05d}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(os.urandom(per))
        t_init = timed(lambda: alice.dsg("init", "-m", "evidence"))
        (alice.root / "task1" / "output" / "r.txt").parent.mkdir(parents=True)
        (alice.root / "task1" / "output" / "r.txt").write_text("result\n")
        alice.dsg("sync", "-m", "results")
        admin = [DSG, "admin"]
        t_backup = timed(lambda: sh(*admin, "backup", "--to", f"{bk}/dsg", "--access-file",
                                    str(access), "--log-dir", str(tmp)))  # fmt: skip

        # 1. restore a lost project
        drill_t = timed(lambda: sh(*admin, "restore-drill", "proj", "--from", f"{bk}/dsg",
                                   "--log-dir", str(tmp)))  # fmt: skip

        zfs = Zfs()

        def restore() -> None:
            # zfs-fuse cannot rename a mounted dataset; Zfs.rename_dataset copes (OpenZFS can)
            zfs.rename_dataset(f"{prim}/dsg/proj", f"{prim}/dsg/proj-damaged")
            sh(*admin, "restore", "proj", "--from", f"{bk}/dsg", "--to", f"{prim}/dsg/proj-new",
               "--log-dir", str(tmp))  # fmt: skip
            zfs.rename_dataset(f"{prim}/dsg/proj-new", f"{prim}/dsg/proj")
            bob = Copy(tmp / "bob" / "proj", tmp / "cfg-bob", "bob", repo_mnt, prim)
            bob.dsg("clone")
            (bob.root / "task1" / "output" / "bob.txt").write_text("after restore\n")
            bob.dsg("sync", "-m", "after restore")

        results["restore a lost project"] = {"seconds": timed(restore)}
        results["restore drill (restore + verify + clean up)"] = {"seconds": drill_t}

        # 2. a stuck transaction
        alice.dsg("sync")  # pick up bob's snapshot
        (alice.root / "task1" / "output" / "more.txt").write_text("more\n")
        alice.dsg("sync", "-m", "crashes", env={"DSG_CRASH_AT": "zfs.before_snapshot"},
                  check=False)  # fmt: skip
        results["recover a stuck transaction (next sync)"] = {
            "seconds": timed(lambda: alice.dsg("sync", "-m", "after crash"))
        }

        # 3. a failed disk
        def replace() -> None:
            sh("zpool", "offline", prim, str(disks[1]))
            with open(disks[1], "r+b") as fh:  # the disk dies: its contents are gone
                fh.write(b"\0" * (4 * 1024 * 1024))
            sh("zpool", "replace", prim, str(disks[1]), str(disks[2]))
            wait_for(lambda: "resilver in progress" not in sh("zpool", "status", prim)
                     and "ONLINE" in sh("zpool", "list", "-H", "-o", "health", prim))  # fmt: skip
            sh("zpool", "scrub", prim)
            wait_for(lambda: "scrub in progress" not in sh("zpool", "status", prim))
            status = sh("zpool", "status", prim)
            if "errors: No known data errors" not in status:
                raise SystemExit(f"pool not clean after the replacement:\n{status}")
            alice.dsg("validate-snapshot")

        results["replace a failed disk (resilver + scrub + validate)"] = {"seconds": timed(replace)}
        results["(context) init of the project"] = {"seconds": t_init}
        results["(context) first full backup"] = {"seconds": t_backup}
    finally:
        for pool in (prim, bk):
            subprocess.run(["zfs", "unmount", "-f", pool], capture_output=True)
            subprocess.run(["zpool", "destroy", "-f", pool], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    if ns.json:
        print(json.dumps({"files": ns.files, "mib": ns.mib, "drills": results}, indent=2))
    else:
        print(f"recovery drills, zfs-fuse lab, {ns.files} files / {ns.mib} MiB:")
        for name, r in results.items():
            print(f"  {name:56s} {r['seconds']:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
