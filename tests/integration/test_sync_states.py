"""Every sync state end to end: two researchers, one repository, real files.

Bob's working copy is L and his base is C; the repository head (after Alice's syncs) is R.
Each test checks the state `status` reports, then that `sync` really does the action.
"""

from __future__ import annotations

import pytest

from dsg.core.errors import ConflictsBlocked
from tests.helpers import manifest_content, tree_content

A = "task1/input/a.csv"
NEW = "task1/input/new.csv"


def head_content(r):
    repo = r.repo
    return manifest_content(repo.manifest(repo.head()))


def test_s01_all_eq(team) -> None:
    _, bob = team
    assert bob.states()[A] == "sLCR__all_eq"
    res = bob.sync()
    assert res.committed is None and res.snapshot == "s1"


def test_s02_remote_changed_downloads(team) -> None:
    alice, bob = team
    alice.write(A, "alice v2\n")
    alice.sync()
    assert bob.states()[A] == "sLCR__L_eq_C_ne_R"
    res = bob.sync()
    assert res.committed is None
    assert bob.read(A) == b"alice v2\n"
    # mtime is kept on download
    assert bob.path(A).stat().st_mtime_ns == alice.path(A).stat().st_mtime_ns


def test_s03_same_change_both_sides(team) -> None:
    alice, bob = team
    alice.write(A, "same\n")
    alice.sync()
    bob.write(A, "same\n")
    assert bob.states()[A] == "sLCR__L_eq_R_ne_C"
    res = bob.sync()
    assert res.committed is None and res.snapshot == "s2"
    assert bob.states()[A] == "sLCR__all_eq"


def test_s04_local_change_uploads(team) -> None:
    _, bob = team
    bob.write(A, "bob v2\n")
    assert bob.states()[A] == "sLCR__C_eq_R_ne_L"
    res = bob.sync()
    assert res.committed is not None and res.committed.id == "s2"
    entry = bob.repo.manifest("s2").get(A)
    assert (entry.snap, entry.user) == (2, "bob@hrdag.org")
    assert head_content(bob) == tree_content(bob.root)


def test_s05_all_differ_is_a_conflict(team) -> None:
    alice, bob = team
    alice.write(A, "alice\n")
    alice.sync()
    bob.write(A, "bob\n")
    assert bob.states()[A] == "sLCR__all_ne"
    with pytest.raises(ConflictsBlocked):
        bob.sync()
    assert bob.read(A) == b"bob\n" and bob.repo.head() == "s2"


def test_s06_local_delete_propagates(team) -> None:
    _, bob = team
    bob.delete(A)
    assert bob.states()[A] == "sxLCR__C_eq_R"
    res = bob.sync()
    assert A not in head_content(bob)
    assert res.committed.id == "s2"
    # the deleted bytes are still in history
    assert A in manifest_content(bob.repo.manifest("s1"))


def test_s07_local_delete_vs_remote_change(team) -> None:
    alice, bob = team
    alice.write(A, "alice\n")
    alice.sync()
    bob.delete(A)
    assert bob.states()[A] == "sxLCR__C_ne_R"
    with pytest.raises(ConflictsBlocked):
        bob.sync()
    assert bob.repo.head() == "s2"


def test_s08_both_added_identical(team) -> None:
    alice, bob = team
    alice.write(NEW, "n\n")
    alice.sync()
    bob.write(NEW, "n\n")
    assert bob.states()[NEW] == "sLxCR__L_eq_R"
    res = bob.sync()
    assert res.committed is None
    assert bob.ws.base().get(NEW) is not None


def test_s09_both_added_different(team) -> None:
    alice, bob = team
    alice.write(NEW, "alice\n")
    alice.sync()
    bob.write(NEW, "bob\n")
    assert bob.states()[NEW] == "sLxCR__L_ne_R"
    with pytest.raises(ConflictsBlocked):
        bob.sync()


def test_s10_remote_delete_propagates(team) -> None:
    alice, bob = team
    alice.delete(A)
    alice.sync()
    assert bob.states()[A] == "sLCxR__L_eq_C"
    bob.sync()
    assert not bob.path(A).exists()
    assert tree_content(bob.root) == head_content(bob)


def test_s11_local_change_vs_remote_delete(team) -> None:
    alice, bob = team
    alice.delete(A)
    alice.sync()
    bob.write(A, "bob\n")
    assert bob.states()[A] == "sLCxR__L_ne_C"
    with pytest.raises(ConflictsBlocked):
        bob.sync()
    assert bob.read(A) == b"bob\n"


def test_s12_new_on_remote_downloads(team) -> None:
    alice, bob = team
    alice.write(NEW, "new\n")
    alice.link("task1/output/link", "../input/new.csv")
    alice.sync()
    assert bob.states()[NEW] == "sxLCxR__only_R"
    bob.sync()
    assert bob.read(NEW) == b"new\n"
    assert bob.path("task1/output/link").is_symlink()
    assert bob.read("task1/output/link") == b"new\n"


def test_s13_deleted_on_both_sides(team) -> None:
    alice, bob = team
    alice.delete(A)
    alice.sync()
    bob.delete(A)
    assert bob.states()[A] == "sxLCRx__only_C"
    res = bob.sync()
    assert res.committed is None
    assert bob.ws.base().get(A) is None


def test_s14_new_local_uploads(team) -> None:
    _, bob = team
    bob.write(NEW, "bob new\n")
    assert bob.states()[NEW] == "sLxCxR__only_L"
    bob.sync()
    assert head_content(bob)[NEW] == tree_content(bob.root)[NEW]


def test_s15_untracked_path_is_in_no_state(team) -> None:
    _, bob = team
    bob.write("task1/src/code.py", "print()\n")  # not a data directory
    assert "task1/src/code.py" not in bob.states()
    res = bob.sync()
    assert res.committed is None


# --- resolutions carry through to real transfers ------------------------------------------


def make_conflict(team, kind: str):
    alice, bob = team
    if kind == "all_ne":
        alice.write(A, "alice\n")
        bob.write(A, "bob\n")
    elif kind == "del_vs_change":
        alice.write(A, "alice\n")
        bob.delete(A)
    elif kind == "both_new":
        alice.write(A.replace("a.csv", "n.csv"), "alice\n")
        bob.write(A.replace("a.csv", "n.csv"), "bob\n")
    elif kind == "change_vs_del":
        alice.delete(A)
        bob.write(A, "bob\n")
    alice.sync()
    path = A.replace("a.csv", "n.csv") if kind == "both_new" else A
    with pytest.raises(ConflictsBlocked):
        bob.sync()
    return alice, bob, path


@pytest.mark.parametrize("kind", ["all_ne", "del_vs_change", "both_new", "change_vs_del"])
@pytest.mark.parametrize("use", ["local", "remote", "base"])
def test_resolution_is_really_transferred(team, kind: str, use: str) -> None:
    alice, bob, path = make_conflict(team, kind)
    bob_before = bob.path(path).read_bytes() if bob.path(path).exists() else None
    base_entry = bob.ws.base().get(path)
    bob.resolve(path, use)
    res = bob.sync()
    head = head_content(bob)
    local = tree_content(bob.root)
    assert head == local, "after a resolved sync the working copy equals the head"
    if use == "local":
        if bob_before is None:
            assert path not in head
        else:
            assert bob.read(path) == bob_before
    elif use == "remote":
        alice_now = alice.path(path).read_bytes() if alice.path(path).exists() else None
        got = bob.path(path).read_bytes() if bob.path(path).exists() else None
        assert got == alice_now
    else:
        if base_entry is None:
            assert path not in head
        else:
            assert head[path] == f"f:{base_entry.hash_hex}"
    # bob's own bytes survive somewhere: in the working copy, in history or a conflict copy
    bob_now = bob.path(path).read_bytes() if bob.path(path).exists() else None
    if bob_before is not None and bob_now != bob_before:
        copies = list(bob.root.rglob("*.dsg-conflict-*"))
        assert any(c.read_bytes() == bob_before for c in copies), res.backups
    # and alice, syncing, gets the same tree
    alice.sync()
    assert tree_content(alice.root) == head


def test_continue_from_conflicts_file(team) -> None:
    _alice, bob, path = make_conflict(team, "all_ne")
    text = bob.ws.conflicts_path.read_text()
    assert "use: ?" in text and path in text
    bob.ws.conflicts_path.write_text(text.replace("use: ?", "use: local"))
    bob.sync(continue_=True)
    assert head_content(bob)[path] == tree_content(bob.root)[path]
    assert bob.read(path) == b"bob\n"
    assert not bob.ws.conflicts_path.exists()


def test_conflicts_file_errors_name_the_line(team) -> None:
    from dsg.core.errors import WorkingCopyError

    _, bob, _path = make_conflict(team, "all_ne")
    text = bob.ws.conflicts_path.read_text()
    bob.ws.conflicts_path.write_text(text.replace("use: ?", "use: mine"))
    with pytest.raises(WorkingCopyError, match=r"line \d+: 'mine' is not"):
        bob.sync(continue_=True)
