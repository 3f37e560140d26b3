"""Reading the past: snapfetch and snapmount on both backends."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

A = "task1/input/a.csv"


@pytest.fixture
def history(team):
    """s1: alice's a.csv; s2: bob changes it; s3: bob deletes it."""
    alice, bob = team
    bob.write(A, "bob's version\n")
    bob.sync(message="bob edits")
    bob.delete(A)
    bob.sync(message="bob deletes")
    return alice, bob


def test_snapfetch_gets_each_version(history, tmp_path: Path) -> None:
    _, bob = history
    for snap, want in (("s1", b"a,1\n"), ("s2", b"bob's version\n")):
        out = tmp_path / f"a-{snap}.csv"
        proc = bob.cli("snapfetch", A, "--snapshot", snap, "-o", str(out), "--json")
        assert proc.returncode == 0, proc.stderr
        assert out.read_bytes() == want
        doc = json.loads(proc.stdout)
        assert doc["entry"]["snapshot"] == snap
    proc = bob.cli("snapfetch", A, "--snapshot", "s3", "-o", str(tmp_path / "x"), "--json")
    assert (
        proc.returncode == 1 and "not in snapshot s3" in json.loads(proc.stdout)["error"]["message"]
    )
    # refuses to overwrite, and names a bad snapshot id as a usage error
    assert (
        bob.cli("snapfetch", A, "--snapshot", "s1", "-o", str(tmp_path / "a-s1.csv")).returncode
        == 1
    )
    # a name that could be a tag is looked up as one; text that cannot be a ref is a usage error
    latest = bob.cli("snapfetch", A, "--snapshot", "latest")
    assert latest.returncode == 1 and "no tag latest" in latest.stderr
    assert bob.cli("snapfetch", A, "--snapshot", "La test!").returncode == 2
    # without -o and with stdout not a terminal, the content goes to stdout: nothing new is
    # written into a data dir (paths relative to a subdirectory work)
    before = sorted(p.name for p in (bob.root / "task1" / "output").iterdir())
    proc = bob.cli("snapfetch", "../input/a.csv", "-s", "2", cwd=bob.root / "task1" / "output")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "bob's version\n"
    assert sorted(p.name for p in (bob.root / "task1" / "output").iterdir()) == before


def test_snapmount_is_read_only_and_unmounts(history) -> None:
    _, bob = history
    proc = bob.cli("snapmount", "--snapshot", "s2", "--json")
    assert proc.returncode == 0, proc.stderr
    where = Path(json.loads(proc.stdout)["mountpoint"])
    assert (where / A).read_bytes() == b"bob's version\n"
    assert (where / "task1/input/b.csv").read_bytes() == b"b,2\n"
    assert (where / A).stat().st_mode & 0o222 == 0, "snapshot files are read-only"
    if bob.config.repository.type == "zfs" or os.getuid() != 0:
        with pytest.raises(OSError):  # EROFS (zfs) or EACCES (posix, not root)
            (where / A).write_bytes(b"tamper")
    assert bob.read("task1/input/b.csv") == b"b,2\n"
    # the working copy does not see the mount (it is under .dsg/)
    assert bob.status().plan.is_noop
    proc = bob.cli("snapumount", str(where))
    assert proc.returncode == 0, proc.stderr
    assert not os.path.lexists(where)
    assert bob.cli("snapumount", str(where)).returncode == 1
