"""Undo without an admin: `dsg restore` (files back in the working copy as a snapshot had them)
and `dsg revert` (a new snapshot undoing one); tags and head~N wherever a snapshot goes; and
snapfetch without -o never writing into a data dir. On posix and zfs (the `team` fixture)."""

from __future__ import annotations

import json
import os
import stat
from contextlib import closing

import pytest

from dsg.core.errors import PathError
from dsg.sync import undo
from tests.helpers import manifest_content, stored_file, tree_content

A = "task1/input/a.csv"
B = "task1/input/b.csv"
R = "task1/output/result.txt"


def js(proc) -> dict:
    assert proc.stdout.count("\n") == 1, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def conflict_copies(r, d: str = "task1/input") -> list[str]:
    return sorted(n for n in os.listdir(r.path(d)) if ".dsg-conflict-" in n)


# --- restore ---------------------------------------------------------------------------------


def test_restore_discards_a_local_edit_and_keeps_it_aside(team) -> None:
    alice, _ = team
    alice.write(A, "my edit\n")
    os.chmod(alice.path(A), 0o600)
    proc = alice.cli("restore", A, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = js(proc)
    assert doc["snapshot"] == "s1" and doc["restored"] == [A] and len(doc["backups"]) == 1
    assert alice.read(A) == b"a,1\n"
    (copy,) = conflict_copies(alice)
    assert alice.read(f"task1/input/{copy}") == b"my edit\n"
    mode = stat.S_IMODE(os.stat(alice.path(A)).st_mode)
    assert mode & 0o200 and mode & 0o044 == 0o044, oct(mode)  # an ordinary file, not read-only
    assert alice.status().plan.is_noop
    # --force: no copy; a file already as in the snapshot is left alone
    alice.write(A, "again\n")
    doc = js(alice.cli("restore", A, "--force", "--json"))
    assert doc["backups"] == [] and alice.read(A) == b"a,1\n"
    assert len(conflict_copies(alice)) == 1
    doc = js(alice.cli("restore", "task1", "--json"))
    assert doc["restored"] == [] and doc["unchanged"] == 3


def test_restore_brings_back_a_deleted_directory(team) -> None:
    alice, _ = team
    before = tree_content(alice.root)
    for p in (A, B):
        alice.delete(p)
    alice.path("task1/input").rmdir()
    alice.write("task1/input/new.csv", "new\n")  # added since: left as it is
    (alice.root / "task1" / "input").chmod(0o755)
    proc = alice.cli("restore", "task1/input")
    assert proc.returncode == 0, proc.stderr
    assert "Restored 2 file(s) from s1" in proc.stdout and "new.csv" in proc.stdout
    after = tree_content(alice.root)
    assert after.pop("task1/input/new.csv") and after == before
    # from a subdirectory, relative paths work; "." is that directory
    alice.delete(A)
    proc = alice.cli("restore", ".", "--json", cwd=alice.path("task1/input"))
    assert js(proc)["restored"] == [A]


def test_restore_from_a_tag_and_from_head_tilde(team) -> None:
    alice, bob = team
    bob.write(A, "bob v2\n")
    bob.sync(message="v2")
    alice.sync()
    assert alice.cli("tag", "v1", "-s", "s1").returncode == 0
    doc = js(alice.cli("restore", A, "--snapshot", "v1", "--json"))
    assert doc["snapshot"] == "s1" and alice.read(A) == b"a,1\n"
    assert doc["backups"] == []  # the replaced file was the base's: it is in the repository
    changes = {p: a for p, a in alice.actions().items() if a != "none"}
    assert changes == {A: "upload"}  # the next sync sends the old version
    doc = js(alice.cli("restore", A, "-s", "head", "--json"))
    assert doc["snapshot"] == "s2" and alice.read(A) == b"bob v2\n"
    doc = js(alice.cli("restore", A, "-s", "head~1", "--json"))
    assert doc["snapshot"] == "s1"


def test_restore_refuses_unknown_paths_and_refs(team) -> None:
    alice, _ = team
    proc = alice.cli("restore", "task1/input/nope.csv", "--json")
    assert proc.returncode == 1 and "not in snapshot s1" in js(proc)["error"]["message"]
    proc = alice.cli("restore", A, "-s", "s9", "--json")
    err = js(proc)["error"]
    assert proc.returncode == 1 and err["kind"] == "unknown_ref"
    assert err["message"] == "no snapshot s9 (head is s1)"
    proc = alice.cli("restore", "../elsewhere", "--json")
    assert proc.returncode == 2


@pytest.mark.parametrize("backend", ["posix"])
def test_restore_checks_the_hash_and_writes_nothing_damaged(team) -> None:
    alice, _ = team
    alice.delete(A)
    target = stored_file(alice.repo, "s1", A)
    target.chmod(0o644)
    target.write_bytes(b"a,X\n")  # same size, other content
    proc = alice.cli("restore", A, "--json")
    assert proc.returncode == 1 and js(proc)["error"]["kind"] == "integrity"
    assert not alice.path(A).exists()
    assert not [n for n in os.listdir(alice.path("task1/input")) if "dsg-tmp" in n]


def test_restore_never_writes_through_a_link_out_of_the_project(team, tmp_path) -> None:
    alice, _ = team
    outside = tmp_path / "outside"
    outside.mkdir()
    os.remove(alice.path(R))
    alice.path("task1/output").rmdir()
    os.symlink(outside, alice.path("task1/output"))
    with pytest.raises(PathError), closing(alice.repo) as repo:
        undo.restore(alice.ws, repo, alice.user, ["task1/output"])
    assert list(outside.iterdir()) == []
    proc = alice.cli("restore", "task1/output/result.txt", "--json")
    assert proc.returncode == 1 and js(proc)["error"]["kind"] == "path"
    assert list(outside.iterdir()) == []


# --- revert ----------------------------------------------------------------------------------


def test_revert_makes_a_new_snapshot_that_undoes_one(team) -> None:
    alice, bob = team
    bob.write(A, "bob's mistake\n")
    bob.delete(B)
    bob.write("task1/input/c.csv", "c\n")
    bob.sync(message="oops")  # s2
    alice.write(R, "alice later\n")
    alice.sync(message="later")  # s3: alice syncs bob's s2 and her own change
    proc = alice.cli("revert", "s2", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = js(proc)
    assert doc["reverted"] == "s2" and doc["parent"] == "s1" and doc["committed"]["id"] == "s4"
    assert {c["path"]: c["action"] for c in doc["changes"]} == {
        A: "restore",
        B: "restore",
        "task1/input/c.csv": "delete",
    }
    assert doc["committed"]["message"] == "revert s2: oops"
    repo = alice.repo
    s4 = manifest_content(repo.manifest("s4"))
    s1, s3 = manifest_content(repo.manifest("s1")), manifest_content(repo.manifest("s3"))
    assert s4 == {**s1, R: s3[R]}  # s2 undone, alice's later change kept
    assert doc["snapshot"] == "s4" and tree_content(alice.root) == s4  # her copy is there
    assert [r["id"] for r in js(alice.cli("log", "--json"))["snapshots"]] == [
        "s4",
        "s3",
        "s2",
        "s1",
    ]
    bob.sync()
    assert tree_content(bob.root) == s4
    # reverting the revert brings s2's content back; nothing left to revert says so
    assert js(alice.cli("revert", "head", "--json"))["committed"]["id"] == "s5"
    assert manifest_content(repo.manifest("s5"))[A] == manifest_content(repo.manifest("s2"))[A]
    doc = js(alice.cli("revert", "s4", "--json"))
    assert doc["committed"] is None


def test_revert_refuses_when_a_file_changed_again_since(team) -> None:
    alice, bob = team
    bob.write(A, "v2\n")
    bob.sync()  # s2
    bob.write(A, "v3\n")
    bob.sync()  # s3
    proc = alice.cli("revert", "s2", "--json")
    assert proc.returncode == 3
    err = js(proc)["error"]
    assert err["kind"] == "conflicts" and err["details"] == [A]
    assert "changed again" in err["message"]
    assert alice.repo.head() == "s3"


def test_revert_leaves_local_changes_for_sync_to_combine(team) -> None:
    alice, bob = team
    bob.write(A, "v2\n")
    bob.sync()  # s2
    alice.write(R, "my unsynced edit\n")
    doc = js(alice.cli("revert", "s2", "--json"))
    assert doc["committed"]["id"] == "s3" and doc["pending_local"] is True
    assert alice.read(R) == b"my unsynced edit\n"
    res = alice.sync()
    assert res.committed is not None and res.committed.id == "s4"
    assert alice.read(A) == b"a,1\n"


def test_revert_of_a_large_change_asks_first(make_researcher) -> None:
    alice = make_researcher("alice")
    alice.write("task1/input/keep.csv", "k\n")
    alice.init()
    for i in range(60):
        alice.write(f"task1/input/new/{i}.csv", f"{i}\n")
    alice.sync()  # s2 adds 60 files: reverting it deletes 60 of 61
    proc = alice.cli("revert", "s2", "--json")
    assert proc.returncode == 4 and js(proc)["error"]["kind"] == "mass_delete"
    assert "this revert would delete 60 of the 61 files" in js(proc)["error"]["message"]
    doc = js(alice.cli("revert", "s2", "--allow-mass-delete", "--json"))
    assert doc["committed"]["id"] == "s3" and doc["snapshot"] == "s3"
    assert not alice.path("task1/input/new/0.csv").exists()


# --- tags and refs wherever a snapshot goes -----------------------------------------------------


def test_refs_in_log_snapmount_validate_and_errors(team, tmp_path) -> None:
    alice, bob = team
    bob.write(A, "v2\n")
    bob.sync(message="second")  # s2
    assert alice.cli("tag", "v1", "-s", "s1").returncode == 0
    assert alice.cli("tag", "v1.1", "-s", "s1").returncode == 0
    assert alice.cli("tag", "latest").returncode == 0
    snaps = js(alice.cli("log", "--json"))["snapshots"]
    assert [(s["id"], s["tags"]) for s in snaps] == [("s2", ["latest"]), ("s1", ["v1", "v1.1"])]
    human = alice.cli("log").stdout
    assert "(v1, v1.1)" in human and "(latest)" in human
    assert [s["id"] for s in js(alice.cli("log", "v1", "--json"))["snapshots"]] == ["s1"]
    assert [s["id"] for s in js(alice.cli("log", "head~1", "--json"))["snapshots"]] == ["s1"]
    proc = alice.cli("log", "v2", "--json")
    assert proc.returncode == 1
    assert js(proc)["error"]["message"] == "no tag v2 (tags: latest, v1, v1.1)"
    proc = alice.cli("log", "s9")
    assert proc.returncode == 1 and "no snapshot s9 (head is s2)" in proc.stderr
    assert "no snapshot head~5 (head is s2)" in alice.cli("log", "head~5").stderr
    doc = js(alice.cli("validate-snapshot", "-s", "v1", "--json"))
    assert doc["snapshot"] == "s1" if "snapshot" in doc else True
    assert alice.cli("validate-snapshot", "-s", "v1").stdout.startswith("s1:")
    doc = js(alice.cli("validate-file", A, "-s", "latest", "--json"))
    assert doc  # compared against s2
    mnt = tmp_path / "mnt"
    proc = alice.cli("snapmount", "-s", "v1", "--mountpoint", str(mnt), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert js(proc)["snapshot"] == "s1" and (mnt / A).read_bytes() == b"a,1\n"
    assert alice.cli("snapumount", str(mnt)).returncode == 0
    assert alice.cli("tag", "again", "-s", "v1", "--json").returncode == 0


# --- snapfetch without -o --------------------------------------------------------------------


def test_snapfetch_default_never_writes_into_a_data_dir(team) -> None:
    alice, bob = team
    bob.write(A, "v2\n")
    bob.sync()
    # stdout is a pipe here: the bytes go there, nothing is written
    before = sorted(os.listdir(alice.path("task1/input")))
    proc = alice.cli("snapfetch", "a.csv", "-s", "s1", cwd=alice.path("task1/input"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "a,1\n" and sorted(os.listdir(alice.path("task1/input"))) == before
    # --json needs stdout: a file next to you when that is outside the data dirs ...
    doc = js(
        alice.cli("snapfetch", "input/a.csv", "-s", "head~1", "--json", cwd=alice.path("task1"))
    )
    assert doc["output"] == str(alice.path("task1/a.s1.csv"))
    assert alice.read("task1/a.s1.csv") == b"a,1\n"
    # ... else at the project root, never in the data dir you stand in
    doc = js(alice.cli("snapfetch", A, "-s", "v9", "--json"))
    assert doc["error"]["kind"] == "unknown_ref"
    doc = js(alice.cli("snapfetch", "a.csv", "-s", "s1", "--json", cwd=alice.path("task1/input")))
    assert doc["output"] == str(alice.root / "a.s1.csv")
    assert sorted(os.listdir(alice.path("task1/input"))) == before
    # -o still goes where it is told
    doc = js(alice.cli("snapfetch", A, "-s", "s1", "-o", "copy.csv", "--json"))
    assert alice.read("copy.csv") == b"a,1\n"
