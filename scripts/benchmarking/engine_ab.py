#!/usr/bin/env python3
"""Two engines side by side: this checkout's and another commit's, on the same work.

    .venv/bin/python scripts/benchmarking/engine_ab.py --old ab56901              # 30,000 files
    .venv/bin/python scripts/benchmarking/engine_ab.py --old HEAD~3 --files 100000 --rounds 6
        [--new REV] [--dir D] [--json out.json]

Checks the other commit's engine out (git worktree, under --dir; with --new, the new one too,
so the working tree may change during a run), builds one tree of small
files, gives each engine its own copy and its own local posix repository (`dsg init`), then
runs rounds that alternate which engine goes first:

  no-op status   `dsg status` twice, the second timed (the first may leave a clean stamp)
  1% status      `dsg status` after appending a byte to the same 1% of files in both copies
  1% sync        `dsg sync` of that change
  init, clone    with --copies: `dsg init` of a copy of the tree into a new repository, and
                 `dsg clone` of the engine's repository into an empty directory (both
                 removed after the round)

Each command is a new process of the same interpreter with PYTHONPATH at one engine; its
wall time and its CPU (user + system, with its children: the prescan) are measured. Prints
medians (CPU min-max) and new/old ratios. Both engines must read the same .dsgconfig.yml.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# dsg as installed runs from cached bytecode (pip compiles it on install): a shell that sets
# PYTHONDONTWRITEBYTECODE would make every measured start compile the changed modules again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
REPO = Path(__file__).resolve().parents[2]
OPS = ("no-op status", "1% status", "1% sync")
COPY_OPS = ("init", "clone")
RUN = "import sys; sys.argv = ['dsg', *sys.argv[1:]]; from dsg.entry import main; main()"


def run(engine: Path, wc: Path, conf: Path, *args: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(engine), "DSG_CONFIG_HOME": str(conf)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUN, *args], cwd=wc, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{engine}: dsg {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--old", required=True, help="the other commit (any git revision)")
    ap.add_argument(
        "--new", default=None, help="the commit measured as new (default: this working tree)"
    )
    ap.add_argument("--files", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--dir", type=Path, default=None, help="where trees go (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--copies", action="store_true", help="also time init and clone each round")
    a = ap.parse_args()
    ops = OPS + COPY_OPS if a.copies else OPS
    top = Path(tempfile.mkdtemp(prefix="dsg-engine-ab-", dir=a.dir))
    try:
        old = top / "old"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(old), a.old],
            check=True,
            capture_output=True,
        )
        engines = {"old": old / "engine", "new": REPO / "engine"}
        if a.new:  # a commit of its own, so the working tree can change during the run
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPO),
                    "worktree",
                    "add",
                    "--detach",
                    "-f",
                    str(top / "new"),
                    a.new,
                ],
                check=True,
                capture_output=True,
            )
            engines["new"] = top / "new" / "engine"
        conf = top / "conf"
        conf.mkdir()
        (conf / "dsg.yml").write_text("user_name: Bench\nuser_id: bench@hrdag.org\n")
        rng = random.Random(1)
        files = [f"task{i % 10}/input/b{i // 500:04}/r{i:07}.csv" for i in range(a.files)]
        sizes = [rng.randint(64, 1024) for _ in files]
        copies = {}
        for name, engine in engines.items():
            wc, repos = top / name / "wc", top / name / "repos"
            repos.mkdir(parents=True)
            for f, n in zip(files, sizes, strict=True):
                p = wc / f
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b"x" * n)
            (wc / ".dsgconfig.yml").write_text(
                f"name: ab\nrepository:\n  type: posix\n  host: localhost\n"
                f"  mountpoint: {repos}\ndata_dirs: [input, output, frozen]\n"
            )
            time.sleep(0.1)  # past the racy window
            wall, cpu = run(engine, wc, conf, "init", "--no-interactive", "-m", "init")
            print(f"{name}: init {wall:.2f} s ({cpu:.2f} CPU s)", flush=True)
            copies[name] = wc
        res: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in range(a.rounds):
            change = rng.sample(files, max(1, a.files // 100))
            for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                engine, wc = engines[name], copies[name]
                run(engine, wc, conf, "status")
                res.setdefault((name, OPS[0]), []).append(run(engine, wc, conf, "status"))
                for f in change:
                    with open(wc / f, "ab") as fh:
                        fh.write(b"y")
                time.sleep(0.1)
                res.setdefault((name, OPS[1]), []).append(run(engine, wc, conf, "status"))
                res.setdefault((name, OPS[2]), []).append(
                    run(engine, wc, conf, "sync", "-m", f"round {r}")
                )
                if a.copies:
                    res.setdefault((name, "init"), []).append(copy_init(engine, wc, conf, top))
                    res.setdefault((name, "clone"), []).append(copy_clone(engine, wc, conf, top))
            print(f"round {r + 1} done", flush=True)
        out = []
        new = a.new or "this checkout"
        print(f"\n{a.files:,} files, {a.rounds} rounds; old = {a.old}, new = {new}")
        print(f"{'operation':14} {'engine':6} {'wall s':>8} {'CPU s':>8} {'CPU min-max':>14}")
        for op in ops:
            med = {}
            for name in engines:
                v = res[(name, op)]
                wall = statistics.median(x[0] for x in v)
                cpu = statistics.median(x[1] for x in v)
                lo, hi = min(x[1] for x in v), max(x[1] for x in v)
                med[name] = (wall, cpu)
                print(f"{op:14} {name:6} {wall:8.3f} {cpu:8.3f} {lo:6.3f}-{hi:.3f}")
                out.append({"op": op, "engine": name, "wall": wall, "cpu": cpu, "runs": v})
            print(
                f"{op:14} new/old  wall {med['new'][0] / med['old'][0]:.2f}x"
                f"  CPU {med['new'][1] / med['old'][1]:.2f}x"
            )
        if a.json:
            a.json.write_text(
                json.dumps({"files": a.files, "old": a.old, "new": a.new, "rows": out})
            )
    finally:
        for name in ("old", "new"):
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(top / name)],
                capture_output=True,
            )
        shutil.rmtree(top, ignore_errors=True)


def copy_init(engine: Path, wc: Path, conf: Path, top: Path) -> tuple[float, float]:
    """`dsg init` of a copy of the tree (its data directories only) into a new repository."""
    scratch = top / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "repos").mkdir(parents=True)
    shutil.copytree(wc, scratch / "wc", ignore=shutil.ignore_patterns(".dsg", ".dsgconfig.yml"))
    os.sync()  # the copy's writeback is not the init's to pay
    try:
        return run(
            engine, scratch / "wc", conf, "init", "--no-interactive", "--repo-type", "posix",
            "--host", "localhost", "--repo-path", str(scratch / "repos"), "--repo-name", "ab",
            "-m", "init",
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def copy_clone(engine: Path, wc: Path, conf: Path, top: Path) -> tuple[float, float]:
    """`dsg clone` of the engine's repository into a directory holding only the config."""
    scratch = top / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    shutil.copy(wc / ".dsgconfig.yml", scratch / ".dsgconfig.yml")
    os.sync()
    try:
        return run(engine, scratch, conf, "clone")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
