#!/usr/bin/env python3
"""Benchmark dsg over SSH against rsync over the same sshd (the lab host).

    .venv/bin/python scripts/benchmarking/ssh_sync_bench.py [--small 5000] [--large 3 --large-mb 64]

Brings up the lab sshd (scripts/lab/sshd up; needs root), builds a mixed tree (many small
files, a few large ones), then times, side by side in one run:
  initial upload:      dsg init            vs  rsync -rltO tree/ host:dir/
  1% changed upload:   dsg sync            vs  rsync -rltO tree/ host:dir/
                       (--rounds times each, alternating: the `dsg sync` command as a new
                       process, and ops.sync called in this process; medians are printed)
  initial download:    dsg clone           vs  rsync -rltO host:dir/ tree2/
and prints each dsg/rsync ratio (target: within 1.5x). dsg also hashes everything it
sends and verifies it at the receiver; rsync -rltO checks only size and mtime.
"""

from __future__ import annotations

import argparse
import grp
import os
import shutil
import subprocess
import sys
import time
import uuid
from statistics import median
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "engine"))

from dsg import ops  # noqa: E402
from dsg.backends import open_repository  # noqa: E402
from dsg.config import ProjectConfig, RepositoryConfig, UserConfig  # noqa: E402
from dsg.workspace import Workspace  # noqa: E402


def lab_up() -> dict[str, str]:
    out = subprocess.run(
        [str(REPO / "scripts/lab/sshd"), "up"], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def generate(root: Path, small: int, large: int, large_mb: int) -> None:
    for i in range(small):
        d = root / f"task{i % 4}" / "input" / f"b{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"r{i:06d}.csv").write_bytes(os.urandom(2048) + f"{i}\n".encode() * 200)
    big = root / "task0" / "frozen"
    big.mkdir(parents=True, exist_ok=True)
    for j in range(large):
        with open(big / f"big{j}.parquet", "wb") as f:
            for _ in range(large_mb):
                f.write(os.urandom(1 << 20))


def change_one_percent(root: Path) -> None:
    # 1% of the small files (the large ones stay as they are: dsg sends a changed file
    # whole, rsync sends a delta, a difference this benchmark does not measure).
    files = sorted(p for p in root.glob("task*/input/**/*") if p.is_file())
    for p in files[:: max(1, len(files) // max(1, len(files) // 100))]:
        with open(p, "ab") as f:
            f.write(b"changed\n")


def timed(fn) -> float:
    # Start each run with no dirty data in the page cache: otherwise whichever tool runs
    # right after a large write pays for its writeback (file creation here slows from
    # ~20 us to ~0.5 ms), and the order of the runs decides the ratio.
    os.sync()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--large", type=int, default=3)
    ap.add_argument("--large-mb", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="1%% changed syncs of each kind")
    args = ap.parse_args()
    # The agent runs as a lab user who cannot write __pycache__ here: compile first, as an
    # installed wheel would be, so it does not recompile on every start.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "engine")], check=True)
    env = lab_up()
    ssh_config = env["DSG_LAB_SSH_CONFIG"]
    os.environ["DSG_SSH_COMMAND"] = f"ssh -F {ssh_config}"
    rsh = f"ssh -F {ssh_config}"

    top = Path("/srv/dsg-bench")
    top.mkdir(exist_ok=True)
    base = top / uuid.uuid4().hex[:8]
    gid = grp.getgrnam("dsg-lab").gr_gid
    for d in (base, base / "repos", base / "rsync", base / "logs"):
        d.mkdir()
        os.chown(d, 0, gid)
        d.chmod(0o2775)
    (base / "access.yml").write_text(
        f"projects:\n  bench:\n    type: posix\n    mountpoint: {base}/repos/bench\n"
        "    users: {alice: write, bob: write}\n"
    )
    work = Path(f"/tmp/dsg-ssh-bench-{base.name}")
    src, clone_dir, rsync_back = work / "alice", work / "bob", work / "rsync-back"
    for d in (src, clone_dir, rsync_back):
        d.mkdir(parents=True)
    t = time.perf_counter()
    generate(src, args.small, args.large, args.large_mb)
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    print(
        f"tree: {args.small} small + {args.large} x {args.large_mb} MiB files, "
        f"{total / 2**20:.0f} MiB, made in {time.perf_counter() - t:.1f}s"
    )

    def cfg(login: str) -> ProjectConfig:
        return ProjectConfig(
            name="bench",
            repository=RepositoryConfig(
                type="posix",
                host=f"lab-{login}",
                mountpoint=str(base / "repos"),
                remote_command=f"{REPO}/.venv/bin/dsg serve --access-file {base}/access.yml "
                f"--log-dir {base}/logs",
            ),
        )

    alice = UserConfig(user_name="Alice", user_id="alice@hrdag.org")
    bob = UserConfig(user_name="Bob", user_id="bob@hrdag.org")

    def rsync(a: str, b: str) -> None:
        # -rlt: recursive, symlinks, mtimes -- what dsg keeps (-a would also try owners and
        # groups, which a lab user may not set). dsg's own state directory is left out.
        subprocess.run(["rsync", "-rltO", "--exclude=.dsg/", "-e", rsh, a, b], check=True)

    rows = []
    t_dsg = timed(lambda: ops.init(src, cfg("alice"), open_repository(cfg("alice")), alice, "b"))
    t_rs = timed(lambda: rsync(f"{src}/", f"lab-alice:{base}/rsync/"))
    rows.append(("initial upload", t_dsg, t_rs))
    change_one_percent(src)
    ws = Workspace(src, cfg("alice"))

    def dsg_sync() -> None:
        repo = open_repository(cfg("alice"))
        try:
            ops.sync(ws, repo, alice, message="1%")
        finally:
            repo.close()

    # The command a researcher runs: `dsg sync` as a new process (CLI start-up included).
    conf_home = work / "conf"
    conf_home.mkdir()
    (conf_home / "dsg.yml").write_text("user_name: Alice\nuser_id: alice@hrdag.org\n")
    cli_env = {**os.environ, "DSG_CONFIG_HOME": str(conf_home)}

    def dsg_cli() -> None:
        r = subprocess.run(
            [str(REPO / ".venv/bin/dsg"), "sync", "-m", "1%", "--json"],
            cwd=src, env=cli_env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if r.returncode:
            sys.exit(f"dsg sync failed ({r.returncode}): {r.stdout}")

    def rsync_up() -> None:
        rsync(f"{src}/", f"lab-alice:{base}/rsync/")

    # Side by side, alternating, several rounds: the median of each is printed.
    inproc, cli, rs = [], [], []
    for _ in range(args.rounds):
        for fn, out in ((dsg_sync, inproc), (dsg_cli, cli)):
            change_one_percent(src)
            out.append(timed(fn))
            rs.append(timed(rsync_up))
    rows.append(("1% changed, dsg sync", median(cli), median(rs)))
    rows.append(("1% changed, in-proc", median(inproc), median(rs)))
    cfg_bob = cfg("bob")
    (clone_dir / ".dsgconfig.yml").write_text(cfg_bob.to_yaml())

    def dsg_clone() -> None:
        repo = open_repository(cfg_bob)
        try:
            ops.clone(Workspace(clone_dir, cfg_bob), repo, bob)
        finally:
            repo.close()

    t_dsg = timed(dsg_clone)
    t_rs = timed(lambda: rsync(f"lab-bob:{base}/rsync/", f"{rsync_back}/"))
    rows.append(("initial download", t_dsg, t_rs))

    print(f"\n{'what':<20} {'dsg s':>8} {'rsync s':>8} {'ratio':>7} {'dsg MiB/s':>10}")
    for name, d, r in rows:
        rate = total / 2**20 / d if "1%" not in name else float("nan")
        print(f"{name:<20} {d:8.2f} {r:8.2f} {d / r:6.2f}x {rate:10.1f}")
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
