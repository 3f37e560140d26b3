"""blame, validate-*, clean through the real `dsg` command, on every backend; tamper tests
on the posix backend (whose repository is a plain directory we can damage)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from dsg.core.manifest import Entry, Manifest
from dsg.fs.durable import read_manifest
from dsg.fs.files import hash_bytes
from tests.helpers import Researcher, stored_file, tree_content

A = "task1/input/a.csv"
B = "task1/input/b.csv"
C = "task1/input/c.csv"
R = "task1/output/result.txt"


def js(proc) -> dict:
    """The one JSON document a --json command prints."""
    assert proc.stdout.count("\n") == 1, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def history_of_three(
    team: tuple[Researcher, Researcher], make_researcher: Callable[..., Researcher]
) -> tuple[Researcher, Researcher, Researcher]:
    """s1 alice init; s2 bob edits a; s3 carol adds c; s4 alice deletes a; s5 bob edits b;
    s6 carol puts a back with its s1 content; s7 alice edits the result (unrelated)."""
    alice, bob = team
    carol = make_researcher("carol")
    bob.write(A, "a,1\na,2\n")
    assert bob.sync(message="bob: more a").committed.id == "s2"
    carol.clone()
    carol.write(C, "c,3\n")
    assert carol.sync(message="carol: add c").committed.id == "s3"
    alice.sync()
    alice.delete(A)
    assert alice.sync(message="alice: drop a").committed.id == "s4"
    bob.sync()
    bob.write(B, "b,2\nb,3\n")
    assert bob.sync(message="bob: more b").committed.id == "s5"
    carol.sync()
    carol.write(A, "a,1\n")  # exactly the s1 content
    assert carol.sync(message="carol: a is back").committed.id == "s6"
    alice.sync()
    alice.write(R, "r2\n")
    assert alice.sync(message="alice: new result").committed.id == "s7"
    return alice, bob, carol


def test_blame_three_users(
    team: tuple[Researcher, Researcher], make_researcher: Callable[..., Researcher]
) -> None:
    alice, bob, carol = history_of_three(team, make_researcher)
    proc = bob.cli("blame", A, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = js(proc)
    assert doc["ok"] and doc["path"] == A and doc["head"] == "s7"
    got = [(v["snapshot"], v["event"], v["user"], v["message"]) for v in doc["versions"]]
    assert got == [
        ("s6", "restore", "carol@hrdag.org", "carol: a is back"),
        ("s4", "delete", "alice@hrdag.org", "alice: drop a"),
        ("s2", "modify", "bob@hrdag.org", "bob: more a"),
        ("s1", "add", "alice@hrdag.org", "init"),
    ]
    v = doc["versions"]
    assert v[0]["hash"] == v[3]["hash"] == hash_bytes(b"a,1\n").hex()
    assert v[2]["hash"] == hash_bytes(b"a,1\na,2\n").hex() and v[1]["hash"] is None
    with closing(alice.repo) as repo:
        times = {r.id: r.created_at for r in repo.history()}
    assert [x["time"] for x in v] == [times["s6"], times["s4"], times["s2"], times["s1"]]
    # fewer manifests than snapshots: the unchanged span s6..s7 is skipped
    assert doc["manifests_read"] < 7

    # attribution: alice committed the head (s7) and bob s5, but they did not change these
    doc = js(alice.cli("blame", B, "--json"))
    assert [(x["snapshot"], x["event"], x["user"]) for x in doc["versions"]] == [
        ("s5", "modify", "bob@hrdag.org"),
        ("s1", "add", "alice@hrdag.org"),
    ]
    doc = js(alice.cli("blame", C, "--json"))
    assert [(x["snapshot"], x["event"], x["user"]) for x in doc["versions"]] == [
        ("s3", "add", "carol@hrdag.org")
    ]

    # human output: a table, newest first; paths relative to the cwd work too
    proc = carol.cli("blame", "a.csv", cwd=carol.root / "task1" / "input")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    rows = [ln.split()[:3] for ln in lines[2:]]
    assert rows == [
        ["s6", "restore", "carol@hrdag.org"],
        ["s4", "delete", "alice@hrdag.org"],
        ["s2", "modify", "bob@hrdag.org"],
        ["s1", "add", "alice@hrdag.org"],
    ]

    # a path that never existed: exit 1
    proc = alice.cli("blame", "task1/input/nope.csv", "--json")
    assert proc.returncode == 1 and not js(proc)["ok"]


def test_validate_snapshot_and_chain_pass(
    team: tuple[Researcher, Researcher], make_researcher: Callable[..., Researcher]
) -> None:
    alice, _, carol = history_of_three(team, make_researcher)
    doc = js(alice.cli("validate-chain", "--json"))
    assert doc["ok"] and doc["valid"] and doc["snapshots_checked"] == 7
    for snap in ("s1", "s4", "s7"):
        proc = carol.cli("validate-snapshot", "--snapshot", snap, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = js(proc)
        assert doc["status"] == "complete" and doc["valid"]
        assert doc["files_verified"] == doc["files_total"] > 0
        assert doc["bytes_verified"] == doc["bytes_total"]
    proc = carol.cli("validate-snapshot")  # head, human output
    assert proc.returncode == 0 and "s7: complete" in proc.stdout and "intact" in proc.stdout
    proc = carol.cli("validate-snapshot", "--snapshot", "s99")
    assert proc.returncode == 1


def test_validate_file(team: tuple[Researcher, Researcher]) -> None:
    _alice, bob = team
    assert bob.cli("validate-file", A).returncode == 0
    doc = js(bob.cli("validate-file", A, "--snapshot", "s1", "--json"))
    assert doc["match"] and doc["repository"] == doc["expected"] == doc["local"]
    bob.write(A, "a,changed\n")
    proc = bob.cli("validate-file", A, "--json")
    assert proc.returncode == 1
    err = js(proc)["error"]
    assert "mismatch" in err["message"]
    assert err["details"]["local"]["hash"] == hash_bytes(b"a,changed\n").hex()
    assert err["details"]["expected"]["hash"] == hash_bytes(b"a,1\n").hex()
    bob.sync(message="change a")
    assert bob.cli("validate-file", A).returncode == 0  # matches the new base (s2)
    assert bob.cli("validate-file", A, "--snapshot", "s1").returncode == 1
    assert bob.cli("validate-file", A, "--snapshot", "s2").returncode == 0
    bob.delete(A)
    proc = bob.cli("validate-file", A)
    assert proc.returncode == 1 and "missing" in proc.stderr
    assert bob.cli("validate-file", "task1/input/none.csv").returncode == 1
    assert bob.cli("validate-file", A, "--snapshot", "x").returncode == 1  # no tag x
    assert bob.cli("validate-file", A, "--snapshot", "not a ref").returncode == 2


def test_validate_config(team: tuple[Researcher, Researcher]) -> None:
    alice, _ = team
    doc = js(alice.cli("validate-config", "--json"))
    assert doc["ok"] and doc["valid"] and doc["user_id"] == "alice@hrdag.org"
    cfg = alice.root / ".dsgconfig.yml"
    cfg.write_text(cfg.read_text() + "colour: blue\n")
    proc = alice.cli("validate-config", "--json")
    assert proc.returncode == 1
    problems = js(proc)["error"]["details"]["problems"]
    assert any("colour" in p["message"] and "unknown key" in p["message"] for p in problems)
    proc = alice.cli("validate-config", env={"DSG_CONFIG_HOME": str(alice.root / "nowhere")})
    # HOME's config may exist on a developer machine; only the project error is certain
    assert proc.returncode == 1 and "colour" in proc.stderr
    (alice.cfg_home / "dsg.yml").write_text("user_name: A\nuser_id: not-an-email\n")
    cfg.write_text(alice.config.to_yaml())
    proc = alice.cli("validate-config", "--json")
    assert proc.returncode == 1
    assert any("email" in p["message"] for p in js(proc)["error"]["details"]["problems"])


# --- tampering (posix: the repository is a directory) -------------------------------------


def writable(p: Path) -> Path:
    os.chmod(p.parent, 0o755)
    os.chmod(p, 0o644)
    return p


@pytest.mark.parametrize("backend", ["posix"])
def test_flipped_byte_is_found(team: tuple[Researcher, Researcher]) -> None:
    alice, bob = team
    bob.write(A, "a,1\na,2\n")
    bob.sync(message="s2")
    assert js(alice.cli("validate-snapshot", "--json"))["valid"]
    with closing(alice.repo) as repo:
        target = writable(stored_file(repo, "s2", A))
    data = bytearray(target.read_bytes())
    data[2] ^= 0x01
    target.write_bytes(bytes(data))
    proc = alice.cli("validate-snapshot", "--json")
    assert proc.returncode == 1
    err = js(proc)["error"]
    assert A in err["message"]
    [m] = err["details"]["mismatches"]
    assert m["path"] == A and m["problem"] == "content differs"
    assert m["expected"]["hash"] == hash_bytes(b"a,1\na,2\n").hex()
    assert m["got"]["hash"] == hash_bytes(bytes(data)).hex()
    assert err["details"]["files_verified"] == err["details"]["files_total"] == 3
    proc = alice.cli("validate-snapshot")  # human report names path, expected and got
    assert proc.returncode == 1
    assert A in proc.stderr and hash_bytes(bytes(data)).hex() in proc.stderr
    # a truncated file: size differs too
    target.write_bytes(b"a")
    m = js(alice.cli("validate-snapshot", "--json"))["error"]["details"]["mismatches"][0]
    assert m["problem"] == "size and content differ" and m["got"]["size"] == 1
    # a missing file is reported, not a crash
    target.unlink()
    proc = alice.cli("validate-snapshot", "--json")
    assert proc.returncode == 1
    [m] = js(proc)["error"]["details"]["mismatches"]
    assert m["path"] == A and m["problem"].startswith("unreadable")
    assert alice.cli("validate-chain").returncode == 0  # the history itself is intact


@pytest.mark.parametrize("backend", ["posix"])
def test_edited_manifest_breaks_the_chain(team: tuple[Researcher, Researcher]) -> None:
    alice, bob = team
    bob.write(A, "a,1\na,2\n")
    bob.sync(message="s2")
    bob.write(B, "b,9\n")
    bob.sync(message="s3")
    assert alice.cli("validate-chain").returncode == 0
    with closing(alice.repo) as repo:
        mpath = writable(repo.snapshot_path("s2") / ".dsg" / "manifest.gz")
    m = read_manifest(mpath)
    forged = [
        Entry(e.path, e.size, e.mtime, hash_bytes(b"forged"), None, e.snap, e.user)
        if e.path == A
        else e
        for e in m
    ]
    mpath.write_bytes(Manifest.from_entries(forged, "s2").to_bytes())  # self-consistent
    assert read_manifest(mpath).get(A).hash == hash_bytes(b"forged")
    proc = alice.cli("validate-chain", "--json")
    assert proc.returncode == 1
    err = js(proc)["error"]
    assert err["details"]["first_broken"] == "s2"
    assert [(p["snapshot"], p["check"]) for p in err["details"]["problems"]] == [("s2", "digest")]
    proc = alice.cli("validate-chain")
    assert proc.returncode == 1 and "s2" in proc.stderr and "digest" in proc.stderr
    # validate-snapshot sees both the digest and the file that no longer matches the entry
    proc = alice.cli("validate-snapshot", "--snapshot", "s2", "--json")
    assert proc.returncode == 1
    details = js(proc)["error"]["details"]
    assert details["digest_problem"] and [x["path"] for x in details["mismatches"]] == [A]


@pytest.mark.parametrize("backend", ["posix"])
def test_broken_parent_link(team: tuple[Researcher, Researcher]) -> None:
    alice, bob = team
    for i in range(2, 5):
        bob.write(A, f"a,{i}\n")
        bob.sync(message=f"s{i}")
    with closing(alice.repo) as repo:
        rpath = writable(repo.snapshot_path("s3") / ".dsg" / "snapshot.json")
    d = orjson.loads(rpath.read_bytes())
    d["parent"] = "s1"
    rpath.write_bytes(orjson.dumps(d))
    proc = alice.cli("validate-chain", "--json")
    assert proc.returncode == 1
    err = js(proc)["error"]
    assert err["details"]["first_broken"] == "s3"
    assert err["message"].startswith("history is broken at s3 (parent)")
    checks = [(p["snapshot"], p["check"]) for p in err["details"]["problems"]]
    assert checks == [("s3", "parent"), ("s3", "chain")]
    # an edited message (parent put back) is caught by the chain hash alone
    d["parent"], d["message"] = "s2", "nothing to see"
    rpath.write_bytes(orjson.dumps(d))
    err = js(alice.cli("validate-chain", "--json"))["error"]
    assert [(p["snapshot"], p["check"]) for p in err["details"]["problems"]] == [("s3", "chain")]


@pytest.mark.parametrize("backend", ["posix"])
def test_rewritten_history_differs_from_the_working_copy(
    team: tuple[Researcher, Researcher],
) -> None:
    """A consistently re-chained history still differs from the record alice holds."""
    alice, _bob = team
    with closing(alice.repo) as repo:
        rpath = writable(repo.snapshot_path("s1") / ".dsg" / "snapshot.json")
        rec = repo.record("s1")
    d = {**rec.to_dict(), "message": "rewritten"}
    d["chain"] = type(rec)(**{k: v for k, v in d.items() if k != "format"}).expected_chain(None)
    rpath.write_bytes(orjson.dumps(d))
    err = js(alice.cli("validate-chain", "--json"))["error"]
    assert [(p["snapshot"], p["check"]) for p in err["details"]["problems"]] == [("s1", "base")]


def test_time_boxed_validation_resumes(team: tuple[Researcher, Researcher]) -> None:
    alice, bob = team
    for i in range(6):
        bob.write(f"task1/input/more{i}.csv", f"{i}\n" * (i + 1))
    bob.sync(message="more")
    progress = alice.root / ".dsg" / "validate-s2.json"
    doc = js(alice.cli("validate-snapshot", "--max-duration", "0", "--json"))
    assert doc["ok"] and doc["status"] == "partial (resumable)" and not doc["complete"]
    assert doc["files_verified"] == 1 and doc["files_total"] == 9
    saved = json.loads(progress.read_text())
    assert saved["snapshot"] == "s2" and saved["files_verified"] == 1
    assert saved["verified_through"] == doc["verified_through"]
    doc = js(alice.cli("validate-snapshot", "--max-duration", "0", "--json"))
    assert doc["resumed_from"] == 1 and doc["files_verified"] == 2  # progress every run
    proc = alice.cli("validate-snapshot", "--max-duration", "0")
    assert proc.returncode == 0 and "partial (resumable)" in proc.stdout
    doc = js(alice.cli("validate-snapshot", "--json"))
    assert doc["status"] == "complete" and doc["resumed_from"] == 3
    assert doc["files_verified"] == 9 and doc["bytes_verified"] == doc["bytes_total"]
    assert not progress.exists()
    # --restart ignores saved progress
    js(alice.cli("validate-snapshot", "--max-duration", "0", "--json"))
    doc = js(alice.cli("validate-snapshot", "--restart", "--json"))
    assert doc["resumed_from"] == 0 and doc["complete"]


@pytest.mark.parametrize("backend", ["posix"])
def test_resumed_run_still_reports_an_earlier_mismatch(
    team: tuple[Researcher, Researcher],
) -> None:
    alice, _ = team
    with closing(alice.repo) as repo:
        first = writable(stored_file(repo, "s1", A))  # the first path in order
    first.write_bytes(b"A,1\n")
    proc = alice.cli("validate-snapshot", "--max-duration", "0", "--json")
    assert proc.returncode == 1
    details = js(proc)["error"]["details"]
    assert details["status"] == "partial (resumable)" and details["files_verified"] == 1
    proc = alice.cli("validate-snapshot", "--json")
    assert proc.returncode == 1
    details = js(proc)["error"]["details"]
    assert details["complete"] and details["resumed_from"] == 1
    assert [m["path"] for m in details["mismatches"]] == [A]


def test_clean(team: tuple[Researcher, Researcher]) -> None:
    alice, _bob = team
    before = tree_content(alice.root)
    alice.write("task1/input/a.dsg-conflict-20261129T201500Z-bob.csv", "theirs\n")
    alice.write("task1/output/.result.txt.dsg-tmp-0123abcd", "partial")
    alice.write("task1/src/a.dsg-conflict-20261129T201500Z-bob.R", "not in a data dir\n")
    alice.write("task1/input/notes.dsg-conflict-soon.txt", "not a conflict-copy name\n")
    js(alice.cli("validate-snapshot", "--max-duration", "0", "--json"))  # 3 files: partial
    assert (alice.root / ".dsg/validate-s1.json").exists()
    mnt = alice.root / ".dsg" / "mnt"
    mnt.mkdir()
    os.symlink(alice.root / "gone", mnt / "s9")  # dangling
    (mnt / "s8").mkdir()  # empty, not mounted
    assert alice.cli("snapmount", "--snapshot", "s1").returncode == 0  # live: kept
    (alice.root / ".dsg/.base.json.0123456789abcdef.tmp").write_text("a crash's leftover")
    (alice.root / ".dsg/log/.dsg.jsonl.fedcba9876543210.tmp").write_text("")
    (alice.root / ".dsg/.base.json.tmp").write_text("not dsg's temp name: kept")
    expected = {
        (".dsg/.base.json.0123456789abcdef.tmp", "state-temp"),
        (".dsg/log/.dsg.jsonl.fedcba9876543210.tmp", "state-temp"),
        ("task1/input/a.dsg-conflict-20261129T201500Z-bob.csv", "conflict-copy"),
        ("task1/output/.result.txt.dsg-tmp-0123abcd", "temp"),
        (".dsg/validate-s1.json", "validate-progress"),
        (".dsg/mnt/s8", "stale-mount"),
        (".dsg/mnt/s9", "stale-mount"),
    }

    doc = js(alice.cli("clean", "--json"))
    assert doc["dry_run"] and {(i["path"], i["kind"]) for i in doc["items"]} == expected
    assert not any(i["removed"] for i in doc["items"])
    assert all(os.path.lexists(alice.root / p) for p, _ in expected)
    proc = alice.cli("clean")
    assert proc.returncode == 0 and "would remove" in proc.stdout and "--no-dry-run" in proc.stdout

    doc = js(alice.cli("clean", "--no-dry-run", "--json"))
    assert not doc["dry_run"] and all(i["removed"] for i in doc["items"])
    assert {(i["path"], i["kind"]) for i in doc["items"]} == expected
    assert not any(os.path.lexists(alice.root / p) for p, _ in expected)
    assert (mnt / "s1" / A).is_file()  # the live view is kept (a link, or a mounted clone)
    assert (alice.root / ".dsg/.base.json.tmp").exists()
    assert alice.read("task1/src/a.dsg-conflict-20261129T201500Z-bob.R")
    assert alice.read("task1/input/notes.dsg-conflict-soon.txt")
    alice.delete("task1/input/notes.dsg-conflict-soon.txt")
    assert tree_content(alice.root) == before  # tracked data untouched
    assert set(alice.actions().values()) == {"none"}
    assert js(alice.cli("clean", "--json"))["items"] == []
    assert alice.cli("snapumount", str(mnt / "s1")).returncode == 0
    assert not os.path.lexists(mnt / "s1")


@pytest.mark.parametrize("backend", ["posix"])
def test_blame_survives_a_looping_parent_link(team: tuple[Researcher, Researcher]) -> None:
    alice, bob = team
    bob.write(A, "a,2\n")
    bob.sync(message="s2")
    with closing(alice.repo) as repo:
        rpath = writable(repo.snapshot_path("s2") / ".dsg" / "snapshot.json")
    d = orjson.loads(rpath.read_bytes())
    d["parent"] = "s2"  # points at itself
    rpath.write_bytes(orjson.dumps(d))
    proc = alice.cli("blame", A, "--json")
    assert proc.returncode == 0
    assert js(proc)["versions"][0]["snapshot"] == "s2"
    err = js(alice.cli("validate-chain", "--json"))["error"]
    assert err["details"]["first_broken"] == "s2"
