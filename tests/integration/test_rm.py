"""`dsg rm`: taking files or a directory out of the project on purpose (a change of data_dirs
alone never deletes anything: tests/security/test_hostile_member.py). On posix and zfs."""

from __future__ import annotations

import json

from tests.helpers import manifest_content, tree_content

F = "task1/frozen/old.csv"


def js(proc) -> dict:
    assert proc.stdout.count("\n") == 1, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_rm_a_directory_dropped_from_data_dirs(make_researcher) -> None:
    alice = make_researcher("alice")
    alice.write("task1/input/a.csv", "a\n")
    for i in range(3):
        alice.write(f"task1/frozen/f{i}.csv", f"{i}\n")
    alice.init()
    bob = make_researcher("bob")
    bob.clone()
    # alice takes frozen/ out of her data_dirs: nothing is deleted anywhere by that
    cfg = alice.root / ".dsgconfig.yml"
    cfg.write_text(cfg.read_text().replace("- frozen\n", ""))
    proc = alice.cli("sync", "--json")
    doc = js(proc)
    assert proc.returncode == 0 and doc["committed"] is None
    assert sorted(doc["untracked"]) == [f"task1/frozen/f{i}.csv" for i in range(3)]
    # the explicit command: a summary first, and nothing without --yes off a terminal
    proc = alice.cli("rm", "task1/frozen", "--json")
    err = js(proc)["error"]
    assert proc.returncode == 2 and err["kind"] == "usage"
    assert (
        "3 file(s) of s1 would be removed" in err["message"] and "task1/frozen/" in err["message"]
    )
    doc = js(alice.cli("rm", "task1/frozen", "--dry-run", "--json"))
    assert doc["dry_run"] and len(doc["paths"]) == 3 and alice.repo.head() == "s1"
    doc = js(alice.cli("rm", "task1/frozen", "--yes", "--json"))
    assert doc["committed"]["id"] == "s2" and doc["committed"]["message"] == "rm task1/frozen"
    assert manifest_content(alice.repo.manifest("s2")).keys() == {"task1/input/a.csv"}
    assert doc["snapshot"] == "s2"
    assert alice.path("task1/frozen/f0.csv").exists()  # outside her data dirs: not dsg's
    assert js(alice.cli("status", "--json"))["untracked"] == []
    # bob still tracks frozen/: his copy follows the deletion; the history keeps the files
    bob.sync()
    assert tree_content(bob.root) == {
        "task1/input/a.csv": tree_content(alice.root)["task1/input/a.csv"]
    }
    doc = js(bob.cli("restore", "task1/frozen", "-s", "s1", "--json"))
    assert len(doc["restored"]) == 3


def test_rm_refuses_a_path_not_in_the_repository(team) -> None:
    alice, _ = team
    proc = alice.cli("rm", "task1/nothing", "--yes", "--json")
    assert proc.returncode == 1 and "not in snapshot s1" in js(proc)["error"]["message"]
    proc = alice.cli("rm", "task1/input/a.csv", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "Committed s2: 1 file(s) removed." in proc.stdout
    assert not alice.path("task1/input/a.csv").exists()
