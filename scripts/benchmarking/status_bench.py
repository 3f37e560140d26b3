#!/usr/bin/env python3
"""Benchmark `dsg status` on a generated tree, side by side with plain walks.

    .venv/bin/python scripts/benchmarking/status_bench.py            # 100k files
    .venv/bin/python scripts/benchmarking/status_bench.py --files 1000000

Prints, for the same tree in the same run: files/s and peak memory of `dsg status` with a
warm hash cache (nothing changed), after touching 1% of files, and from a cold cache (every
file hashed); beside `find -printf` (a C walk + stat), a Python scandir+lstat walk, and
`git status` (a git-class scan), with ratios. Numbers on a noisy 2-core VM: compare within
one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

# dsg as installed runs from cached bytecode (pip compiles it on install): a shell that sets
# PYTHONDONTWRITEBYTECODE would make every measured start compile the changed modules again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "engine"))


def generate(root: Path, n: int, size: int) -> None:
    per_dir = 1000
    payload = os.urandom(size)
    for i in range(n):
        d = root / f"task{i // 50_000:02d}" / "input" / f"batch{(i // per_dir) % 50:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"rec_{i:07d}.csv").write_bytes(payload[: size - 8] + i.to_bytes(8, "little"))


def child(mode: str, root: str) -> None:
    from dsg.backends.registry import open_repository
    from dsg.sync import ops
    from dsg.workcopy.config import load_project_config
    from dsg.workcopy.workspace import Workspace

    t = time.perf_counter()
    if mode == "walk":
        n = 0
        stack = [root]
        while stack:
            for de in os.scandir(stack.pop()):
                if de.is_dir(follow_symlinks=False):
                    stack.append(de.path)
                else:
                    de.stat(follow_symlinks=False)
                    n += 1
    else:
        if mode == "cold":
            for name in ("hashcache.bin", "hashcache.gz", "clean.json"):
                Path(root, ".dsg", name).unlink(missing_ok=True)
        cfg = load_project_config(Path(root) / ".dsgconfig.yml")
        ws = Workspace(Path(root), cfg)
        res = ops.status(ws, open_repository(cfg))
        n = res.plan.unchanged + len(res.plan.items)
    elapsed = time.perf_counter() - t
    rss = peak_rss()
    print(json.dumps({"files": n, "seconds": elapsed, "peak_rss": rss}))


def peak_rss() -> int:
    """This process's peak resident memory (VmHWM: reset at exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(mode: str, root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE), "--child", mode, str(root)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=256, help="bytes per file")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: /tmp)")
    ap.add_argument("--no-git", action="store_true", help="skip the git status baseline")
    ap.add_argument("--keep", action="store_true", help="keep the generated tree")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return

    from dsg.backends.registry import open_repository
    from dsg.sync import ops
    from dsg.workcopy.config import ProjectConfig, RepositoryConfig, UserConfig

    work = (args.dir or Path("/tmp")) / f"dsg-status-bench-{args.files}"
    shutil.rmtree(work, ignore_errors=True)
    proj, repos = work / "proj", work / "repos"
    proj.mkdir(parents=True)
    repos.mkdir()
    t = time.perf_counter()
    generate(proj, args.files, args.size)
    print(f"generated {args.files} files of {args.size} B in {time.perf_counter() - t:.1f}s")

    cfg = ProjectConfig(
        name="bench",
        repository=RepositoryConfig(type="posix", host="localhost", mountpoint=str(repos)),
    )
    user = UserConfig(user_name="Bench", user_id="bench@hrdag.org")
    t = time.perf_counter()
    ops.init(proj, cfg, open_repository(cfg), user, "bench")
    t_init = time.perf_counter() - t
    print(f"dsg init (hash + store + snapshot): {t_init:.1f}s = {args.files / t_init:,.0f} files/s")

    rows: list[tuple[str, float, int | None]] = []
    t_find = timed(["find", str(proj), "-printf", "%s %T@ %i %p\n"], proj)
    rows.append(("find -printf (C walk+stat)", t_find, None))
    w = run_child("walk", proj)
    rows.append(("python scandir+lstat walk", w["seconds"], w["peak_rss"]))
    if not args.no_git and shutil.which("git"):
        ident = {"NAME": "bench", "EMAIL": "bench@example.org"}
        env = {**os.environ}
        for role in ("AUTHOR", "COMMITTER"):
            env.update({f"GIT_{role}_{k}": v for k, v in ident.items()})
        subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
        subprocess.run(["git", "add", "-A"], cwd=proj, check=True, env=env)
        subprocess.run(["git", "commit", "-qm", "x"], cwd=proj, check=True, env=env)
        timed(["git", "status", "--porcelain"], proj)  # prime the index
        rows.append(("git status", timed(["git", "status", "--porcelain"], proj), None))

    warm = run_child("warm", proj)
    rows.append(("dsg status, warm (nothing changed)", warm["seconds"], warm["peak_rss"]))
    step = 100
    for i, p in enumerate(sorted(proj.rglob("rec_*.csv"))):
        if i % step == 0:
            with open(p, "ab") as f:
                f.write(b"x")
    touched = run_child("warm", proj)
    rows.append((f"dsg status, {100 // step}% changed", touched["seconds"], touched["peak_rss"]))
    cold = run_child("cold", proj)
    rows.append(("dsg status, cold cache (hash all)", cold["seconds"], cold["peak_rss"]))

    n = args.files
    print(f"\n{'what':<38} {'seconds':>8} {'files/s':>11} {'vs find':>8} {'peak RSS':>10}")
    for name, secs, rss in rows:
        mem = f"{rss / 2**20:8.0f}MB" if rss else ""
        print(f"{name:<38} {secs:8.2f} {n / secs:11,.0f} {secs / t_find:7.1f}x {mem:>10}")
    print(f"\npeak RSS per file, warm status: {warm['peak_rss'] / n:.0f} B (includes interpreter)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
