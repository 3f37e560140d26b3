#!/usr/bin/env python3
"""Benchmark dsg over SSH against rsync over the same sshd (the lab host).

    .venv/bin/python scripts/benchmarking/ssh_sync_bench.py [--small 5000]
        [--large 3 --large-mb 64] [--rounds 3] [--dir D]

Brings up the lab sshd (scripts/lab/sshd up; needs root), builds a mixed tree (many small
files, a few large ones), then times, side by side in one run:
  initial upload:      dsg init            vs  rsync -rltO tree/ host:dir/
  1% changed upload:   dsg sync            vs  rsync -rltO tree/ host:dir/
                       (1% of the small files; as the `dsg sync` command in a new process,
                       and as ops.sync called in this process)
  initial download:    dsg clone           vs  rsync -rltO host:dir/ tree2/
each --rounds times (default 3), alternating which tool goes first, the page cache flushed
of dirty data before every run, and prints the medians, their dsg/rsync ratio (target:
within 1.5x) and each round's ratio. dsg also hashes everything it sends and verifies it
at the receiver; rsync -rltO checks only size and mtime. dsg's commit also flushes the
new snapshot to disk before it returns, which rsync does not: a second initial-upload row
compares dsg with rsync followed by `sync -f` of its copy. Last, a control: a local `cp -r`
of the tree onto the repositories' filesystem, timed in each round of the initial upload
(with its kernel time), shows whether the disk was in one of its slow spells.
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
from pathlib import Path
from statistics import median

# dsg as installed runs from cached bytecode (pip compiles it on install): a shell that sets
# PYTHONDONTWRITEBYTECODE would make every measured start compile the changed modules again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "engine"))

from dsg.backends.registry import open_repository  # noqa: E402
from dsg.sync import ops  # noqa: E402
from dsg.workcopy.config import ProjectConfig, RepositoryConfig, UserConfig  # noqa: E402
from dsg.workcopy.workspace import Workspace  # noqa: E402


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
    ap.add_argument("--rounds", type=int, default=3, help="runs of each comparison")
    ap.add_argument(
        "--dir",
        default="",
        help="where the repositories, the rsync copies and the trees go (default: the\n"
        "repositories in /srv/dsg-bench, the trees in /tmp). A tmpfs here measures CPU\n"
        "and protocol costs without the disk's swings.",
    )
    args = ap.parse_args()
    # The agent runs as a lab user who cannot write __pycache__ here: compile first, as an
    # installed wheel would be, so it does not recompile on every start.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "engine")], check=True)
    env = lab_up()
    ssh_config = env["DSG_LAB_SSH_CONFIG"]
    os.environ["DSG_SSH_COMMAND"] = f"ssh -F {ssh_config}"
    rsh = f"ssh -F {ssh_config}"

    top = Path(args.dir or "/srv/dsg-bench")
    top.mkdir(exist_ok=True)
    top.chmod(0o755)
    base = top / uuid.uuid4().hex[:8]
    gid = grp.getgrnam("dsg-lab").gr_gid
    for d in (base, base / "repos", base / "rsync", base / "logs"):
        d.mkdir()
        os.chown(d, 0, gid)
        d.chmod(0o2775)
    rounds = args.rounds
    names = [f"bench{k}" for k in range(rounds)]
    (base / "access.yml").write_text(
        "projects:\n"
        + "".join(
            f"  {n}:\n    type: posix\n    mountpoint: {base}/repos/{n}\n"
            "    users: {alice: write, bob: write}\n"
            for n in names
        )
    )
    work = Path(args.dir or "/tmp") / f"dsg-ssh-bench-{base.name}"
    tree = work / "tree"
    tree.mkdir(parents=True)
    t = time.perf_counter()
    generate(tree, args.small, args.large, args.large_mb)
    total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    print(
        f"tree: {args.small} small + {args.large} x {args.large_mb} MiB files, "
        f"{total / 2**20:.0f} MiB, made in {time.perf_counter() - t:.1f}s; {rounds} rounds"
    )

    def cfg(login: str, name: str) -> ProjectConfig:
        return ProjectConfig(
            name=name,
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

    def side_by_side(dsg_run, rsync_run, k: int) -> tuple[float, float]:
        """One round; which tool goes first alternates, so neither always inherits the
        other's disk state."""
        if k % 2:
            t_rs = timed(rsync_run)
            return timed(dsg_run), t_rs
        t_dsg = timed(dsg_run)
        return t_dsg, timed(rsync_run)

    results: dict[str, tuple[list[float], list[float]]] = {}

    def record(what: str, times: tuple[float, float]) -> None:
        d, r = results.setdefault(what, ([], []))
        d.append(times[0])
        r.append(times[1])

    # Initial upload: a new project per round, from a hard-linked copy of the tree. Each
    # round also times a local `cp -r` of the tree onto the repositories' filesystem: a
    # control for the filesystem's state (file creation on the lab disk has spells ten
    # times slower, all of it kernel time, that no tool here causes).
    control: list[tuple[float, float]] = []
    for k, name in enumerate(names):
        src = work / f"alice{k}"
        subprocess.run(["cp", "-al", str(tree), str(src)], check=True)
        c = cfg("alice", name)
        record(
            "initial upload",
            side_by_side(
                lambda c=c, src=src: ops.init(src, c, open_repository(c), alice, "b"),
                lambda src=src, k=k: rsync(f"{src}/", f"lab-alice:{base}/rsync/{k}/"),
                k,
            ),
        )
        # The same upload as rsync followed by a flush of its copy (`sync -f`): the durability
        # dsg's commit gives (its snapshot is on disk when `dsg init` returns), which plain
        # rsync does not. Printed beside the target's row, not instead of it.
        t_rf = timed(
            lambda src=src, k=k: (
                rsync(f"{src}/", f"lab-alice:{base}/rsync/flushed{k}/"),
                subprocess.run(["sync", "-f", str(base / "rsync" / f"flushed{k}")], check=True),
            )
        )
        record("  same, rsync + flush", (results["initial upload"][0][-1], t_rf))
        sys_before = os.times().children_system
        t_cp = timed(lambda src=src, k=k: subprocess.run(["cp", "-r", src, base / f"cp{k}"]))
        control.append((t_cp, os.times().children_system - sys_before))

    # 1% changed: rounds of syncs on the first project, as the command a researcher runs
    # (`dsg sync` as a new process, CLI start-up included) and as ops.sync in this process.
    src, c = work / "alice0", cfg("alice", names[0])
    ws = Workspace(src, c)

    def dsg_sync() -> None:
        repo = open_repository(c)
        try:
            ops.sync(ws, repo, alice, message="1%")
        finally:
            repo.close()

    conf_home = work / "conf"
    conf_home.mkdir()
    (conf_home / "dsg.yml").write_text("user_name: Alice\nuser_id: alice@hrdag.org\n")
    # The agent command is the user's (dsg ignores one in a project file).
    serve = cfg("alice", names[0]).repository.remote_command or "dsg serve"
    cli_env = {**os.environ, "DSG_CONFIG_HOME": str(conf_home), "DSG_REMOTE_COMMAND": serve}

    def dsg_cli() -> None:
        r = subprocess.run(
            [str(REPO / ".venv/bin/dsg"), "sync", "-m", "1%", "--json"],
            cwd=src, env=cli_env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if r.returncode:
            sys.exit(f"dsg sync failed ({r.returncode}): {r.stdout}")

    def rsync_up() -> None:
        rsync(f"{src}/", f"lab-alice:{base}/rsync/0/")

    for k in range(rounds):
        for what, fn in (("1% changed, dsg sync", dsg_cli), ("1% changed, in-proc", dsg_sync)):
            change_one_percent(src)
            record(what, side_by_side(fn, rsync_up, k))

    # Initial download: bob clones the first project into a new directory per round.
    cb = cfg("bob", names[0])
    for k in range(rounds):
        dest, back = work / f"bob{k}", work / f"rsync-back{k}"
        dest.mkdir()
        back.mkdir()
        (dest / ".dsgconfig.yml").write_text(cb.to_yaml())

        def dsg_clone(dest: Path = dest) -> None:
            repo = open_repository(cb)
            try:
                ops.clone(Workspace(dest, cb), repo, bob)
            finally:
                repo.close()

        record(
            "initial download",
            side_by_side(
                dsg_clone, lambda back=back: rsync(f"lab-bob:{base}/rsync/0/", f"{back}/"), k
            ),
        )

    print(f"\n{'what (median)':<22} {'dsg s':>7} {'rsync s':>8} {'ratio':>6}  each round")
    for what, (d, r) in results.items():
        each = " ".join(f"{x / y:.2f}" for x, y in zip(d, r, strict=True))
        print(f"{what:<22} {median(d):7.2f} {median(r):8.2f} {median(d) / median(r):5.2f}x  {each}")
    print(
        "control: local cp -r of the tree onto the repositories' filesystem, each round: "
        + ", ".join(f"{t:.2f} s ({cpu:.2f} s kernel)" for t, cpu in control)
    )
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
