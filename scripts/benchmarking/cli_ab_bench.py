#!/usr/bin/env python3
"""A/B of the `dsg sync` command between two dsg checkouts, side by side, over the lab SSH.

    .venv/bin/python scripts/benchmarking/cli_ab_bench.py --a /path/to/other/checkout
        [--small 20000] [--rounds 8] [--dir D]

For telling whether a change to the engine makes the command a researcher runs faster, when
the machine's swings are larger than the change: engine A (`--a`, e.g. a `git worktree` of
an earlier commit, readable by the lab users) and engine B (this checkout) each get their
own project and working copy of the same generated tree. Every round changes 1% of the
small files in both and runs each engine's `dsg sync` in a new process (client and agent
from the same checkout), alternating which goes first, then rsync -rltO of the same
change over the same sshd. Prints each round, the medians and their ratios to rsync.
"""

from __future__ import annotations

import argparse
import grp
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from statistics import median

# dsg as installed runs from cached bytecode (pip compiles it on install): a shell that sets
# PYTHONDONTWRITEBYTECODE would make every measured start compile the changed modules again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "engine"))
sys.path.insert(0, str(HERE.parent))

from ssh_sync_bench import change_one_percent, generate, lab_up, timed  # noqa: E402

from dsg.backends.registry import open_repository  # noqa: E402
from dsg.sync import ops  # noqa: E402
from dsg.workcopy.config import ProjectConfig, RepositoryConfig, UserConfig  # noqa: E402


def entry_script(engine: Path, where: Path) -> Path:
    """A `dsg` console script that runs the engine at `engine` with this venv's Python."""
    script = where / f"dsg-{uuid.uuid4().hex[:6]}"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(engine)!r})\n"
        "from dsg.entry import main\nmain()\n"
    )
    script.chmod(0o755)
    return script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--a", required=True, help="the other checkout (engine A)")
    ap.add_argument("--small", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument(
        "--dir", default="", help="where repositories and trees go (default: /srv/dsg-bench)"
    )
    args = ap.parse_args()
    engines = {"A": Path(args.a).resolve() / "engine", "B": REPO / "engine"}
    for eng in engines.values():
        if not (eng / "dsg" / "entry.py").is_file():
            sys.exit(f"{eng} holds no dsg engine")
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(eng)], check=True)
    env = lab_up()
    rsh = f"ssh -F {env['DSG_LAB_SSH_CONFIG']}"
    os.environ["DSG_SSH_COMMAND"] = rsh

    top = Path(args.dir or "/srv/dsg-bench")
    top.mkdir(exist_ok=True)
    top.chmod(0o755)
    base = top / uuid.uuid4().hex[:8]
    gid = grp.getgrnam("dsg-lab").gr_gid
    for d in (base, base / "repos", base / "rsync", base / "logs", base / "bin"):
        d.mkdir()
        os.chown(d, 0, gid)
        d.chmod(0o2775)
    (base / "access.yml").write_text(
        "projects:\n"
        + "".join(
            f"  {v}:\n    type: posix\n    mountpoint: {base}/repos/{v}\n"
            "    users: {alice: write}\n"
            for v in engines
        )
    )
    dsg = {v: entry_script(eng, base / "bin") for v, eng in engines.items()}
    work = base / "work"
    alice = UserConfig(user_name="Alice", user_id="alice@hrdag.org")
    trees: dict[str, Path] = {}
    try:
        serves: dict[str, str] = {}
        for v in engines:
            tree = work / v
            tree.mkdir(parents=True)
            generate(tree, args.small, 0, 0)
            serve = f"{dsg[v]} serve --access-file {base}/access.yml --log-dir {base}/logs"
            serves[v] = serve  # the CLI takes it from the environment, not the project file
            cfg = ProjectConfig(
                name=v,
                repository=RepositoryConfig(
                    type="posix",
                    host="lab-alice",
                    mountpoint=str(base / "repos"),
                    remote_command=serve,
                ),
            )
            ops.init(tree, cfg, open_repository(cfg), alice, "bench")
            trees[v] = tree
        rsync = ["rsync", "-rltO", "--exclude=.dsg/", "-e", rsh]
        subprocess.run([*rsync, f"{trees['B']}/", f"lab-alice:{base}/rsync/"], check=True)
        conf = work / "conf"
        conf.mkdir()
        (conf / "dsg.yml").write_text("user_name: Alice\nuser_id: alice@hrdag.org\n")
        cenv = {**os.environ, "DSG_CONFIG_HOME": str(conf)}
        times: dict[str, list[float]] = {"A": [], "B": [], "rsync": []}
        print(f"A: {engines['A']}\nB: {engines['B']}\n{args.small} small files; 1% changed")
        for r in range(args.rounds):
            for v in "AB" if r % 2 == 0 else "BA":
                change_one_percent(trees[v])
                argv = [str(dsg[v]), "sync", "-m", "1%", "--json"]
                times[v].append(
                    timed(
                        lambda argv=argv, v=v: subprocess.run(
                            argv,
                            cwd=trees[v],
                            env={**cenv, "DSG_REMOTE_COMMAND": serves[v]},
                            check=True,
                            stdout=subprocess.DEVNULL,
                        )
                    )
                )
            change_one_percent(trees["B"])
            to_rsync = [*rsync, f"{trees['B']}/", f"lab-alice:{base}/rsync/"]
            times["rsync"].append(timed(lambda argv=to_rsync: subprocess.run(argv, check=True)))
            print(f"round {r}: " + "  ".join(f"{k} {t[-1]:.3f}" for k, t in times.items()))
        m = {k: median(t) for k, t in times.items()}
        print(
            f"median: A {m['A']:.3f} s ({m['A'] / m['rsync']:.2f}x)  "
            f"B {m['B']:.3f} s ({m['B'] / m['rsync']:.2f}x)  rsync {m['rsync']:.3f} s"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
