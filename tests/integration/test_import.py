"""`dsg import`: original-dsg and snap repositories into a new dsg repository, through the
real command, on the posix backend. Dry run writes nothing; apply keeps every snapshot's
content, message and author; the source is never modified."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import unicodedata
from pathlib import Path

import orjson
import pytest
import xxhash

from dsg.backends.posix import PosixRepository
from dsg.core.errors import IntegrityError
from tests.helpers import DSG, manifest_content, tree_content

NFD_NAME = unicodedata.normalize("NFD", "café.csv")
NFC_NAME = unicodedata.normalize("NFC", "café.csv")
assert NFD_NAME != NFC_NAME


# --- helpers --------------------------------------------------------------------------------


def write(path: Path, data: str, mtime: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def tree_fingerprint(root: Path) -> str:
    """Everything under `root` (hidden files too): names, kinds, contents, link targets,
    mtimes and modes. Equal before/after = the command did not touch the tree."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        dirnames.sort()
        for name in sorted(
            filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        ):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            h.update(os.path.relpath(full, os.fsencode(root)) + b"\0")
            h.update(f"{st.st_mode}:{st.st_mtime_ns}:{st.st_size}\0".encode())
            if os.path.islink(full):
                h.update(os.readlink(full) + b"\0")
            else:
                with open(full, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
        for d in dirnames:
            st = os.lstat(os.path.join(dirpath, d))
            h.update(os.path.join(dirpath, d) + f":{st.st_mode}\0".encode())
    return h.hexdigest()


def nfc_content(root: Path) -> dict[str, str]:
    return {unicodedata.normalize("NFC", k): v for k, v in tree_content(root).items()}


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
    repos = tmp_path / "repos"
    repos.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    umap = tmp_path / "users.yml"
    umap.write_text("pball: pball@hrdag.org\nscott: {email: scott@hrdag.org, name: Scott W}\n")
    return {"cfg": cfg, "repos": repos, "work": work, "users": umap, "tmp": tmp_path}


def target(env: dict[str, Path], name: str = "proj") -> list[str]:
    return ["--repo-type", "posix", "--repo-path", str(env["repos"]), "--repo-name", name]


def run_import(env: dict[str, Path], source: Path, *extra: str, name: str = "proj"):
    return dsg(
        "import",
        str(source),
        *target(env, name),
        "--user-map",
        str(env["users"]),
        "--json",
        *extra,
        cwd=env["work"],
        cfg=env["cfg"],
    )


# --- source builders ----------------------------------------------------------------------------


def build_snap(root: Path) -> Path:
    """A snap project: s1..s3 as full trees, unchanged files hardlinked (rsync --link-dest),
    HEAD -> s3, push.log, tag v1.0 -> s2, an NFD file name from s2 on, and code outside the
    data dirs."""
    proj = root / "PROJ"
    s1 = proj / "s1"
    write(s1 / "task1/input/a.csv", "a,1\n", 1_600_000_000)
    write(s1 / "task1/input/b.csv", "b,1\n", 1_600_000_001)
    write(s1 / "task1/src/code.R", "print(1)\n")  # not a data dir
    (s1 / "task1/output").mkdir(parents=True)
    os.symlink("../input/a.csv", s1 / "task1/output/a-link.csv")
    s2 = proj / "s2"
    shutil.copytree(s1, s2, symlinks=True, copy_function=os.link)
    (s2 / "task1/input/b.csv").unlink()
    write(s2 / "task1/input/b.csv", "b,2\n", 1_600_000_100)
    write(s2 / "task1/input" / NFD_NAME, "café\n", 1_600_000_101)
    s3 = proj / "s3"
    shutil.copytree(s2, s3, symlinks=True, copy_function=os.link)
    (s3 / "task1/input/a.csv").unlink()
    (s3 / "task1/output/a-link.csv").unlink()
    write(s3 / "task1/output/result.txt", "r\n", 1_600_000_200)
    os.symlink("s3", proj / "HEAD")
    os.symlink("s2", proj / "v1.0")
    (proj / "push.log").write_text(
        "s1 | pball | 2023-10-15 10:00:00 UTC | first data\n"
        "s2 | scott | 2023-10-16 11:30:00 UTC | new b, cafe\n"
        "s3 | carol | 2023-10-17 12:00:00 UTC | results | with a pipe\n"
    )
    return proj


def _h64(p: Path) -> str:
    return xxhash.xxh3_64(p.read_bytes()).hexdigest()


def _old_manifest(tree: Path, sid: str, prev: str | None, msg: str, user: str) -> dict:
    entries = {}
    for rel in sorted(tree_content(tree, ("input", "output", "frozen", "src"))):
        p = tree / rel
        if p.is_symlink():
            entries[rel] = {"type": "link", "path": rel, "user": user, "reference": os.readlink(p)}
        else:
            entries[rel] = {
                "type": "file",
                "path": rel,
                "user": user,
                "filesize": p.stat().st_size,
                "mtime": "2025-06-01T10:00:00-07:00",
                "hash": _h64(p),
            }
    meta = {
        "manifest_version": "0.4.4",
        "snapshot_id": sid,
        "created_at": {"s1": "2025-06-01T10:00:00-07:00", "s2": "2025-06-02T09:00:00-07:00"}.get(
            sid, "2025-06-03T08:15:00-07:00"
        ),
        "entry_count": len(entries),
        "created_by": user,
        "snapshot_message": msg,
        "snapshot_previous": prev,
        "snapshot_notes": "sync",
        "project_config": None,
    }
    return {"entries": entries, "metadata": meta}


def build_dsg(root: Path, archive_kind: str = "gz") -> tuple[Path, Path]:
    """An original dsg repository: s1, s2 as plain snapshot directories, s3 = the live tree;
    last-sync.json (s3), sync-messages.json, archived s1 (gz or lz4) and s2 (plain json)."""
    repo = root / "oldrepo"
    snaps = root / "oldsnaps"
    s1 = snaps / "s1"
    write(s1 / "task1/input/a.csv", "a,1\n", 1_700_000_000)
    write(s1 / "task1/src/code.py", "x = 1\n")
    (s1 / "task1/output").mkdir(parents=True)
    os.symlink("../input/a.csv", s1 / "task1/output/l.csv")
    s2 = snaps / "s2"
    shutil.copytree(s1, s2, symlinks=True)
    write(s2 / "task1/input/b.csv", "b,1\n", 1_700_000_100)
    shutil.copytree(s2, repo, symlinks=True)  # the live tree = s3
    write(repo / "task1/input/a.csv", "a,3\n", 1_700_000_200)
    m1 = _old_manifest(s1, "s1", None, "Init operation", "alice@hrdag.org")
    m2 = _old_manifest(s2, "s2", "s1", "Sync operation", "bob@hrdag.org")
    m3 = _old_manifest(repo, "s3", "s2", "Sync operation", "alice@hrdag.org")
    meta = repo / ".dsg"
    (meta / "archive").mkdir(parents=True)
    (meta / "last-sync.json").write_bytes(orjson.dumps(m3))
    (meta / "sync-messages.json").write_bytes(
        orjson.dumps(
            {
                "metadata_version": "0.4.4",
                "snapshots": {k: m["metadata"] for k, m in (("s1", m1), ("s2", m2), ("s3", m3))},
            }
        )
    )
    if archive_kind == "lz4":
        import lz4.frame  # type: ignore[import-not-found]

        (meta / "archive/s1-sync.json.lz4").write_bytes(lz4.frame.compress(orjson.dumps(m1)))
    else:
        (meta / "archive/s1-sync.json.gz").write_bytes(gzip.compress(orjson.dumps(m1)))
    (meta / "archive/s2-sync.json").write_bytes(orjson.dumps(m2))
    return repo, snaps


def make_project(env: dict[str, Path], name: str = "proj", where: str = "clone") -> Path:
    root = env["tmp"] / where
    root.mkdir()
    (root / ".dsgconfig.yml").write_text(
        f"name: {name}\nrepository:\n  type: posix\n  host: localhost\n"
        f"  mountpoint: {env['repos']}\n"
    )
    return root


# --- snap ----------------------------------------------------------------------------------


def test_snap_dry_run_writes_nothing_and_reports_the_plan(env: dict[str, Path]) -> None:
    proj = build_snap(env["tmp"] / "snaproot")
    before = tree_fingerprint(proj)
    proc = run_import(env, proj)
    assert proc.returncode == 0, proc.stderr
    doc = js(proc)
    assert doc["dry_run"] is True and doc["applied"] is False
    assert doc["source"]["kind"] == "snap" and doc["source"]["head"] == "s3"
    snaps = {s["id"]: s for s in doc["snapshots"]}
    assert list(snaps) == ["s1", "s2", "s3"]
    assert (snaps["s1"]["files"], snaps["s1"]["links"], snaps["s1"]["upload_files"]) == (2, 1, 2)
    assert snaps["s1"]["outside_data_dirs"] == 1  # task1/src/code.R
    assert (snaps["s2"]["upload_files"], snaps["s2"]["upload_bytes"]) == (
        2,
        4 + len("café\n".encode()),
    )
    assert (snaps["s3"]["upload_files"], snaps["s3"]["deletions"]) == (1, 2)
    assert snaps["s1"]["author"] == "pball@hrdag.org"
    assert snaps["s2"]["author_name"] == "Scott W"
    assert snaps["s3"]["author"] == "carol"  # not in the map: kept as given, and reported
    assert snaps["s3"]["message"] == (
        "[imported from snap s3, 2023-10-17T12:00:00Z] results | with a pipe"
    )
    assert doc["tags"] == [{"name": "v1.0", "snapshot": "s2"}]
    assert snaps["s2"]["tags"] == ["v1.0"]
    assert [
        (r["original"], r["nfc"], r["first_snapshot"], r["last_snapshot"])
        for r in doc["nfc_repairs"]
    ] == [(f"task1/input/{NFD_NAME}", f"task1/input/{NFC_NAME}", "s2", "s3")]
    assert any("carol" in p["message"] and not p["blocking"] for p in doc["problems"])
    assert doc["blocking"] == 0
    # Nothing written anywhere: source identical, no repository, nothing in the cwd.
    assert tree_fingerprint(proj) == before
    assert list(env["repos"].iterdir()) == []
    assert list(env["work"].iterdir()) == []

    text = dsg("import", str(proj), *target(env), cwd=env["work"], cfg=env["cfg"])
    assert text.returncode == 0, text.stderr
    assert "Dry run: nothing was written." in text.stdout
    assert "NFC repairs (1)" in text.stdout and "v1.0 -> s2" in text.stdout
    assert list(env["repos"].iterdir()) == []


def test_snap_apply_keeps_history_content_and_source(env: dict[str, Path]) -> None:
    proj = build_snap(env["tmp"] / "snaproot")
    before = tree_fingerprint(proj)
    proc = run_import(env, proj, "--apply")
    assert proc.returncode == 0, proc.stderr
    doc = js(proc)
    assert doc["applied"] is True and doc["verified"] == ["s1", "s2", "s3"]
    assert tree_fingerprint(proj) == before

    repo = PosixRepository(env["repos"] / "proj", "proj")
    assert repo.head() == "s3"
    for sid in ("s1", "s2", "s3"):
        assert manifest_content(repo.manifest(sid)) == nfc_content(proj / sid), sid
    assert {n: t["snapshot"] for n, t in repo.tags().items()} == {"v1.0": "s2"}
    m2 = repo.manifest("s2")
    assert m2.get(f"task1/input/{NFC_NAME}") is not None
    assert m2.get("task1/input/b.csv").mtime == 1_600_000_100 * 10**9  # mtime kept
    assert m2.get("task1/input/b.csv").user == "scott@hrdag.org"  # changed in s2
    assert m2.get("task1/input/a.csv").user == "pball@hrdag.org"  # carried from s1
    assert m2.get("task1/output/a-link.csv").target == "../input/a.csv"
    assert m2.get("task1/src/code.R") is None
    assert (repo.snapshot_path("s2") / "task1/output/a-link.csv").is_symlink()

    clone = make_project(env)
    log = dsg("log", "--json", cwd=clone, cfg=env["cfg"])
    recs = js(log)["snapshots"]
    assert [(r["id"], r["author"], r["author_name"]) for r in recs] == [
        ("s3", "carol", "carol"),
        ("s2", "scott@hrdag.org", "Scott W"),
        ("s1", "pball@hrdag.org", "pball"),
    ]
    assert recs[2]["message"] == "[imported from snap s1, 2023-10-15T10:00:00Z] first data"
    got = dsg("clone", "--json", cwd=clone, cfg=env["cfg"])
    assert got.returncode == 0, got.stderr
    assert tree_content(clone) == nfc_content(proj / "s3")
    assert (clone / f"task1/input/{NFC_NAME}").read_text() == "café\n"
    assert (clone / "task1/output/result.txt").stat().st_mtime_ns == 1_600_000_200 * 10**9
    st = dsg("status", "--json", cwd=clone, cfg=env["cfg"])
    assert st.returncode == 0, st.stderr
    chain = dsg("validate-chain", cwd=clone, cfg=env["cfg"])
    assert chain.returncode == 0 and "history intact: 3 snapshot(s)" in chain.stdout, chain.stdout
    # blame reproduces the source history: b.csv added by pball in s1, changed by scott in
    # s2; a.csv added in s1 and deleted in s3 (by carol)
    b = js(dsg("blame", "task1/input/b.csv", "--json", cwd=clone, cfg=env["cfg"]))
    assert [(v["snapshot"], v["event"], v["user"]) for v in b["versions"]] == [
        ("s2", "modify", "scott@hrdag.org"),
        ("s1", "add", "pball@hrdag.org"),
    ]
    a = js(dsg("blame", "task1/input/a.csv", "--json", cwd=clone, cfg=env["cfg"]))
    assert [(v["snapshot"], v["event"]) for v in a["versions"]] == [("s3", "delete"), ("s1", "add")]


# --- the original dsg -----------------------------------------------------------------------


def _check_dsg_import(env: dict[str, Path], repo_dir: Path, snaps: Path) -> dict:
    before = (tree_fingerprint(repo_dir), tree_fingerprint(snaps))
    dry = run_import(env, repo_dir, "--snapshots-dir", str(snaps))
    assert dry.returncode == 0, dry.stderr
    plan = js(dry)
    assert plan["source"]["kind"] == "dsg"
    assert [s["id"] for s in plan["snapshots"]] == ["s1", "s2", "s3"]
    assert [s["source_tree"] for s in plan["snapshots"]] == [
        str(snaps / "s1"),
        str(snaps / "s2"),
        str(repo_dir),
    ]
    assert list(env["repos"].iterdir()) == []
    proc = run_import(env, repo_dir, "--snapshots-dir", str(snaps), "--apply")
    assert proc.returncode == 0, proc.stderr
    doc = js(proc)
    assert doc["verified"] == ["s1", "s2", "s3"]
    assert (tree_fingerprint(repo_dir), tree_fingerprint(snaps)) == before
    repo = PosixRepository(env["repos"] / "proj", "proj")
    assert manifest_content(repo.manifest("s1")) == tree_content(snaps / "s1")
    assert manifest_content(repo.manifest("s2")) == tree_content(snaps / "s2")
    assert manifest_content(repo.manifest("s3")) == tree_content(repo_dir)
    recs = list(repo.history())
    assert [(r.id, r.author, r.message) for r in recs] == [
        ("s3", "alice@hrdag.org", "[imported from dsg s3, 2025-06-03T15:15:00Z] Sync operation"),
        ("s2", "bob@hrdag.org", "[imported from dsg s2, 2025-06-02T16:00:00Z] Sync operation"),
        ("s1", "alice@hrdag.org", "[imported from dsg s1, 2025-06-01T17:00:00Z] Init operation"),
    ]
    clone = make_project(env)
    assert dsg("clone", cwd=clone, cfg=env["cfg"]).returncode == 0
    assert tree_content(clone) == tree_content(repo_dir)
    return doc


def test_dsg_import_with_gz_and_json_archives(env: dict[str, Path]) -> None:
    repo_dir, snaps = build_dsg(env["tmp"], "gz")
    doc = _check_dsg_import(env, repo_dir, snaps)
    # The old manifests agree with the trees (outside-data-dir entries are not defects).
    assert not [p for p in doc["problems"] if "disagrees" in p["message"]], doc["problems"]


@pytest.mark.skipif(
    importlib.util.find_spec("lz4") is None,
    reason="the lz4 module is not installed (dsg does not depend on it); "
    "the no-lz4 report is tested instead",
)
def test_dsg_import_with_lz4_archive(env: dict[str, Path]) -> None:
    repo_dir, snaps = build_dsg(env["tmp"], "lz4")
    _check_dsg_import(env, repo_dir, snaps)


@pytest.mark.skipif(importlib.util.find_spec("lz4") is not None, reason="lz4 is installed")
def test_dsg_import_without_lz4_says_so(env: dict[str, Path]) -> None:
    repo_dir, snaps = build_dsg(env["tmp"], "gz")
    (repo_dir / ".dsg/archive/s1-sync.json.gz").rename(repo_dir / ".dsg/archive/s1-sync.json.lz4")
    doc = js(run_import(env, repo_dir, "--snapshots-dir", str(snaps)))
    msgs = [p["message"] for p in doc["problems"]]
    assert any("lz4 module is not installed" in m and "s1-sync.json.lz4" in m for m in msgs)
    # History still comes from sync-messages.json.
    assert doc["snapshots"][0]["original_message"] == "Init operation"


def test_dsg_manifest_disagreeing_with_tree_is_reported(env: dict[str, Path]) -> None:
    repo_dir, snaps = build_dsg(env["tmp"], "gz")
    os.chmod(snaps / "s2/task1/input", 0o755)
    write(snaps / "s2/task1/input/b.csv", "b,changed\n")  # after its manifest was written
    doc = js(run_import(env, repo_dir, "--snapshots-dir", str(snaps)))
    bad = [p for p in doc["problems"] if "disagrees" in p["message"]]
    assert [(p["snapshot"], p["blocking"]) for p in bad] == [("s2", False)]
    assert "task1/input/b.csv" in bad[0]["message"]


# --- errors: nothing written ---------------------------------------------------------------


def test_target_exists_is_refused(env: dict[str, Path]) -> None:
    proj = build_snap(env["tmp"] / "snaproot")
    assert run_import(env, proj, "--apply").returncode == 0
    repo_before = tree_fingerprint(env["repos"])
    for extra in ((), ("--apply",)):
        proc = run_import(env, proj, *extra)
        assert proc.returncode == 1
        err = js(proc)["error"]
        assert err["kind"] == "repository_exists" and "already exists" in err["message"]
    assert tree_fingerprint(env["repos"]) == repo_before


def test_nfc_collision_names_both_and_writes_nothing(env: dict[str, Path]) -> None:
    proj = build_snap(env["tmp"] / "snaproot")
    os.chmod(proj / "s3/task1/input", 0o755)
    write(proj / "s3/task1/input" / NFC_NAME, "other\n")  # beside its NFD twin
    before = tree_fingerprint(proj)
    for extra in ((), ("--apply",)):
        proc = run_import(env, proj, *extra)
        assert proc.returncode == 1, proc.stdout
        err = js(proc)["error"]
        assert err["kind"] == "import_blocked"
        assert NFD_NAME in err["message"] and NFC_NAME in err["message"]
        assert "collide" in err["message"]
    assert list(env["repos"].iterdir()) == []
    assert tree_fingerprint(proj) == before
    text = dsg("import", str(proj), *target(env), "--apply", cwd=env["work"], cfg=env["cfg"])
    assert text.returncode == 1 and "collide" in text.stderr


def test_unreadable_source_is_a_clear_error(env: dict[str, Path]) -> None:
    proc = run_import(env, env["tmp"] / "no-such-dir", "--apply")
    assert proc.returncode == 1
    assert "does not exist" in js(proc)["error"]["message"]
    plain = env["tmp"] / "plain"
    plain.mkdir()
    proc = run_import(env, plain)
    assert proc.returncode == 1 and "neither" in js(proc)["error"]["message"]
    assert list(env["repos"].iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable directories")
def test_unreadable_directory_blocks_the_import(env: dict[str, Path]) -> None:
    proj = build_snap(env["tmp"] / "snaproot")
    locked = proj / "s2/task1/input"
    os.chmod(locked, 0)
    try:
        proc = run_import(env, proj, "--apply")
        assert proc.returncode == 1
        err = js(proc)["error"]
        assert err["kind"] == "import_blocked" and "cannot read directory" in err["message"]
    finally:
        os.chmod(locked, 0o755)
    assert list(env["repos"].iterdir()) == []


def test_escaping_link_blocks_unless_skipped(env: dict[str, Path]) -> None:
    proj = build_snap(env["tmp"] / "snaproot")
    os.symlink("../../../../etc/passwd", proj / "s3/task1/output/evil")
    proc = run_import(env, proj, "--apply")
    assert proc.returncode == 1
    assert "outside the project" in js(proc)["error"]["message"]
    assert list(env["repos"].iterdir()) == []
    proc = run_import(env, proj, "--apply", "--skip-bad-links")
    assert proc.returncode == 0, proc.stdout
    doc = js(proc)
    assert any(p["path"] == "task1/output/evil" and not p["blocking"] for p in doc["problems"])
    repo = PosixRepository(env["repos"] / "proj", "proj")
    assert repo.manifest("s3").get("task1/output/evil") is None


def test_gap_in_snapshot_numbers_is_refused(env: dict[str, Path]) -> None:
    proj = build_snap(env["tmp"] / "snaproot")
    shutil.rmtree(proj / "s2")
    (proj / "v1.0").unlink()
    proc = run_import(env, proj, "--apply")
    assert proc.returncode == 1
    assert "s2 missing" in js(proc)["error"]["message"]
    assert list(env["repos"].iterdir()) == []


def test_target_from_project_config(env: dict[str, Path]) -> None:
    """Inside a project, its .dsgconfig.yml names the new repository (and its data_dirs)."""
    proj = build_snap(env["tmp"] / "snaproot")
    project = make_project(env, "fromcfg", "project")
    with open(project / ".dsgconfig.yml", "a") as f:
        f.write("data_dirs: [input]\n")
    proc = dsg("import", str(proj), "--apply", "--json", cwd=project, cfg=env["cfg"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    repo = PosixRepository(env["repos"] / "fromcfg", "fromcfg")
    assert [e.path for e in repo.manifest("s3")] == ["task1/input/b.csv", f"task1/input/{NFC_NAME}"]


def test_unreadable_parts_block_in_process(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unreadable directories and files (simulated, so this also runs as root) are blocking
    problems; apply refuses and leaves no repository behind."""
    from dsg.admin import migrate
    from dsg.workcopy.config import ProjectConfig, RepositoryConfig

    proj = build_snap(env["tmp"] / "snaproot")
    config = ProjectConfig(
        name="proj",
        repository=RepositoryConfig(type="posix", host="localhost", mountpoint=str(env["repos"])),
    )
    repo = PosixRepository(env["repos"] / "proj", "proj")
    real_scandir, real_hash = os.scandir, migrate.Hasher.__call__

    def scandir(path):  # type: ignore[no-untyped-def]
        if str(path).endswith("s2/task1/output"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    def hasher(self, path, st, want64):  # type: ignore[no-untyped-def]
        if path.endswith("s3/task1/output/result.txt"):
            raise PermissionError(13, "Permission denied")
        return real_hash(self, path, st, want64)

    monkeypatch.setattr(migrate.os, "scandir", scandir)
    monkeypatch.setattr(migrate.Hasher, "__call__", hasher)
    src = migrate.read_snap(proj)
    rep = migrate.plan_import(src, config, repo, migrate.UserMap())
    assert [(p.snapshot, p.path, p.message) for p in rep.blocking] == [
        ("s2", "task1/output", "cannot read directory: Permission denied"),
        ("s3", "task1/output/result.txt", "cannot read: Permission denied"),
    ]
    with pytest.raises(migrate.ImportBlocked):
        migrate.apply_import(src, config, repo, migrate.UserMap(), "admin@hrdag.org")
    assert not repo.exists() and list(env["repos"].iterdir()) == []


def test_failure_during_write_removes_the_new_repository(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source file changing between the plan and its upload fails the hash check at the
    receiver; the half-written repository is removed, so the import can simply be rerun."""
    from dsg.admin import migrate
    from dsg.backends.staging import StagedTransaction
    from dsg.workcopy.config import ProjectConfig, RepositoryConfig

    proj = build_snap(env["tmp"] / "snaproot")
    config = ProjectConfig(
        name="proj",
        repository=RepositoryConfig(type="posix", host="localhost", mountpoint=str(env["repos"])),
    )
    repo = PosixRepository(env["repos"] / "proj", "proj")
    real_put = StagedTransaction.put_file

    def put_file(self, path, src, size, mtime_ns, digest):  # type: ignore[no-untyped-def]
        if path == "task1/output/result.txt":
            digest = bytes(16)  # as if the file changed after it was hashed
        return real_put(self, path, src, size, mtime_ns, digest)

    monkeypatch.setattr(StagedTransaction, "put_file", put_file)
    with pytest.raises(IntegrityError, match=r"result\.txt"):
        migrate.apply_import(
            migrate.read_snap(proj), config, repo, migrate.UserMap(), "admin@hrdag.org"
        )
    assert list(env["repos"].iterdir()) == []
