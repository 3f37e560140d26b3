"""The operations roles (dsg_monitoring, dsg_backup) on the lab host, for real.

playbooks/operations.yml converges the lab host (this machine through the lab sshd): its
files are removed first, so the first run has to write them; a second run changes nothing;
`--check --diff` changes nothing. Then every job of the generated cron files runs exactly as
written there (parsed from the file, run with the file's SHELL and PATH as root, `\\%`
unescaped the way cron does) and its effects are checked: the metrics textfile, the health
log, backups of the lab projects into dsgbackup/dsg (full, then incremental, and skipped
while another run holds the lock), and restore drills with their metrics. The health job
with alerts delivers to a real HTTP receiver. A bad alerts section fails the play with the
engine's message; a backup target inside the project tree is refused before anything runs.

What the tests create in the pools (the projects' snapshots, the backup copies, the drills'
scratch copies) and their holds is removed afterwards, and the lab is converged again.
Timings are printed (pytest -s) and written to <lab>/operations-timings.txt.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import json
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.ansible.conftest import lab_provisioned, sh
from tests.ansible.test_lab_run import converge
from tests.unit.test_metrics import assert_valid_exposition

pytestmark = [pytest.mark.ansible, pytest.mark.zfs]

HOST = "lab-zfs1"
PROJECTS = ("lab-alpha", "lab-beta")
PRIMARY = "dsglab/dsg"
TARGET = "dsgbackup/dsg"
SCRATCH = "dsgbackup/dsg-drill"
HOLD = "dsg-backup-dsgbackup"  # the engine's hold on the newest common snapshot
MONITORING_CRON = Path("/etc/cron.d/dsg-monitoring")
BACKUP_CRON = Path("/etc/cron.d/dsg-backup")
HEALTH = Path("/etc/dsg/health.yml")
TEXTFILE = Path("/var/lib/prometheus/node-exporter")
LOGS = Path("/var/log/dsg")
ROLE_FILES = (
    MONITORING_CRON,
    BACKUP_CRON,
    HEALTH,
    Path("/etc/logrotate.d/dsg-monitoring"),
    Path("/etc/logrotate.d/dsg-backup"),
)
TIMINGS: dict[str, float] = {}


# --- running the playbook --------------------------------------------------------------------


def operations(ansible_tools, *args: str, ok: bool = True):
    run = ansible_tools.playbook("lab", "operations.yml", *args)
    recap = run.recap()
    if ok:
        assert run.returncode == 0, run.explain()
        assert set(recap) == {HOST}, run.explain()
        assert recap[HOST]["failed"] == 0 and recap[HOST]["unreachable"] == 0, run.explain()
    return run, recap.get(HOST, {})


@pytest.fixture
def lab(ansible_tools, ansible_lab):
    """The lab converged by site.yml (which imports operations.yml)."""
    ansible_lab.up()
    mnt = ansible_lab.lab_dir / "zfs" / "mnt" / "dsglab" / "dsg"
    if not lab_provisioned(mnt):
        run, _ = converge(ansible_tools)  # never provisioned, or from another checkout
        TIMINGS["initial site.yml converge"] = run.seconds
    elif not all(p.exists() for p in ROLE_FILES):
        run, _ = operations(ansible_tools)  # provisioned before these roles existed
        TIMINGS["initial operations.yml converge"] = run.seconds
    return ansible_lab


def write_timings(lab_dir: Path) -> None:
    report = "\n".join(f"{k}: {v:.1f}s" for k, v in TIMINGS.items())
    print("\noperations roles timings:\n" + report)
    (lab_dir / "operations-timings.txt").write_text(report + "\n")


# --- cron files ----------------------------------------------------------------------------


@dataclass
class CronJob:
    schedule: str
    user: str
    command: str  # as the shell receives it (cron's \% unescaped)


def parse_cron(path: Path) -> tuple[dict[str, str], list[CronJob]]:
    """The environment assignments and the jobs of an /etc/cron.d file (crontab(5))."""
    env: dict[str, str] = {}
    jobs: list[CronJob] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if m := re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line):
            env[m.group(1)] = m.group(2)
            continue
        if line.startswith("@"):
            nick, user, command = line.split(None, 2)
            schedule = nick
        else:
            fields = line.split(None, 6)
            assert len(fields) == 7, f"{path}: not a cron line: {raw!r}"
            schedule, user, command = " ".join(fields[:5]), fields[5], fields[6]
        # cron turns an unescaped % into a newline (and stdin): none may be left
        assert not re.search(r"(?<!\\)%", command), f"{path}: unescaped % in {raw!r}"
        jobs.append(CronJob(schedule, user, command.replace("\\%", "%")))
    return env, jobs


def run_job(env: dict[str, str], job: CronJob) -> subprocess.CompletedProcess[str]:
    """Run a job the way cron does: its SHELL -c the command, as its user, with cron's
    default environment overridden by the file's assignments."""
    assert job.user == "root" and os.geteuid() == 0
    full = {"HOME": "/root", "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    full.update(env)
    return subprocess.run(
        [full["SHELL"], "-c", job.command],
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        cwd="/",
    )


def job_argv(job: CronJob) -> list[str]:
    """The command the job runs under `flock -n -E 75 <lock>` (dsg and its arguments)."""
    words = shlex.split(job.command.split(";")[1])
    assert words[:4] == ["flock", "-n", "-E", "75"], job.command
    return words[5:]


def job_named(jobs: list[CronJob], *words: str) -> CronJob:
    found = [j for j in jobs if all(w in job_argv(j) for w in words)]
    assert len(found) == 1, f"no single job running {words}: {[j.command for j in jobs]}"
    return found[0]


def log_since(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode()


def run_logged(env, job: CronJob, log: Path, name: str) -> str:
    """Run the job; return what it appended to its log, checking the start/exit lines."""
    before = log.stat().st_size if log.exists() else 0
    proc = run_job(env, job)
    assert proc.returncode == 0, proc  # the group's status is its last echo
    assert proc.stdout == "" and proc.stderr == "", proc  # everything goes to the log
    out = log_since(log, before)
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.match(rf"{stamp} {re.escape(name)} start\n", out), out
    assert re.search(rf"\n{stamp} {re.escape(name)} exit \d+\n$", out), out
    return out


def exit_of(out: str) -> int:
    return int(out.rstrip("\n").rsplit(" ", 1)[1])


# --- metrics files ------------------------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = path.read_text()
    assert_valid_exposition(text)
    out = {}
    for line in text.splitlines():
        if m := SAMPLE.match(line):
            labels = frozenset(LABEL.findall(m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(s, name: str, **labels: str) -> float:
    found = [v for (n, ls), v in s.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, f"{name}{labels}: {found} in {sorted(s)}"
    return found[0]


# --- the pools ----------------------------------------------------------------------------------


def zfs_ok(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["zfs", *args], capture_output=True, text=True, timeout=120)


def snapshots(dataset: str) -> list[str]:
    proc = zfs_ok("list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset)
    if proc.returncode != 0:
        return []
    return [n.split("@", 1)[1] for n in proc.stdout.split() if n.startswith(f"{dataset}@")]


def children(dataset: str) -> list[str]:
    proc = zfs_ok("list", "-H", "-o", "name", "-r", dataset)
    return [n for n in proc.stdout.split() if n != dataset] if proc.returncode == 0 else []


def clean_pools(lab_dir: Path) -> None:
    """Remove what these tests create: backup copies and drill copies (after releasing the
    backup holds), the backup holds on the primary, the projects' repositories, and the
    backup and drill metric files. The datasets the roles declare stay."""
    from dsg.backends.zfs import ZfsRepository

    for ds in reversed(children(TARGET) + children(SCRATCH)):
        for snap in snapshots(ds):
            zfs_ok("release", HOLD, f"{ds}@{snap}")
            zfs_ok("release", "dsg", f"{ds}@{snap}")
        zfs_ok("destroy", "-r", ds)
    mnt = lab_dir / "zfs" / "mnt" / "dsglab" / "dsg"
    for project in PROJECTS:
        for snap in snapshots(f"{PRIMARY}/{project}"):
            zfs_ok("release", HOLD, f"{PRIMARY}/{project}@{snap}")
        repo = ZfsRepository(mnt / project, project, "dsglab")
        repo.destroy_new()
        repo.close()
        for metric in (f"dsg_backup_{project}.prom", f"dsg_restore_drill_{project}.prom"):
            (TEXTFILE / metric).unlink(missing_ok=True)
    for ds in (f"{TARGET}/{p}" for p in PROJECTS):
        assert zfs_ok("list", ds).returncode != 0, f"{ds} is still there"
    for project in PROJECTS:
        assert snapshots(f"{PRIMARY}/{project}") == [], f"{project} still has snapshots"


@pytest.fixture
def clean(lab) -> Iterator[Path]:
    clean_pools(lab.lab_dir)
    try:
        yield lab.lab_dir
    finally:
        clean_pools(lab.lab_dir)


def researcher(tmp: Path, lab_dir: Path, project: str):
    from dsg.workcopy.config import ProjectConfig, RepositoryConfig
    from tests.helpers import Researcher

    cfg = ProjectConfig(
        name=project,
        repository=RepositoryConfig(
            type="zfs",
            host="localhost",
            pool="dsglab",
            mountpoint=str(lab_dir / "zfs" / "mnt" / "dsglab" / "dsg"),
        ),
    )
    return Researcher("alice", tmp / project, tmp / "cfg", cfg)


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.slow  # the extended tier: four operations.yml runs: 2-3 min
def test_roles_converge_are_idempotent_and_check_mode_changes_nothing(ansible_tools, lab):
    for path in ROLE_FILES:
        path.unlink(missing_ok=True)
    first, recap = operations(ansible_tools)
    TIMINGS["converge (role files removed)"] = first.seconds
    assert recap["changed"] >= len(ROLE_FILES), first.explain()
    assert all(p.is_file() for p in ROLE_FILES), first.explain()
    # the host's WARNINGs (if any) never fail the play; the engine accepted the config
    assert f"{HEALTH} is valid; the host is " in " ".join(first.stdout.split()), first.explain()

    second, recap = operations(ansible_tools)
    TIMINGS["second run"] = second.seconds
    assert recap["changed"] == 0, second.explain()

    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in ROLE_FILES}
    check, recap = operations(ansible_tools, "--check", "--diff")
    TIMINGS["--check --diff"] = check.seconds
    assert recap["changed"] == 0, check.explain()
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in ROLE_FILES} == before

    # what the lab inventory declares (inventories/lab/group_vars/dsg_servers.yml)
    assert yaml.safe_load(HEALTH.read_text()) == {
        "capacity_warn_percent": 80,
        "capacity_crit_percent": 90,
        "snapshot_age_warn_hours": 168,
        "snapshot_age_crit_hours": 720,
        "scrub_age_warn_days": None,
        "scrub_age_crit_days": None,
        "stale_locks": True,
        "pools": ["dsgbackup"],
        # the backup target is on this host: compared directly; no other target here
        "replication_lag_warn_hours": 26,
        "replication_lag_crit_hours": 72,
        "replication_targets": [],
        "backup_target": "dsgbackup/dsg",
    }
    assert oct(HEALTH.stat().st_mode & 0o777) == "0o640"
    env, jobs = parse_cron(MONITORING_CRON)
    assert "/usr/sbin" in env["PATH"].split(":") and "/usr/local/bin" in env["PATH"].split(":")
    schedules = {tuple(job_argv(j)[1:4]): j.schedule for j in jobs}
    assert schedules == {
        ("admin", "metrics", "--config"): "*/5 * * * *",
        ("admin", "health", "--config"): "*/10 * * * *",  # no alerts in the lab: no --alert
    }, jobs
    env, jobs = parse_cron(BACKUP_CRON)
    assert {j.schedule for j in jobs if "admin backup" in j.command} == {"17 * * * *"}
    drills = {job_argv(j)[3]: j.schedule for j in jobs if "restore-drill" in j.command}
    assert drills == {"lab-alpha": "43 4 * * 0", "lab-beta": "43 4 * * 0"}, jobs
    for path in (MONITORING_CRON, BACKUP_CRON):
        for job in parse_cron(path)[1]:
            assert " flock -n " in job.command and job.user == "root", job
    assert zfs_ok("list", TARGET).returncode == 0  # the role created the backup parent
    assert TEXTFILE.is_dir()

    # The testinfra suite's checks of these roles pass here, and fail on drift, naming it.
    suite = ("tests/infra/test_operations.py", f"--hosts=ansible://{HOST}")
    suite += ("--ansible-inventory=inventories/lab", "-p", "no:cacheprovider", "--tb=short")
    clean = ansible_tools.run("pytest", *suite)
    assert clean.returncode == 0 and "2 passed" in clean.stdout, clean.explain()
    HEALTH.write_text(
        HEALTH.read_text().replace("capacity_warn_percent: 80", "capacity_warn_percent: 85")
    )
    cron = BACKUP_CRON.read_text()
    BACKUP_CRON.write_text(
        "".join(ln for ln in cron.splitlines(True) if "drill lab-beta" not in ln)
    )
    try:
        drifted = ansible_tools.run("pytest", *suite)
        text = drifted.stdout
        assert drifted.returncode == 1 and "2 failed" in text, drifted.explain()
        assert f"{HEALTH}: capacity_warn_percent is 85, the inventory declares 80" in text, text
        assert f"{BACKUP_CRON}: the restore-drill lab-beta job at '43 4 * * 0' is missing" in text
    finally:
        repair, recap = operations(ansible_tools)
    assert recap["changed"] == 2, repair.explain()


def test_cron_jobs_run_as_written_back_up_drill_and_export_metrics(lab, clean, tmp_path):
    lab_dir = clean
    alpha = researcher(tmp_path, lab_dir, "lab-alpha")
    alpha.write("task1/input/survey.csv", "id,answer\n1,yes\n")
    alpha.init("first data")
    alpha.write("task1/output/table.csv", "answer,n\nyes,1\n")
    alpha.sync(message="a table")
    beta = researcher(tmp_path, lab_dir, "lab-beta")
    beta.write("task2/frozen/codebook.txt", "codes\n")
    beta.init("beta's first")
    assert snapshots(f"{PRIMARY}/lab-alpha") == ["s1", "s2"]

    menv, mjobs = parse_cron(MONITORING_CRON)
    benv, bjobs = parse_cron(BACKUP_CRON)

    # metrics: the textfile appears, valid exposition text, both projects and both pools
    (TEXTFILE / "dsg.prom").unlink(missing_ok=True)
    out = run_logged(menv, job_named(mjobs, "metrics"), LOGS / "metrics.log", "metrics")
    assert exit_of(out) == 0, out
    s = samples(TEXTFILE / "dsg.prom")
    assert value(s, "dsg_project_up", project="lab-alpha") == 1
    assert value(s, "dsg_project_head_snapshot", project="lab-alpha") == 2
    assert value(s, "dsg_project_head_snapshot", project="lab-beta") == 1
    assert value(s, "dsg_pool_up", pool="dsgbackup") == 1  # health.yml's extra pool
    assert not [p for p in TEXTFILE.iterdir() if p.name.startswith(".")]  # no temporaries

    # health: checks run with the written config (the extra pool, no scrub check)
    out = run_logged(menv, job_named(mjobs, "health"), LOGS / "health.log", "health")
    assert "DSG HEALTH " in out and "pool_health   dsgbackup: pool is ONLINE" in out, out
    assert "scrub_age" not in out and "invalid configuration" not in out, out
    assert exit_of(out) in (0, 1, 2), out  # a real check result, not UNKNOWN (3)

    # backup: full replication of every project into dsgbackup/dsg
    backup = job_named(bjobs, "backup")
    out = run_logged(benv, backup, LOGS / "backup.log", "backup")
    assert exit_of(out) == 0, out
    assert snapshots(f"{TARGET}/lab-alpha") == ["s1", "s2"]
    assert snapshots(f"{TARGET}/lab-beta") == ["s1"]
    assert (
        sh(["zfs", "get", "-H", "-o", "value", "readonly", f"{TARGET}/lab-alpha"]).strip() == "on"
    )
    m = samples(TEXTFILE / "dsg_backup_lab-alpha.prom")
    assert value(m, "dsg_backup_success", project="lab-alpha") == 1
    assert value(m, "dsg_backup_snapshot", project="lab-alpha") == 2
    assert value(m, "dsg_backup_lag_seconds", project="lab-alpha") == 0

    # a new snapshot travels incrementally on the next run
    alpha.write("task1/output/table.csv", "answer,n\nyes,2\n")
    alpha.sync(message="more")
    out = run_logged(benv, backup, LOGS / "backup.log", "backup")
    assert exit_of(out) == 0 and "lab-alpha: sent s3 (1 step(s)" in out, out
    assert snapshots(f"{TARGET}/lab-alpha") == ["s1", "s2", "s3"]

    # runs never overlap: while another run holds the job's lock, this one skips (exit 75)
    alpha.write("task1/output/table.csv", "answer,n\nyes,3\n")
    alpha.sync(message="during a long backup")
    lock = shlex.split(backup.command.split(";")[1])[4]
    assert lock == "/run/lock/dsg-backup.lock", backup.command
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = run_logged(benv, backup, LOGS / "backup.log", "backup")
    assert exit_of(out) == 75, out
    assert snapshots(f"{TARGET}/lab-alpha") == ["s1", "s2", "s3"]  # nothing ran
    out = run_logged(benv, backup, LOGS / "backup.log", "backup")
    assert exit_of(out) == 0 and snapshots(f"{TARGET}/lab-alpha") == ["s1", "s2", "s3", "s4"]

    # restore drills, one job per project: restore, verify every file, clean up
    for project, head in (("lab-alpha", 4), ("lab-beta", 1)):
        drill = job_named(bjobs, "restore-drill", project)
        name = f"restore-drill {project}"
        out = run_logged(benv, drill, LOGS / "restore-drill.log", name)
        assert exit_of(out) == 0 and "RESTORE DRILL OK" in out, out
        d = samples(TEXTFILE / f"dsg_restore_drill_{project}.prom")
        assert value(d, "dsg_restore_drill_success", project=project) == 1
        assert value(d, "dsg_restore_drill_snapshot", project=project) == head
        assert value(d, "dsg_restore_drill_files_verified", project=project) >= 1
    assert children(SCRATCH) == []  # the scratch copies are gone

    # the metrics job now sees the new snapshots too
    run_logged(menv, job_named(mjobs, "metrics"), LOGS / "metrics.log", "metrics")
    assert (
        value(samples(TEXTFILE / "dsg.prom"), "dsg_project_head_snapshot", project="lab-alpha") == 4
    )


class _Receiver(http.server.BaseHTTPRequestHandler):
    posts: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).posts.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    posts: ClassVar[list[dict[str, Any]]] = []
    handler = type("Receiver", (_Receiver,), {"posts": posts})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dsg-health", posts
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow  # the extended tier: two operations.yml runs: about 1 min
def test_health_job_with_alerts_delivers_to_a_webhook(ansible_tools, lab, tmp_path):
    state = tmp_path / "alerts" / "health-state.json"
    with webhook_receiver() as (url, posts):
        extra = {
            "dsg_monitoring_alerts": {"webhook": {"url": url}, "state_file": str(state)},
            # every pool is "full" at 0%: a WARNING on each, whatever the lab holds
            "dsg_monitoring_capacity_warn_percent": 0,
            # and no replication check: whether the lab's projects are backed up yet depends
            # on the tests before (a CRITICAL there would hide the WARNING this test delivers)
            "dsg_monitoring_replication_lag_warn_hours": None,
            "dsg_monitoring_replication_lag_crit_hours": None,
        }
        try:
            run, _ = operations(ansible_tools, "--tags", "monitoring", "-e", json.dumps(extra))
            TIMINGS["converge with alerts"] = run.seconds
            # the host is WARNING now, and that does not fail the play
            assert "the host is WARNING now" in " ".join(run.stdout.split()), run.explain()
            cfg = yaml.safe_load(HEALTH.read_text())
            assert cfg["alerts"] == {"webhook": {"url": url}, "state_file": str(state)}
            env, jobs = parse_cron(MONITORING_CRON)
            health = job_named(jobs, "health", "--alert")

            out = run_logged(env, health, LOGS / "health.log", "health")
            assert exit_of(out) == 1, out  # WARNING
            assert len(posts) == 1, (posts, out)
            assert posts[0]["status"] == "WARNING"
            changed = {(c["check"], c["target"], c["status"]) for c in posts[0]["changes"]}
            assert ("pool_capacity", "dsglab", "WARNING") in changed, posts
            assert ("pool_capacity", "dsgbackup", "WARNING") in changed, posts
            assert state.is_file()

            out = run_logged(env, health, LOGS / "health.log", "health")
            assert exit_of(out) == 1 and len(posts) == 1, (posts, out)  # nothing new: no POST
        finally:
            back, recap = operations(ansible_tools, "--tags", "monitoring")
    assert recap["changed"] >= 2, back.explain()  # health.yml and the cron file
    assert "alerts" not in yaml.safe_load(HEALTH.read_text())
    assert "--alert" not in MONITORING_CRON.read_text()


@pytest.mark.slow  # the extended tier: several failing operations.yml runs: about 1 min
def test_bad_configuration_fails_the_play_with_the_reason(ansible_tools, lab):
    cron_before = BACKUP_CRON.read_bytes()
    bad_target = {"dsg_backup_target": PRIMARY}
    refused, _ = operations(
        ansible_tools, "--tags", "backup", "-e", json.dumps(bad_target), ok=False
    )
    assert refused.returncode != 0, refused.explain()
    assert "must lie outside the project datasets" in " ".join(refused.stdout.split())
    assert BACKUP_CRON.read_bytes() == cron_before  # refused before anything was written

    bad_alerts = {"dsg_monitoring_alerts": {"webhook": {"url": "ftp://example.invalid/x"}}}
    try:
        failed, _ = operations(
            ansible_tools, "--tags", "monitoring", "-e", json.dumps(bad_alerts), ok=False
        )
        assert failed.returncode != 0, failed.explain()
        text = " ".join(failed.stdout.split())
        assert "dsg admin health rejects the configuration" in text, failed.explain()
        assert "the scheme must be http or https" in text, failed.explain()
    finally:
        back, _ = operations(ansible_tools, "--tags", "monitoring")
    assert "alerts" not in yaml.safe_load(HEALTH.read_text()), back.explain()
    write_timings(lab.lab_dir)
