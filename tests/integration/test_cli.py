"""The CLI contract: commands, --json (one document), exit codes 0/1/2/3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import Researcher, project_config, tree_content


@pytest.fixture
def alice(tmp_path: Path, repo_base: Path) -> Researcher:
    r = Researcher(
        "alice",
        tmp_path / "alice" / "proj",
        tmp_path / "cfg" / "alice",
        project_config("proj", repo_base),
    )
    (r.root / ".dsgconfig.yml").unlink()  # init writes it
    r.write("task1/input/a.csv", "a\n")
    r.write("task1/output/b.csv", "b\n")
    r.write("task1/src/code.R", "not data\n")
    return r


def init_args(repo_base: Path) -> list[str]:
    return [
        "init",
        "--repo-type",
        "posix",
        "--host",
        "localhost",
        "--repo-path",
        str(repo_base),
        "--repo-name",
        "proj",
        "--no-interactive",
        "-m",
        "first data",
    ]


def js(proc) -> dict:
    assert proc.stdout.count("\n") == 1, proc.stdout
    return json.loads(proc.stdout)


def test_init_clone_status_sync_log(alice: Researcher, repo_base: Path, tmp_path: Path) -> None:
    proc = alice.cli(*init_args(repo_base), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = js(proc)
    assert doc["ok"] and doc["committed"]["id"] == "s1"
    assert doc["committed"]["entry_count"] == 2  # src/ is not a data dir
    assert (alice.root / ".dsgconfig.yml").exists()

    # init refuses when the repository exists, and writes nothing
    other = tmp_path / "other"
    (other / "task1/input").mkdir(parents=True)
    (other / "task1/input/z.csv").write_text("z")
    proc = alice.cli(*init_args(repo_base), "--json", cwd=other)
    assert proc.returncode == 1
    assert js(proc)["error"]["kind"] == "repository_exists"
    assert not (other / ".dsgconfig.yml").exists() and not (other / ".dsg").exists()

    bob = Researcher(
        "bob",
        tmp_path / "bob" / "proj",
        tmp_path / "cfg" / "bob",
        project_config("proj", repo_base),
    )
    (bob.root / ".dsgconfig.yml").write_text((alice.root / ".dsgconfig.yml").read_text())
    proc = bob.cli("clone", "--json")
    assert proc.returncode == 0, proc.stderr
    assert tree_content(bob.root) == tree_content(alice.root)

    # run from a subdirectory
    bob.write("task1/input/new.csv", "n\n")
    bob.path("task1/src").mkdir(parents=True, exist_ok=True)
    proc = bob.cli("status", "--json", cwd=bob.root / "task1" / "src")
    doc = js(proc)
    assert doc["base"] == "s1" and doc["remote_head"] == "s1"
    files = {f["path"]: (f["state"], f["action"]) for f in doc["files"]}
    assert files["task1/input/new.csv"] == ("sLxCxR__only_L", "upload")
    assert files["task1/input/a.csv"] == ("sLCR__all_eq", "none")

    # dry run prints the same plan and changes nothing
    dry = js(bob.cli("sync", "--dry-run", "--json"))
    assert dry["files"] == [f for f in doc["files"] if f["action"] != "none"]
    assert dry["dry_run"] is True and bob.repo.head() == "s1"

    proc = bob.cli("sync", "-m", "bob adds new", "--json")
    assert proc.returncode == 0
    assert js(proc)["committed"]["id"] == "s2"

    # nothing to change: no snapshot
    assert js(bob.cli("sync", "--json"))["committed"] is None
    assert bob.repo.head() == "s2"

    log = js(bob.cli("log", "--json"))["snapshots"]
    assert [(s["id"], s["parent"], s["author"], s["message"]) for s in log] == [
        ("s2", "s1", "bob@hrdag.org", "bob adds new"),
        ("s1", None, "alice@hrdag.org", "first data"),
    ]
    assert set(log[0]) >= {"id", "parent", "author", "message", "created_at"}
    files = js(bob.cli("list-files", "--json"))["files"]
    assert {f["path"]: f["user"] for f in files}["task1/input/new.csv"] == "bob@hrdag.org"

    # human output shows every kind of change, deletions included
    alice.cli("sync")
    bob.delete("task1/input/a.csv")
    out = bob.cli("status").stdout
    assert "deleted here — will delete on the server" in out and "task1/input/a.csv" in out
    assert "delete_remote" not in out and "sxLCR" not in out  # codes only with -v/--json


def test_conflict_exit_code_and_resolve(alice: Researcher, repo_base: Path, tmp_path: Path) -> None:
    assert alice.cli(*init_args(repo_base)).returncode == 0
    bob = Researcher(
        "bob",
        tmp_path / "bob" / "proj",
        tmp_path / "cfg" / "bob",
        project_config("proj", repo_base),
    )
    assert bob.cli("clone").returncode == 0
    alice.write("task1/input/a.csv", "alice\n")
    assert alice.cli("sync").returncode == 0
    bob.write("task1/input/a.csv", "bob\n")
    proc = bob.cli("sync")
    assert proc.returncode == 3
    assert "conflict" in proc.stderr and "task1/input/a.csv" in proc.stderr
    doc = js(bob.cli("sync", "--json"))
    assert doc["ok"] is False and doc["error"]["kind"] == "conflicts"
    assert bob.read("task1/input/a.csv") == b"bob\n"
    # resolve from a subdirectory with a relative path
    proc = bob.cli(
        "resolve", "../input/a.csv", "--use", "remote", cwd=bob.root / "task1" / "output"
    )
    assert proc.returncode == 0, proc.stderr
    proc = bob.cli("sync", "--json")
    assert proc.returncode == 0
    doc = js(proc)
    assert doc["backups"] and "dsg-conflict" in doc["backups"][0]
    assert bob.read("task1/input/a.csv") == b"alice\n"
    assert bob.read(doc["backups"][0]) == b"bob\n"


@pytest.mark.parametrize(
    "args",
    [["sync", "--bogus"], ["resolve", "x"], ["log", "-n", "many"], ["nosuchcommand"]],
)
def test_usage_errors_exit_2(alice: Researcher, args: list[str]) -> None:
    assert alice.cli(*args).returncode == 2


def test_resolve_bad_choice_is_usage_error(alice: Researcher, repo_base: Path) -> None:
    alice.cli(*init_args(repo_base))
    proc = alice.cli("resolve", "task1/input/a.csv", "--use", "mine", "--json")
    assert proc.returncode == 2 and js(proc)["error"]["kind"] == "usage"


def test_outside_a_project(tmp_path: Path, alice: Researcher) -> None:
    proc = alice.cli("status", "--json", cwd=tmp_path)
    assert proc.returncode == 1
    assert ".dsgconfig.yml" in js(proc)["error"]["message"]


def test_init_needs_options_without_interaction(alice: Researcher) -> None:
    proc = alice.cli("init", "--no-interactive", "--json")
    assert proc.returncode == 2 and js(proc)["error"]["kind"] == "usage"
