"""Downloads written in this thread or by writer threads (`dsg.fs.writers`): every file arrives
whole with its mtime and a valid hash-cache entry; a damaged object or a full disk stops the
run with a clear error, leaves no temp file and records no base, and the next run finishes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dsg.core.errors import IntegrityError
from dsg.fs.writers import MAX_QUEUED
from dsg.sync import execute
from dsg.workcopy.hashcache import HashCache, stat_key
from tests.helpers import tree_content

pytestmark = pytest.mark.parametrize("backend", ["posix"])


@pytest.fixture(autouse=True, params=["threads", "serial"])
def writer_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of writing (`dsg.fs.writers`): this machine's disk decides `auto`."""
    monkeypatch.setenv("DSG_WRITERS", request.param)
    return request.param


def _fill(r, n: int, big: int = 2) -> None:
    for i in range(n):
        r.write(f"task{i % 3}/input/d{i % 7}/f{i:04d}.csv", os.urandom(i % 300) + b"\n" * (i % 5))
    for j in range(big):  # streamed, not queued: above SMALL_FILE
        r.write(f"task0/frozen/big{j}.bin", os.urandom(execute.SMALL_FILE + 1 + j))
    r.write("task1/input/exact.bin", os.urandom(execute.SMALL_FILE))
    r.write("task1/input/empty.csv", b"")


def _temps(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".dsg-tmp-" in p.name]


def test_a_many_file_clone_arrives_whole_with_mtimes_and_cache(make_researcher) -> None:
    alice = make_researcher("alice")
    _fill(alice, 150)
    alice.init()
    bob = make_researcher("bob")
    bob.clone()
    assert tree_content(bob.root) == tree_content(alice.root)
    manifest = bob.repo.manifest(bob.repo.head())
    assert len(manifest) > 2 * MAX_QUEUED  # the queue fills and drains
    cache = HashCache.load(bob.root / ".dsg" / HashCache.FILE)
    for entry in manifest:
        st = os.lstat(bob.root / entry.path)
        assert st.st_mtime_ns == entry.mtime, entry.path
        assert cache.lookup(entry.path, stat_key(st)) == entry.hash, entry.path
    assert _temps(bob.root) == []
    assert bob.status().plan.is_noop


def _object(r, path: str) -> Path:
    entry = r.repo.manifest(r.repo.head()).get(path)
    h = entry.hash_hex
    objects = [p for p in Path(r.config.repository.mountpoint).rglob(f"objects/{h[:2]}/{h[2:]}")]
    assert len(objects) == 1, objects
    return objects[0]


def test_a_damaged_object_stops_the_clone_and_the_next_run_finishes(make_researcher) -> None:
    alice = make_researcher("alice")
    _fill(alice, 120, big=0)
    alice.init()
    victim = "task1/input/d3/f0052.csv"
    obj = _object(alice, victim)
    good = obj.read_bytes()
    obj.chmod(0o644)
    obj.write_bytes(bytes(b ^ 0xFF for b in good))  # same size, other bytes
    bob = make_researcher("bob")
    with pytest.raises(IntegrityError, match=r"f0052\.csv"):
        bob.clone()
    assert _temps(bob.root) == []
    assert not (bob.root / victim).exists()
    assert not bob.ws.has_base
    obj.write_bytes(good)
    bob.clone()  # the interrupted clone, run again
    assert tree_content(bob.root) == tree_content(alice.root)


def test_a_full_disk_is_named_and_the_next_run_finishes(make_researcher, tmp_path: Path) -> None:
    """A real full filesystem: bob's working copy is on a 2 MiB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a real full disk) needs root")
    alice = make_researcher("alice")
    for i in range(60):  # 3.6 MiB of small files, queued to the writers (over 2 MiB)
        alice.write(f"task{i % 3}/input/d{i % 7}/s{i:03d}.bin", os.urandom(60_000))
    alice.init()
    bob = make_researcher("bob")
    mnt = bob.root.parent
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        bob.root.mkdir()
        (bob.root / ".dsgconfig.yml").write_text(bob.config.to_yaml())
        proc = bob.cli("clone", "--json")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["error"]["kind"] == "local_io", doc
        assert "No space left" in doc["error"]["message"], doc
        assert "free some space" in doc["error"]["hint"], doc
        assert "Traceback" not in proc.stderr
        assert _temps(bob.root) == []
        head = alice.repo.head()
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        proc = bob.cli("clone", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert tree_content(bob.root) == tree_content(alice.root)
        assert alice.repo.head() == head  # bob's runs added nothing upstream
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
