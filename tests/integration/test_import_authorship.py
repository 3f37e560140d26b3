"""`dsg import` of the real dsg 0.4.4 repository with two users
(/work/shared/fixtures/dsg044-two-users): each snapshot's author, message and date come from
the snapshot tree's own .dsg/last-sync.json, not from the sync-messages.json that 0.4.4
corrupts when two people sync; every disagreement is in the plan; log and blame show the
original dates, with the import time recorded beside them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dsg.core.manifest import SnapshotRecord
from tests.helpers import DSG

FIXTURE = Path(os.environ.get("DSG_FIXTURES", "/work/shared/fixtures")) / "dsg044-two-users"
pytestmark = pytest.mark.skipif(
    not (FIXTURE / "repo/.dsg/last-sync.json").is_file(),
    reason=f"the dsg 0.4.4 fixture is not at {FIXTURE} (set DSG_FIXTURES)",
)
# What the snapshot trees say (snapshots/sN/.dsg/last-sync.json), in UTC.
TRUE = {
    "s1": ("ana@hrdag.org", "2026-12-06T16:18:12Z"),
    "s2": ("ben@hrdag.org", "2026-12-06T16:18:21Z"),
    "s3": ("ana@hrdag.org", "2026-12-06T16:18:22Z"),
}


def dsg(*args: str, cwd: Path, cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DSG, *args],
        cwd=cwd,
        env={**os.environ, "DSG_CONFIG_HOME": str(cfg)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def js(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.stdout.count("\n") == 1, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Path]:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "dsg.yml").write_text("user_name: Admin\nuser_id: admin@hrdag.org\n")
    (tmp_path / "repos").mkdir()
    (tmp_path / "work").mkdir()
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".dsgconfig.yml").write_text(
        f"name: p44\nrepository: {{type: posix, host: localhost, mountpoint: {tmp_path}/repos}}\n"
    )
    return {"cfg": cfg, "repos": tmp_path / "repos", "work": tmp_path / "work", "clone": clone}


def run_import(env: dict[str, Path], *extra: str) -> subprocess.CompletedProcess[str]:
    return dsg(
        "import",
        str(FIXTURE / "repo"),
        "--snapshots-dir",
        str(FIXTURE / "snapshots"),
        "--repo-type",
        "posix",
        "--repo-path",
        str(env["repos"]),
        "--repo-name",
        "p44",
        *extra,
        cwd=env["work"],
        cfg=env["cfg"],
    )


def test_plan_takes_authors_from_the_trees_and_reports_every_disagreement(
    env: dict[str, Path],
) -> None:
    for extra in ((), ("--apply",)):
        doc = js(run_import(env, "--json", *extra))
        got = {s["id"]: (s["author"], s["original_date"]) for s in doc["snapshots"]}
        assert got == TRUE, extra
        assert {s["metadata_from"] for s in doc["snapshots"]} == {"tree"}
        dis = {(d["snapshot"], d["field"]): d for d in doc["metadata_disagreements"]}
        assert set(dis) == {("s2", "created_by"), ("s2", "entry_count"), ("s2", "entries_hash")}
        assert dis[("s2", "created_by")]["source"] == "sync-messages.json"
        assert dis[("s2", "created_by")]["other_value"] == "ana@hrdag.org"
        assert dis[("s2", "created_by")]["value"] == "ben@hrdag.org"
        assert dis[("s2", "entry_count")]["other_value"] == 7
        warn = [p for p in doc["problems"] if "sync-messages.json disagrees" in p["message"]]
        assert [(p["snapshot"], p["blocking"]) for p in warn] == [("s2", False)]
        assert "ben@hrdag.org" in warn[0]["message"]
    text = run_import(env)  # the target exists now: the plan still reads, then refuses
    assert text.returncode == 1


def test_human_plan_shows_the_cross_check(env: dict[str, Path]) -> None:
    proc = run_import(env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "metadata cross-check: 3 disagreement(s)" in out
    assert "s2     created_by        sync-messages.json: ana@hrdag.org" in out
    assert "imported (tree): ben@hrdag.org" in out
    assert "dated 2026-12-06T16:18:21Z; author and message from tree" in out


def test_log_and_blame_show_the_true_author_and_original_date(env: dict[str, Path]) -> None:
    proc = run_import(env, "--apply", "--json")
    assert proc.returncode == 0, proc.stderr
    clone, cfg = env["clone"], env["cfg"]
    recs = {r["id"]: r for r in js(dsg("log", "--json", cwd=clone, cfg=cfg))["snapshots"]}
    assert {k: (r["author"], r["created_at"]) for k, r in recs.items()} == TRUE
    for r in recs.values():
        assert r["imported_at"] and r["imported_at"] > r["created_at"]
    text = dsg("log", cwd=clone, cfg=cfg).stdout
    assert f"s2     2026-12-06T16:18:21Z (imported {recs['s2']['imported_at']})  ben@hrdag.org" in (
        text
    )
    blame = js(dsg("blame", "task1/input/f2.csv", "--json", cwd=clone, cfg=cfg))
    assert [(v["snapshot"], v["event"], v["user"], v["time"]) for v in blame["versions"]] == [
        ("s2", "modify", "ben@hrdag.org", TRUE["s2"][1]),
        ("s1", "add", "ana@hrdag.org", TRUE["s1"][1]),
    ]
    f6 = js(dsg("blame", "task1/input/f6.csv", "--json", cwd=clone, cfg=cfg))
    assert [(v["snapshot"], v["user"]) for v in f6["versions"]] == [("s2", "ben@hrdag.org")]
    chain = dsg("validate-chain", cwd=clone, cfg=cfg)
    assert chain.returncode == 0 and "history intact: 3 snapshot(s)" in chain.stdout, chain.stdout
    # The chain covers imported_at: changing it is detected.
    rec_path = env["repos"] / "p44/snapshots/s2/.dsg/snapshot.json"
    assert rec_path.is_file()
    os.chmod(rec_path.parent, 0o755)
    os.chmod(rec_path, 0o644)
    d = json.loads(rec_path.read_text())
    d["imported_at"] = "2030-01-01T00:00:00Z"
    rec_path.write_text(json.dumps(d))
    bad = dsg("validate-chain", cwd=clone, cfg=cfg)
    assert bad.returncode != 0 and "s2" in bad.stdout + bad.stderr


def test_records_without_imported_at_keep_their_form_and_chain() -> None:
    """Existing records (no imported_at) serialise and chain exactly as before."""
    fields = ("p", "s1", None, "a@b.c", "m", "2024-03-01T00:00:00Z", "d" * 64)
    rec = SnapshotRecord(
        id="s1",
        parent=None,
        author="a@b.c",
        author_name="A",
        message="m",
        created_at="2024-03-01T00:00:00Z",
        manifest_digest="d" * 64,
        entry_count=0,
        total_bytes=0,
        tx="tx",
        chain=SnapshotRecord.compute_chain(*fields),
    )
    assert "imported_at" not in rec.to_dict()
    assert rec.expected_chain("p") == rec.chain
    again = SnapshotRecord.from_bytes(rec.to_bytes())
    assert again == rec
    imported = SnapshotRecord.compute_chain(*fields, imported_at="2026-12-06T00:00:00Z")
    assert imported != rec.chain
    # an imported_at is not interchangeable with a login of the same text
    assert imported != SnapshotRecord.compute_chain(*fields, login="2026-12-06T00:00:00Z")


def test_over_ssh_the_plan_says_the_dates_stay_in_the_messages(tmp_path: Path) -> None:
    """The agent dates every commit itself (a client may not backdate a snapshot): an
    import into a repository reached over SSH keeps the original dates only in the
    messages, and the plan says so; on this host they become the records' dates."""
    from dsg.admin import migrate
    from dsg.backends.posix import PosixRepository
    from dsg.workcopy.config import ProjectConfig, RepositoryConfig

    src = migrate.read_dsg(FIXTURE / "repo", FIXTURE / "snapshots")
    repo = PosixRepository(tmp_path / "p44", "p44")  # only its location is read by a plan
    for host, kept in (("localhost", True), ("repo.example.org", False)):
        config = ProjectConfig(
            name="p44",
            repository=RepositoryConfig(type="posix", host=host, mountpoint=str(tmp_path)),
        )
        rep = migrate.plan_import(src, config, repo, migrate.UserMap())
        assert [p.created_at for p in rep.snapshots] == (
            [TRUE[k][1] for k in ("s1", "s2", "s3")] if kept else ["", "", ""]
        )
        ssh_warnings = [p for p in rep.problems if "over SSH" in p.message]
        assert len(ssh_warnings) == (0 if kept else 1)
        assert all(not p.blocking for p in ssh_warnings)
    assert not repo.exists()
