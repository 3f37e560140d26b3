#!/usr/bin/env python3
"""dsg at scale, side by side with git, find and rsync in the same run (issue 23).

    .venv/bin/python scripts/benchmarking/scale_bench.py               # 100,000 files
    .venv/bin/python scripts/benchmarking/scale_bench.py --quick       # 10,000 files
    .venv/bin/python scripts/benchmarking/scale_bench.py --files 1000000 --rounds 1
        [--rounds 5] [--dir D] [--ssh] [--json out.json] [--keep]

Builds a tree of --files small files of mixed sizes (most under 1 KiB, a few up to
256 KiB, ~1.7 KiB on average: 1M files ~ 1.7 GB) in HRDAG's layout
(task*/{input,output,frozen}/b*/), then times, --rounds times each (default 5), warm page
cache, which tool goes first rotating from round to round:

  no-op status       dsg status | git status | find -printf '%s %T@ %i' | rsync -an
  status, 1% changed dsg status | git status          (the same change, a new 1% each round)
  sync, 1% changed   dsg sync   | rsync -a             (local posix repository)
                     over the lab SSH with --ssh: dsg sync | rsync -rltO over the same sshd
  initial upload     dsg init   | rsync -a | rsync -a + sync -f (a new repository each round)
  clone              dsg clone  | rsync -a + sync -f   (a new directory each round)

Every command runs as its own process (the `dsg` console script of this checkout, with a
user config in DSG_CONFIG_HOME); its time is wall time and its peak RSS is ru_maxrss from
wait4(2) on that process alone, i.e. the largest of it and its descendants (dsg's prescan
child, rsync's receiver). The git repository of the same tree lives outside it (GIT_DIR),
so find and rsync walk exactly the project. Writes are flushed (sync(2), untimed) before
every upload, sync and clone, so no tool pays for the previous one's writeback.

Prints per row the median, min-max and peak RSS, and the ratio dsg / reference against
the goals of issue 23 (no-op status <= 2x git status; 1% sync <= 1.5x rsync -a;
init and clone <= 1.2x rsync -a + sync -f; at >= 1M files, <= 100 MB resident for status
and <= 300 MB for init and clone), marking each met or not. The machine is shared and
noisy: compare ratios within one run. Needs git and rsync; --ssh needs root (it starts
scripts/lab/sshd).
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

# dsg as installed runs from cached bytecode (pip compiles it on install): a shell that sets
# PYTHONDONTWRITEBYTECODE would make every measured start compile the changed modules again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
DSG = REPO / ".venv" / "bin" / "dsg"
FILES_PER_DIR = 500
DIRS_PER_TASK = 20
# (share of files, smallest, largest size in bytes): mostly small CSV-sized records, a few
# larger tables. Mean ~1.7 KiB.
SIZES = ((0.72, 64, 1024), (0.25, 1024, 4096), (0.029, 4096, 32768), (0.001, 32768, 262144))
EXTS = (".csv", ".csv", ".csv", ".json", ".txt", ".parquet")
KEEP_OUT = ["--exclude=/.dsg/", "--exclude=/.dsgconfig.yml"]  # dsg's own state


# -- the tree ---------------------------------------------------------------------------


def data_dir(batch: int) -> str:
    r = batch % 10
    return "input" if r < 6 else "output" if r < 9 else "frozen"


def generate(root: Path, n: int, seed: int = 23) -> int:
    """n files of unique content (a content-addressed store must not dedupe them);
    returns the bytes written."""
    rng = random.Random(seed)
    pool = os.urandom(SIZES[-1][2] + 4096)
    total = 0
    for i in range(n):
        batch = i // FILES_PER_DIR
        d = root / f"task{batch // DIRS_PER_TASK:03d}" / data_dir(batch) / f"b{batch:05d}"
        if i % FILES_PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
        x = rng.random()
        for share, lo, hi in SIZES:  # noqa: B007 (the bucket the loop stops at)
            if x < share:
                break
            x -= share
        size = rng.randint(lo, hi)
        head = f"{i},".encode()
        off = rng.randrange(4096)
        body = head + pool[off : off + max(0, size - len(head))]
        fd = os.open(d / f"r{i:07d}{EXTS[i % len(EXTS)]}", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
        total += len(body)
    return total


def data_files(root: Path) -> list[str]:
    out = []
    for top in sorted(p for p in root.iterdir() if p.name.startswith("task")):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out


def change_one_percent(files: list[str], k: int) -> int:
    """Append to every 100th file, a different 1% in each round k."""
    picked = files[k % 100 :: 100]
    for p in picked:
        with open(p, "ab") as f:
            f.write(b"changed\n")
    return len(picked)


# -- running and measuring --------------------------------------------------------------


class Failed(RuntimeError):
    pass


TIME = shutil.which("time", path="/usr/bin:/bin")


def run(argv: list[str], *, cwd: Path | None = None, env: dict | None = None) -> tuple:
    """Run argv as a new process: (seconds, peak RSS in bytes, stdout, CPU seconds).

    The peak RSS is GNU time's %M (ru_maxrss of the command and its reaped descendants),
    measured by a fresh /usr/bin/time per command: RUSAGE_CHILDREN is a maximum over every
    child this script ever had, and even wait4 on one child counts this script's own
    memory, which the child inherited (fork, or vfork before exec) until it exec'd. Without
    GNU time, wait4 is used and the figure has this script's RSS as its floor. The CPU
    seconds (user + system, with its descendants) are what the command cost however busy
    the machine was; wall time on a shared machine includes waiting for a core."""
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp, "rss")
        cmd = [TIME, "-f", "%M %U %S", "-o", str(rss_file), *argv] if TIME else argv
        with open(Path(tmp, "out"), "w+b") as out, open(Path(tmp, "err"), "w+b") as err:
            t = time.perf_counter()
            # A session of its own, so that a stopped benchmark stops the whole command.
            p = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
            )
            try:
                _, status, ru = os.wait4(p.pid, 0)
            except BaseException:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                raise
            elapsed = time.perf_counter() - t
            p.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode(errors="replace")
            if p.returncode:
                tail = err.read().decode(errors="replace")[-2000:]
                raise Failed(
                    f"{' '.join(map(str, argv))} exited {p.returncode}:\n{stdout[-2000:]}{tail}"
                )
        if TIME:  # the last line (GNU time writes "Command exited ..." before it)
            rss_kib, user, system = rss_file.read_text().splitlines()[-1].split()
            rss, cpu = int(rss_kib) * 1024, float(user) + float(system)
        else:
            rss, cpu = ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime
    return elapsed, rss, stdout, cpu


def quiet(argv: list[str], **kw) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)


@dataclass
class Row:
    op: str
    tool: str
    seconds: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, m: tuple) -> None:
        self.seconds.append(m[0])
        self.rss.append(m[1])
        self.cpu.append(m[3])

    @property
    def median(self) -> float:
        return median(self.seconds)


@dataclass
class Goal:
    op: str
    dsg: str  # row keys (op, tool)
    ref: str
    limit: float
    rss_limit_mb: int | None = None


GOALS = [
    Goal("no-op status", "dsg status", "git status", 2.0, 100),
    Goal("sync, 1% changed", "dsg sync", "rsync -a", 1.5),
    Goal("sync, 1% changed, SSH", "dsg sync", "rsync -rltO", 1.5),
    Goal("initial upload", "dsg init", "rsync -a + sync -f", 1.2, 300),
    Goal("clone", "dsg clone", "rsync -a + sync -f", 1.2, 300),
]
OPS = ("upload", "status", "clone")
RSS_AT = 1_000_000  # the issue sets its memory goals at 1M files


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dsg = args.dsg.absolute()
        self.only = set(args.only.split(","))
        self.rows: dict[tuple[str, str], Row] = {}
        self.notes: list[str] = []

    def row(self, op: str, tool: str) -> Row:
        return self.rows.setdefault((op, tool), Row(op, tool))

    def side_by_side(self, op: str, k: int, tools: list[tuple[str, list, dict]], flush=False):
        """One round of op: each (tool, argv, kw) once, the first tool rotating with k."""
        s = k % len(tools)
        for tool, argv, kw in tools[s:] + tools[:s]:
            if flush:
                os.sync()
            m = run(argv, **kw)
            self.row(op, tool).add(m)
            if tool == "dsg status" and op == "no-op status" and "Up to date" not in m[2]:
                raise Failed(f"a no-op dsg status found changes:\n{m[2][-2000:]}")

    # -- the run ------------------------------------------------------------------------

    def main(self) -> None:
        a = self.args
        top = Path(a.dir or tempfile.gettempdir())
        w = top / f"dsg-scale-bench-{a.files}-{uuid.uuid4().hex[:6]}"
        self.w = w
        w.mkdir(parents=True)
        try:
            self.run_all(w)
        finally:
            if not a.keep:
                shutil.rmtree(w, ignore_errors=True)
                if getattr(self, "lab_base", None):
                    shutil.rmtree(self.lab_base, ignore_errors=True)

    def run_all(self, w: Path) -> None:
        a = self.args
        n, rounds = a.files, a.rounds
        conf = w / "conf"
        conf.mkdir()
        (conf / "dsg.yml").write_text("user_name: Bench\nuser_id: bench@hrdag.org\n")
        self.env = {**os.environ, "DSG_CONFIG_HOME": str(conf)}
        repos = w / "repos"
        repos.mkdir()

        tree = w / "tree"
        t = time.perf_counter()
        self.total_bytes = generate(tree, n)
        self.say(
            f"tree: {n:,} files, {self.total_bytes / 2**20:,.0f} MiB, made in "
            f"{time.perf_counter() - t:.1f} s; {rounds} rounds; {w}"
        )

        # Initial upload. Each round a hard-linked copy of the tree (dsg init only reads the
        # data) and a new repository; rsync into a new directory, once plain, once flushed.
        for k in range(rounds if "upload" in self.only else 0):
            up = w / f"up{k}"
            quiet(["cp", "-al", str(tree), str(up)])
            self.project_config(up, f"r{k}", repos)
            rs, rsf = w / "rs", w / "rsf"
            self.side_by_side(
                "initial upload",
                k,
                [
                    ("dsg init", [str(self.dsg), "init", "-m", "s1"], {"cwd": up, "env": self.env}),
                    ("rsync -a", ["rsync", "-a", *KEEP_OUT, f"{up}/", f"{rs}/"], {}),
                    ("rsync -a + sync -f", flushed_rsync(f"{up}/", rsf), {}),
                ],
                flush=True,
            )
            self.progress("initial upload", k)
            for d in (rs, rsf) + ((up, repos / f"r{k}") if k else ()):
                rm(d)
        proj = w / "up0"
        if "upload" not in self.only:  # the project the other operations start from
            quiet(["cp", "-al", str(tree), str(proj)])
            self.project_config(proj, "r0", repos)
            os.sync()
            t, rss, _, cpu = run([str(self.dsg), "init", "-m", "s1"], cwd=proj, env=self.env)
            self.say(
                f"dsg init (one run, for setup): {t:.1f} s, {rss / 2**20:.0f} MB, {cpu:.1f} s CPU"
            )
        if a.ssh and "status" in self.only:
            self.ssh_setup(tree)
        rm(tree)  # proj is now the only name of these inodes (and the SSH project's)

        if "status" in self.only:
            self.status_and_sync(w, proj)
        if "clone" in self.only:
            self.clone_rounds(w, proj)
        self.report()

    def status_and_sync(self, w: Path, proj: Path) -> None:
        a, rounds = self.args, self.args.rounds
        # The references for status: an identical rsync copy, a git repository of the same
        # tree with everything committed (its .git outside the tree).
        mirror = w / "mirror"
        quiet(["rsync", "-a", *KEEP_OUT, f"{proj}/", f"{mirror}/"])
        genv = {**os.environ, "GIT_DIR": str(w / "git"), "GIT_WORK_TREE": str(proj)}
        genv.update(
            {f"GIT_{r}_{k}": v for r in ("AUTHOR", "COMMITTER") for k, v in
             (("NAME", "bench"), ("EMAIL", "bench@example.org"))}
        )  # fmt: skip
        self.genv = genv
        t = time.perf_counter()
        quiet(["git", "init", "-q"], env=genv)
        # No `gc --auto`: after the first commit it would repack every object in the
        # background, while the status rows are being timed.
        quiet(["git", "config", "gc.auto", "0"], env=genv)
        (w / "git" / "info" / "exclude").write_text("/.dsg/\n/.dsgconfig.yml\n")
        quiet(["git", "-c", "core.looseCompression=0", "add", "-A"], env=genv, cwd=proj)
        quiet(["git", "commit", "-qm", "tree"], env=genv, cwd=proj)
        quiet(["git", "update-index", "--refresh"], env=genv, cwd=proj)
        self.say(f"git repository of the tree made in {time.perf_counter() - t:.1f} s")

        dsg_status = ("dsg status", [str(self.dsg), "status"], {"cwd": proj, "env": self.env})
        git_status = ("git status", ["git", "status"], {"cwd": proj, "env": genv})
        noop = [
            dsg_status,
            git_status,
            ("find -printf", ["find", str(proj), "-printf", "%s %T@ %i\n"], {}),
            ("rsync -an", ["rsync", "-an", *KEEP_OUT, f"{proj}/", f"{mirror}/"], {}),
        ]
        for _, argv, kw in noop:  # warm the page cache and git's index
            run(argv, **kw)
        for k in range(rounds):
            self.side_by_side("no-op status", k, noop)
        self.progress("no-op status", rounds - 1)

        # 1% changed: the same change seen by status (dsg, git), then uploaded by dsg sync
        # and by rsync -a; git then commits it (untimed) so the next round starts clean.
        files = data_files(proj)
        for k in range(rounds):
            changed = change_one_percent(files, k)
            self.side_by_side("status, 1% changed", k, [dsg_status, git_status])
            self.side_by_side(
                "sync, 1% changed",
                k,
                [
                    (
                        "dsg sync",
                        [str(self.dsg), "sync", "-m", f"r{k}"],
                        {"cwd": proj, "env": self.env},
                    ),
                    ("rsync -a", ["rsync", "-a", *KEEP_OUT, f"{proj}/", f"{mirror}/"], {}),
                ],
                flush=True,
            )
            if a.ssh:
                self.ssh_round(k)
            quiet(["git", "add", "-u"], env=genv, cwd=proj)
            quiet(["git", "commit", "-qm", f"r{k}"], env=genv, cwd=proj)
            self.progress(f"1% changed ({changed:,} files)", k)

    def clone_rounds(self, w: Path, proj: Path) -> None:
        rounds = self.args.rounds
        # Clone of the repository's head into a new directory, against rsync -a of the
        # project followed by sync -f (dsg's clone is on disk when it returns).
        for k in range(rounds):
            dest, crs = w / f"clone{k}", w / "crs"
            dest.mkdir()
            shutil.copy(proj / ".dsgconfig.yml", dest)
            self.side_by_side(
                "clone",
                k,
                [
                    ("dsg clone", [str(self.dsg), "clone"], {"cwd": dest, "env": self.env}),
                    ("rsync -a + sync -f", flushed_rsync(f"{proj}/", crs), {}),
                ],
                flush=True,
            )
            if k == 0:
                check_same(proj, dest)
            self.progress("clone", k)
            rm(dest)
            rm(crs)

    # -- over the lab SSH ---------------------------------------------------------------

    def ssh_setup(self, tree: Path) -> None:
        # The agent runs as a lab user who cannot write __pycache__ here.
        quiet([sys.executable, "-m", "compileall", "-q", str(REPO / "engine")])
        out = subprocess.run(
            [str(REPO / "scripts/lab/sshd"), "up"], check=True, capture_output=True, text=True
        ).stdout
        lab = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.rsh = f"ssh -F {lab['DSG_LAB_SSH_CONFIG']}"
        top = Path("/srv/dsg-bench")
        top.mkdir(exist_ok=True)
        top.chmod(0o755)
        base = self.lab_base = top / f"scale-{uuid.uuid4().hex[:8]}"
        gid = grp.getgrnam("dsg-lab").gr_gid
        for d in (base, base / "repos", base / "rsync", base / "logs"):
            d.mkdir()
            os.chown(d, 0, gid)
            d.chmod(0o2775)
        (base / "access.yml").write_text(
            f"projects:\n  scale:\n    type: posix\n    mountpoint: {base}/repos/scale\n"
            "    users: {alice: write}\n"
        )
        # A hard-linked copy of the tree: the 1% change appended to the local project's
        # files is then the same change here.
        self.sproj = self.w / "sshproj"
        quiet(["cp", "-al", str(tree), str(self.sproj)])
        serve = f"{self.dsg} serve --access-file {base}/access.yml --log-dir {base}/logs"
        # The agent command is the user's (DSG_REMOTE_COMMAND): dsg ignores one in a project
        # file, with a warning. Engines before that change read only the project file's, so
        # --dsg pointing at one of them still runs this checkout's lab agent, not the host's.
        self.project_config(self.sproj, "scale", base / "repos", "lab-alice", serve)
        self.senv = {**self.env, "DSG_SSH_COMMAND": self.rsh, "DSG_REMOTE_COMMAND": serve}
        t, rss, _, _ = run([str(self.dsg), "init", "-m", "s1"], cwd=self.sproj, env=self.senv)
        self.say(f"dsg init over SSH: {t:.1f} s, {rss / 2**20:.0f} MB (one run, for setup)")
        quiet(self.ssh_rsync())

    def ssh_rsync(self) -> list[str]:
        # -rltO: what dsg keeps (-a would also set owners and groups, which a lab user may
        # not); the same sshd as dsg.
        dest = f"lab-alice:{self.lab_base}/rsync/"
        return ["rsync", "-rltO", *KEEP_OUT, "-e", self.rsh, f"{self.sproj}/", dest]

    def ssh_round(self, k: int) -> None:
        self.side_by_side(
            "sync, 1% changed, SSH",
            k,
            [
                (
                    "dsg sync",
                    [str(self.dsg), "sync", "-m", f"r{k}"],
                    {"cwd": self.sproj, "env": self.senv},
                ),
                ("rsync -rltO", self.ssh_rsync(), {}),
            ],
            flush=True,
        )

    # -- output ---------------------------------------------------------------------------

    def project_config(self, root: Path, name: str, base: Path, host="localhost", serve=None):
        lines = [
            f"name: {name}",
            "repository:",
            "  type: posix",
            f"  host: {host}",
            f"  mountpoint: {base}",
            *([f"  remote_command: {serve}"] if serve else []),
            "data_dirs: [input, output, frozen]",
        ]
        (root / ".dsgconfig.yml").write_text("\n".join(lines) + "\n")

    def say(self, msg: str) -> None:
        self.notes.append(msg)
        print(msg, flush=True)

    def progress(self, what: str, k: int) -> None:
        if not self.args.json_only:
            print(f"  {what}: round {k + 1} done", file=sys.stderr, flush=True)

    def goals(self) -> list[dict]:
        out = []
        for g in GOALS:
            d, r = self.rows.get((g.op, g.dsg)), self.rows.get((g.op, g.ref))
            if not (d and r):
                continue
            ratio = d.median / r.median
            # GNU time counts CPU in 10 ms steps: no ratio to a reference below that
            ref_cpu = median(r.cpu)
            cpu_ratio = median(d.cpu) / ref_cpu if ref_cpu >= 0.02 else None
            rss_mb = max(d.rss) / 2**20
            judged = g.rss_limit_mb is not None and self.args.files >= RSS_AT
            out.append(
                {
                    "op": g.op,
                    "dsg": g.dsg,
                    "reference": g.ref,
                    "ratio": ratio,
                    "limit": g.limit,
                    "met": ratio <= g.limit,
                    "cpu_ratio": cpu_ratio,
                    "peak_rss_mb": rss_mb,
                    "rss_limit_mb": g.rss_limit_mb,
                    "rss_met": (rss_mb <= g.rss_limit_mb) if judged else None,
                }
            )
        return out

    def report(self) -> None:
        a = self.args
        print(
            f"\n{a.files:,} files, {self.total_bytes / 2**20:,.0f} MiB, {a.rounds} rounds, "
            f"{os.cpu_count()} CPUs, {platform.node()}"
        )
        print(
            f"{'operation':<24} {'tool':<20} {'median s':>9} {'min-max s':>15} {'peak RSS':>9}"
            f" {'CPU s':>7}"
        )
        for row in self.rows.values():
            span = f"{min(row.seconds):.3f}-{max(row.seconds):.3f}"
            print(
                f"{row.op:<24} {row.tool:<20} {row.median:9.3f} {span:>15} "
                f"{max(row.rss) / 2**20:7.0f}MB {median(row.cpu):7.2f}"
            )
        print("\ngoals (issue 23): dsg / reference, medians")
        goals = self.goals()
        for g in goals:
            mark = "met" if g["met"] else "NOT met"
            line = (
                f"  {g['op']:<24} {g['ratio']:5.2f}x {g['reference']:<20} <= {g['limit']}x "
                f"{mark:<7} (CPU {_ratio(g['cpu_ratio'])})"
            )
            if g["rss_limit_mb"] is not None:
                rss = f"{g['peak_rss_mb']:.0f} MB"
                if g["rss_met"] is None:
                    line += f"; RSS {rss} (goal <= {g['rss_limit_mb']} MB judged at 1M files)"
                else:
                    ok = "met" if g["rss_met"] else "NOT met"
                    line += f"; RSS {rss} <= {g['rss_limit_mb']} MB {ok}"
            print(line)
        st = self.rows.get(("status, 1% changed", "dsg status"))
        gt = self.rows.get(("status, 1% changed", "git status"))
        if st and gt:
            print(
                f"  {'status, 1% changed':<24} {st.median / gt.median:5.2f}x git status (no goal)"
            )
        if a.json:
            doc = {
                "files": a.files,
                "bytes": self.total_bytes,
                "rounds": a.rounds,
                "cpus": os.cpu_count(),
                "host": platform.node(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "notes": self.notes,
                "rows": [
                    {
                        "op": r.op,
                        "tool": r.tool,
                        "seconds": r.seconds,
                        "median": r.median,
                        "min": min(r.seconds),
                        "max": max(r.seconds),
                        "peak_rss": max(r.rss),
                        "cpu": r.cpu,
                        "cpu_median": median(r.cpu),
                    }
                    for r in self.rows.values()
                ],
                "goals": goals,
            }
            self.doc = doc
            if a.json != "-":
                Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def flushed_rsync(src: str, dest: Path) -> list[str]:
    """rsync -a, then sync -f of the copy: the durability dsg gives before it returns."""
    script = 'rsync -a "$@" && sync -f "${@: -1}"'
    return ["bash", "-c", script, "rsync+sync", *KEEP_OUT, src, f"{dest}/"]


def check_same(src: Path, dest: Path) -> None:
    """The clone holds the project's data (a cheap check: names and sizes)."""

    def listing(root: Path) -> list[tuple[str, int]]:
        return [(os.path.relpath(p, root), os.path.getsize(p)) for p in data_files(root)]

    if listing(src) != listing(dest):
        raise Failed(f"the clone in {dest} differs from the project {src}")


def rm(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--", str(path)], check=True)


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000, help="files in the tree")
    ap.add_argument("--quick", action="store_true", help="10,000 files (unless --files)")
    ap.add_argument("--rounds", type=int, default=5, help="runs of each comparison")
    ap.add_argument("--dir", default="", help="where the tree, copies and repositories go")
    ap.add_argument(
        "--only",
        default=",".join(OPS),
        help="comma-separated: upload, status (no-op and 1%% changed, with the 1%% sync),\n"
        "clone (default: all); without upload, one untimed dsg init sets the project up",
    )
    ap.add_argument("--ssh", action="store_true", help="also sync over the lab SSH (root)")
    ap.add_argument(
        "--json", default="", help="write the results as JSON to this file (- : stdout)"
    )
    ap.add_argument(
        "--dsg",
        type=Path,
        default=DSG,
        help="the dsg console script to measure (default: this checkout's .venv/bin/dsg);\n"
        "e.g. a script running an archived commit's engine, while the checkout is mid-change",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(sys.argv[1:])
    if args.quick and "--files" not in sys.argv:
        args.files = 10_000
    if not 1 <= args.files <= 10_000_000 or not 1 <= args.rounds <= 100:
        ap.error("--files must be 1..10,000,000 and --rounds 1..100")
    if not args.dsg.exists():
        sys.exit(f"{args.dsg} is missing: run scripts/setup-env first")
    for tool in ("git", "rsync", "find", "bash", "sync"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed")
    if not args.only or set(args.only.split(",")) - set(OPS):
        ap.error(f"--only takes a comma-separated list of {', '.join(OPS)}")
    args.json_only = args.json == "-"
    # Stopped (kill, or Ctrl-C even where a background shell ignores SIGINT): unwind, so the
    # work directory (GBs at 1M files) is removed.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    if args.json_only:  # the table goes to stderr, the JSON alone to stdout
        with contextlib.redirect_stdout(sys.stderr):
            bench = Bench(args)
            bench.main()
        print(json.dumps(bench.doc, indent=1))
    else:
        Bench(args).main()


if __name__ == "__main__":
    main()
