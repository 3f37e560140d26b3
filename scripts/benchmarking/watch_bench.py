#!/usr/bin/env python3
"""A no-op `dsg status` with and without `dsg watch`, side by side with `git status` (issue 23).

    .venv/bin/python scripts/benchmarking/watch_bench.py                 # 100,000 files
    .venv/bin/python scripts/benchmarking/watch_bench.py --files 1000000 --rounds 3
        [--rounds 5] [--dir D] [--json out.json] [--keep] [--dsg PATH]

Builds scale_bench.py's tree (HRDAG's layout, mixed small files), makes it a dsg project
with a local posix repository (`dsg init`) and a git repository of the same tree kept
outside it (GIT_DIR), then times, --rounds times each, warm page cache, the first tool
rotating from round to round:

  no-op status            dsg status (no watcher: it walks the tree) | git status
  no-op status, watched   dsg status with `dsg watch` running         | git status

Each command is its own process; its time is wall time and its peak RSS GNU time's %M
(scale_bench.run). The watcher's own figures are printed too: the time until it answers
(its watches set up), its peak RSS (VmHWM) and the number of directories it watches. Prints
medians, min-max, peak RSS and the ratios to git status. The machine is shared and noisy:
compare ratios within one run. Needs git; Linux (inotify).
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
from pathlib import Path
from statistics import median

# dsg as installed runs from cached bytecode (pip compiles it on install): a shell that sets
# PYTHONDONTWRITEBYTECODE would make every measured start compile the changed modules again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[2] / "engine"))

import scale_bench  # noqa: E402  (this directory's: the tree and the measuring)

from dsg.workcopy import watch  # noqa: E402

TOOLS = ("dsg status", "dsg status + watch", "git status")


def vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", help="where to build the tree (default: the temp directory)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the tree afterwards")
    ap.add_argument("--dsg", type=Path, default=scale_bench.DSG, help="the dsg to measure")
    a = ap.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("watch_bench.py: dsg watch is Linux-only (inotify)")
    if shutil.which("git") is None:
        sys.exit("watch_bench.py: git is needed (it is the reference)")
    top = Path(a.dir or tempfile.gettempdir())
    w = top / f"dsg-watch-bench-{a.files}-{uuid.uuid4().hex[:6]}"
    w.mkdir(parents=True)
    try:
        doc = bench(w, a)
    finally:
        if not a.keep:
            shutil.rmtree(w, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(doc, indent=2) + "\n")


def bench(w: Path, a: argparse.Namespace) -> dict:
    dsg = str(a.dsg.absolute())
    conf = w / "conf"
    conf.mkdir()
    (conf / "dsg.yml").write_text("user_name: Bench\nuser_id: bench@hrdag.org\n")
    env = {**os.environ, "DSG_CONFIG_HOME": str(conf)}
    proj, repos = w / "proj", w / "repos"
    repos.mkdir()
    t = time.perf_counter()
    nbytes = scale_bench.generate(proj, a.files)
    (proj / ".dsgconfig.yml").write_text(
        "name: watchbench\nrepository:\n  type: posix\n  host: localhost\n"
        f"  mountpoint: {repos}\ndata_dirs: [input, output, frozen]\n"
    )
    scale_bench.quiet([dsg, "init", "-m", "s1"], cwd=proj, env=env)
    genv = {**os.environ, "GIT_DIR": str(w / "git"), "GIT_WORK_TREE": str(proj)}
    scale_bench.quiet(["git", "init", "-q"], env=genv)
    scale_bench.quiet(["git", "config", "gc.auto", "0"], env=genv)
    (w / "git" / "info" / "exclude").write_text("/.dsg/\n/.dsgconfig.yml\n")
    scale_bench.quiet(["git", "-c", "core.looseCompression=0", "add", "-A"], env=genv, cwd=proj)
    scale_bench.quiet(["git", "commit", "-qm", "tree"], env=genv, cwd=proj)
    scale_bench.quiet(["git", "update-index", "--refresh"], env=genv, cwd=proj)
    time.sleep(0.1)  # past the racy window: the next status leaves a clean stamp
    scale_bench.run([dsg, "status"], cwd=proj, env=env)
    print(
        f"tree: {a.files:,} files, {nbytes / 2**20:,.0f} MiB, set up in "
        f"{time.perf_counter() - t:.1f} s; {a.rounds} rounds; {w}",
        flush=True,
    )
    rows: dict[str, list[tuple]] = {tool: [] for tool in TOOLS}
    dsg_status = [dsg, "status"]
    git_status = ["git", "status"]

    def rounds(tools: list[tuple[str, list[str], dict]]) -> None:
        for k in range(a.rounds):
            s = k % len(tools)
            for tool, argv, kw in tools[s:] + tools[:s]:
                m = scale_bench.run(argv, **kw)
                if tool.startswith("dsg") and "Up to date" not in m[2]:
                    raise scale_bench.Failed(f"a no-op dsg status found changes:\n{m[2][-2000:]}")
                rows[tool].append(m)

    rounds(
        [
            ("dsg status", dsg_status, {"cwd": proj, "env": env}),
            ("git status", git_status, {"cwd": proj, "env": genv}),
        ]
    )
    t = time.perf_counter()
    watcher = subprocess.Popen(
        [dsg, "watch"], cwd=proj, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        while watch.token(proj / ".dsg") is None:
            if watcher.poll() is not None:
                raise scale_bench.Failed(f"dsg watch exited: {watcher.stderr.read().decode()}")
            time.sleep(0.01)
        ready = time.perf_counter() - t
        scale_bench.run(dsg_status, cwd=proj, env=env)  # the stamp takes the watcher's token
        rounds(
            [
                ("dsg status + watch", dsg_status, {"cwd": proj, "env": env}),
                ("git status", git_status, {"cwd": proj, "env": genv}),
            ]
        )
        status = watch.request(proj / ".dsg", "status") or {}
        watcher_rss = vm_hwm(watcher.pid)
    finally:
        watcher.terminate()
        watcher.wait(30)
    git = median(m[0] for m in rows["git status"])
    print(f"\n{'no-op status':<22} {'median':>8} {'min-max':>15} {'peak RSS':>9} {'/ git':>6}")
    out = []
    for tool in TOOLS:
        secs = [m[0] for m in rows[tool]]
        rss = max(m[1] for m in rows[tool])
        ratio = median(secs) / git if git else float("nan")
        print(
            f"{tool:<22} {median(secs):>7.3f}s {f'{min(secs):.3f}-{max(secs):.3f}s':>15}"
            f" {rss / 2**20:>6.0f} MB {ratio:>5.2f}x"
        )
        out.append({"tool": tool, "seconds": secs, "median": median(secs), "peak_rss": rss})
    plain = median(m[0] for m in rows["dsg status"])
    quick = median(m[0] for m in rows["dsg status + watch"])
    print(
        f"\nwatcher: ready in {ready:.2f} s, {status.get('watches', 0):,} directories watched,"
        f" peak RSS {watcher_rss / 2**20:.0f} MB; the watched status is"
        f" {plain / quick:.1f}x faster than the walking one"
    )
    return {
        "files": a.files,
        "bytes": nbytes,
        "rounds": a.rounds,
        "rows": out,
        "watcher": {
            "ready_seconds": ready,
            "watches": status.get("watches"),
            "peak_rss": watcher_rss,
            "events": status.get("events"),
            "overflows": status.get("overflows"),
        },
    }


if __name__ == "__main__":
    main()
