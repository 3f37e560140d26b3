"""What a researcher sees, through the real console script: plain words and totals, the state
codes only with -v and --json, usage errors as JSON, help without noise, completion, status
exit codes and reminders, .gitignore, progress on a terminal only, errors that name the
thing and the fix (a missing snapshot, a full disk), interactive init and Ctrl-C."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.helpers import DSG, Researcher, project_config

CODES = re.compile(r"s[xL]+C?x?R|sLCR__|sxL|delete_remote|delete_local")


def js(proc: subprocess.CompletedProcess) -> dict:
    assert proc.stdout.count("\n") == 1, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def person(tmp_path: Path, repo_base: Path, name: str) -> Researcher:
    return Researcher(
        name,
        tmp_path / name / "proj",
        tmp_path / "cfg" / name,
        project_config("proj", repo_base),
    )


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def pair(tmp_path: Path, repo_base: Path) -> tuple[Researcher, Researcher]:
    """ana initialised the project (s1: two files); ben cloned it."""
    ana, ben = person(tmp_path, repo_base, "ana"), person(tmp_path, repo_base, "ben")
    ana.write("task1/input/a.csv", "a\n")
    ana.write("task1/input/b.csv", "b\n")
    proc = ana.cli("init", "--no-interactive", "-m", "first")
    assert proc.returncode == 0, proc.stderr
    assert ben.cli("clone").returncode == 0
    return ana, ben


def test_status_in_plain_words_with_totals(pair: tuple[Researcher, Researcher]) -> None:
    ana, ben = pair
    ana.write("task1/input/a.csv", "ana's edit\n")
    ana.write("task1/input/new.csv", "x" * 2048)
    assert ana.cli("sync", "-m", "edit").returncode == 0
    ben.write("task1/input/a.csv", "ben's edit\n")  # a conflict
    ben.delete("task1/input/b.csv")
    ben.write("task1/output/mine.csv", "m\n")

    out = ben.cli("status").stdout
    assert "task1/input/a.csv   changed here and on the server — conflict" in out, out
    assert "task1/input/new.csv   new on the server — will download" in out, out
    assert "task1/input/b.csv   deleted here — will delete on the server" in out, out
    assert "task1/output/mine.csv   new here — will upload" in out, out
    assert "Total: 1 to upload (2 B), 1 to download (2.0 KiB), 1 to delete on the server" in out
    assert "1 conflict;" in out, out
    assert not CODES.search(out), out  # the state codes: only with -v and --json
    for path in ("a.csv", "new.csv", "b.csv", "mine.csv"):
        assert out.count(f"/{path}") == 1, out  # every file listed once

    verbose = ben.cli("status", "-v").stdout
    assert "[sLCR__all_ne]" in verbose and "[sxLxCxR__none]" not in verbose
    assert "[sxLCxR__only_R]" in ben.cli("sync", "--dry-run", "-v").stdout
    doc = js(ben.cli("status", "--json"))
    assert {f["path"]: f["state"] for f in doc["files"]}["task1/input/a.csv"] == "sLCR__all_ne"

    # resolved: the line says which side wins and what that does
    assert ben.cli("resolve", "task1/input/a.csv", "--use", "remote").returncode == 0
    out = ben.cli("status").stdout
    assert "changed here and on the server — resolved with --use remote: will download" in out

    done = ben.cli("sync", "-m", "ben")
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"Synced: 1 uploaded \(2 B\), 2 downloaded \(.*\), 1 deleted on the server", done.stdout
    )
    assert "kept your version as task1/input/a.dsg-conflict-" in done.stdout


def test_status_exit_code_and_conflict_copy_reminder(pair: tuple[Researcher, Researcher]) -> None:
    ana, ben = pair
    assert ben.cli("status", "--exit-code").returncode == 0
    ana.write("task1/input/a.csv", "ana\n")
    assert ana.cli("sync").returncode == 0
    ben.write("task1/input/a.csv", "ben\n")
    assert ben.cli("status").returncode == 0  # documented: 0 whenever the plan was worked out
    proc = ben.cli("status", "--exit-code", "--json")
    assert proc.returncode == 3 and js(proc)["ok"] is True
    assert ben.cli("status", "--exit-code").returncode == 3
    blocked = ben.cli("sync")
    assert blocked.returncode == 3
    assert "task1/input/a.csv   changed here and on the server" in blocked.stderr, blocked.stderr
    assert not CODES.search(blocked.stderr), blocked.stderr

    ben.cli("resolve", "task1/input/a.csv", "--use", "remote")
    assert ben.cli("sync").returncode == 0
    assert ben.cli("status", "--exit-code").returncode == 0
    out = ben.cli("status").stdout
    assert "1 conflict copy left from earlier syncs (task1/input/a.dsg-conflict-" in out, out
    assert "'dsg clean'" in out
    copies = js(ben.cli("status", "--json"))["conflict_copies"]
    assert len(copies) == 1
    assert ben.cli("clean", "--no-dry-run").returncode == 0
    assert "conflict cop" not in ben.cli("status").stdout

    # a name that blocks a sync: --exit-code 3 as well
    ben.write("task1/input/tab\there.csv", "t\n")
    assert ben.cli("status", "--exit-code").returncode == 3


def test_usage_errors_with_json_are_one_document(pair: tuple[Researcher, Researcher]) -> None:
    ana, _ = pair
    for args in (["log", "-n", "abc"], ["status", "--nope"], ["resolve"], ["nosuch"]):
        proc = ana.cli(*args, "--json")
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        doc = js(proc)
        assert doc["ok"] is False and doc["error"]["kind"] == "usage", doc
        assert doc["command"] == args[0]
    proc = ana.cli("log", "-n", "abc")
    assert proc.returncode == 2 and proc.stdout == "" and "Invalid value" in proc.stderr


def test_help_version_and_completion(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([DSG, *args], capture_output=True, text=True, cwd=tmp_path)

    for cmd in (["status"], ["sync"], ["snapfetch"], ["init"], ["log"]):
        text = run(*cmd, "--help").stdout
        assert "<bool>" not in text and "<str>" not in text and "<int>" not in text, text
    assert "-n, --limit LIMIT" in run("log", "--help").stdout
    assert "--exit-code" in run("status", "--help").stdout
    version = run("--version")
    assert version.returncode == 0 and re.fullmatch(r"dsg \d+\.\d+\.\d+\S*\n", version.stdout)
    for shell in ("bash", "zsh", "fish"):
        script = run("--show-completion", shell)
        assert script.returncode == 0 and "_DSG_COMPLETE" in script.stdout, script.stdout


def test_gitignore_on_init_and_clone(tmp_path: Path, repo_base: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    ana, ben = person(tmp_path, repo_base, "ana"), person(tmp_path, repo_base, "ben")
    git(ana.root, "init", "-q")
    (ana.root / ".gitignore").write_text("*.log\n")
    ana.write("task1/input/a.csv", "a\n")
    proc = ana.cli("init", "--no-interactive", "--json")
    assert proc.returncode == 0, proc.stderr
    assert js(proc)["gitignore"]["changed"] is True
    text = (ana.root / ".gitignore").read_text()
    assert text.startswith("*.log\n")
    for line in ("/.dsg/", "**/input/", "**/output/", "**/frozen/"):
        assert f"\n{line}\n" in text, text
    git(ana.root, "add", "-A")
    tracked = subprocess.run(["git", "ls-files"], cwd=ana.root, capture_output=True, text=True)
    assert tracked.stdout.split() == [".dsgconfig.yml", ".gitignore"]  # code in git, data not

    # ben has no git repository: clone says exactly what to add
    out = ben.cli("clone").stdout
    assert "no git repository here" in out and "    **/input/" in out, out
    assert not (ben.root / ".gitignore").exists()
    # ... and once there is one, the block is written once (a second run changes nothing)
    git(ben.root, "init", "-q")
    shutil.rmtree(ben.root / ".dsg")  # not a working copy any more: clone again
    assert ben.cli("clone").returncode == 0
    first = (ben.root / ".gitignore").read_text()
    from dsg.workcopy.git import ensure_gitignore

    again = ensure_gitignore(ben.root, ["input", "output", "frozen"])
    assert again.written and not again.changed
    assert (ben.root / ".gitignore").read_text() == first and first.count("# <<< dsg") == 1

    # git tracking a data file: status warns, naming it
    git(ana.root, "add", "-f", "task1/input/a.csv")
    out = ana.cli("status").stdout
    assert "git tracks 1 file(s) inside data dirs (task1/input/a.csv)" in out, out
    assert js(ana.cli("status", "--json"))["git_tracked_data"] == ["task1/input/a.csv"]


def test_progress_only_on_a_terminal(pair: tuple[Researcher, Researcher]) -> None:
    ana, ben = pair
    for i in range(5):
        ana.write(f"task1/input/p{i}.csv", f"{i}" * 3000)
    assert ana.cli("sync").returncode == 0
    # a pipe: no progress, not a byte on stderr
    piped = ben.cli("sync", "--dry-run")
    assert piped.stderr == ""
    # a terminal (stderr on a pty): files and bytes of the plan's totals
    master, slave = pty.openpty()
    env = {**os.environ, "DSG_CONFIG_HOME": str(ben.cfg_home), "COLUMNS": "160"}
    proc = subprocess.Popen(
        [DSG, "sync"], cwd=ben.root, env=env, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(30) == 0
    os.close(master)
    text = seen.decode(errors="replace")
    assert "5/5 files" in text and "15.0/15.0 kB" in text, text


def test_no_snapshot_names_the_snapshot_and_the_head(pair: tuple[Researcher, Researcher]) -> None:
    ana, _ = pair
    proc = ana.cli("validate-snapshot", "--snapshot", "s9", "--json")
    doc = js(proc)
    assert proc.returncode == 1 and "no snapshot s9 (head is s1)" in doc["error"]["message"]
    assert "manifest" not in doc["error"]["message"]
    with closing(ana.repo) as repo:  # the backends themselves, below any ref resolution
        for read in (repo.manifest, repo.record, repo.manifest_bytes):
            with pytest.raises(Exception, match=r"^no snapshot s9 \(head is s1\)$"):
                read("s9")


def test_full_disk_names_the_file_and_the_bytes_needed(
    tmp_path: Path, pair: tuple[Researcher, Researcher]
) -> None:
    ana, _ = pair
    ana.write("task1/input/big.bin", os.urandom(300_000))
    assert ana.cli("sync").returncode == 0
    chen = person(tmp_path, Path(ana.config.repository.mountpoint), "chen")
    script = (
        f"mount -t tmpfs -o size=128k tmpfs {chen.root} && "
        f"cp {tmp_path}/ana/proj/.dsgconfig.yml {chen.root}/ && "
        f"cd {chen.root} && DSG_CONFIG_HOME={chen.cfg_home} {DSG} clone --json"
    )
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    if shutil.which("unshare") is None or probe.returncode != 0:
        pytest.skip("no user+mount namespace here for a small tmpfs (unshare -r -m)")
    proc = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = json.loads(proc.stdout)["error"]
    assert err["kind"] == "local_io", err
    assert "No space left on device" in err["message"]
    assert "task1/input/big.bin" in err["message"], err  # the file, not a temp name
    assert "dsg-tmp" not in err["message"]
    assert re.search(
        r"about \d+\.\d KiB more are needed for the \d file\(s\) still to download", err["message"]
    ), err
    assert err["details"]["needed_bytes"] >= 300_000 - 128 * 1024


def _interrupt(pid: int) -> None:
    """Ctrl-C, as a terminal sends it; again while the process has not ended (on a busy
    machine the first one may arrive before the prompt is waiting for input)."""
    for _ in range(20):
        os.kill(pid, signal.SIGINT)
        time.sleep(0.25)
        try:
            ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if ended is not None:  # exited (left to be reaped by the caller)
            return


def _interact(cwd: Path, env: dict[str, str], args: list[str], steps: list[tuple[str, str]]):
    """Run dsg with its stdin and stdout on a pty; for each (prompt text, answer) wait for
    the text, then type the answer ("^C": send SIGINT). Returns (exit code, all output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child
        os.chdir(cwd)
        # As from a terminal's shell: Ctrl-C's signal at its default, whatever this test
        # process inherited (a runner started with "&" by a script ignores SIGINT, and an
        # ignored SIGINT stays ignored across exec, so the command could never see ^C)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execve(DSG, [DSG, *args], env)
    seen = b""
    start = 0  # output after the last prompt answered
    deadline = time.monotonic() + 60
    try:
        for want, answer in steps:
            while want.encode() not in seen[start:]:
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise AssertionError(f"no {want!r} in {seen.decode(errors='replace')!r}")
                seen += os.read(fd, 4096)
            start = seen.index(want.encode(), start) + len(want)
            if answer == "^C":
                _interrupt(pid)
            else:
                os.write(fd, answer.encode() + b"\n")
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:  # still waiting for input after a failed step: never hang the test
            time.sleep(1)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_interactive_init_asks_again_and_ctrl_c_exits_130(tmp_path: Path, repo_base: Path) -> None:
    ana = person(tmp_path, repo_base, "ana")
    (ana.root / ".dsgconfig.yml").unlink()
    ana.write("task1/input/a.csv", "a\n")
    env = {**os.environ, "DSG_CONFIG_HOME": str(ana.cfg_home)}
    code, text = _interact(
        ana.root,
        env,
        ["init"],
        [
            ("repository type (posix/zfs)", "nfs"),
            ("repository type (posix/zfs)", "posix"),  # asked again
            ("repository base path", "relative/path"),
            ("repository base path", str(repo_base)),
            ("repository name", "proj"),
        ],
    )
    assert code == 0, text
    assert "validation error" not in text and "pydantic" not in text, text
    assert "--repo-type 'nfs': Input should be 'posix' or 'zfs'" in text, text
    assert "absolute path" in text and "Created repository proj" in text, text

    other = tmp_path / "other"
    (other / "input").mkdir(parents=True)
    # the same mistakes as options: an error, one line per value, no validation dump
    bad = ana.cli("init", "--repo-type", "nfs", "--repo-path", "rel", "--repo-name", "p",
                  "--no-interactive", cwd=other)  # fmt: skip
    assert bad.returncode == 1 and "--repo-type 'nfs': Input should be" in bad.stderr
    assert "--repo-path 'rel': mountpoint must be an absolute path" in bad.stderr
    assert "validation error" not in bad.stderr and "pydantic" not in bad.stderr
    code, text = _interact(other, env, ["init"], [("repository type (posix/zfs)", "^C")])
    assert code == 130, text
    assert not (other / ".dsgconfig.yml").exists()


@pytest.mark.parametrize("command", ["log", "status"])
def test_ctrl_c_while_the_command_loads_exits_130_without_a_traceback(
    command: str, tmp_path: Path
) -> None:
    # KeyboardInterrupt raised where the CLI is loaded (what a Ctrl-C at that moment does)
    code = (
        "import sys, dsg.cli\n"
        "def interrupted(**kw):\n"
        "    raise KeyboardInterrupt\n"
        "dsg.cli.main = interrupted\n"
        "import dsg.entry\n"
        f"sys.argv = ['dsg', '{command}']\n"
        "dsg.entry.main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
