"""A first week with dsg, scripted: three researchers (ana, ben, chen) on the embedded default
(a posix repository on this machine) run the user guide's commands in order through the
real console script, with the usual mistakes, and the output is checked at each step:
init, clone, status, sync, a conflict and its resolve, the conflict copy and clean, log, tag,
snapfetch, restore, a typo in data_dirs (reported, never a deletion) and an `rm -rf` stopped
by the mass-delete guard."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import DSG

pytestmark = pytest.mark.skipif(not Path(DSG).exists(), reason=f"{DSG} is missing")

NOTES = [f"task1/input/notes/n{i:02}.txt" for i in range(60)]  # enough for the guard


class Person:
    def __init__(self, name: str, home: Path) -> None:
        self.name = name
        self.cfg = home / "cfg"
        self.cfg.mkdir(parents=True)
        # the guide's "Tell dsg who you are"
        (self.cfg / "dsg.yml").write_text(f"user_name: {name.title()}\nuser_id: {name}@hrdag.org\n")
        self.root = home / "proj"

    def dsg(self, *args: str, code: int = 0) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DSG_", "GIT_"))}
        env["DSG_CONFIG_HOME"] = str(self.cfg)
        proc = subprocess.run(
            [DSG, *args], cwd=self.root, env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == code, (
            f"{self.name}: dsg {' '.join(args)}\n{proc.stdout}{proc.stderr}"
        )
        return proc.stdout + proc.stderr

    def json(self, *args: str, code: int = 0) -> dict:
        return json.loads(self.dsg(*args, "--json", code=code).splitlines()[0])

    def write(self, rel: str, text: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def tree(root: Path) -> dict[str, str]:
    """The synced content of a working copy: files under input/ or output/."""
    out = {}
    for p in sorted(root.rglob("*")):
        parts = p.relative_to(root).parts
        if (
            p.is_file()
            and {"input", "output"} & set(parts[:-1])
            and not any(x.startswith(".") for x in parts)
        ) and ".dsg-conflict-" not in p.name:
            out["/".join(parts)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_first_week(tmp_path: Path) -> None:
    base = tmp_path / "repos"
    base.mkdir()
    ana, ben, chen = (Person(n, tmp_path / n) for n in ("ana", "ben", "chen"))

    # --- Monday: ana starts the project (code in git, data in dsg)
    ana.root.mkdir()
    git(ana.root, "init", "-q")
    ana.write("task1/src/clean.R", "# code\n")
    ana.write("task1/input/interviews.csv", "id,village\n1,north\n")
    ana.write("task1/input/codes.csv", "code\n")
    for n in NOTES:
        ana.write(n, n)
    out = ana.dsg("init", "--repo-type", "posix", "--repo-path", str(base), "--repo-name",
                  "proj", "--no-interactive", "-m", "first data")  # fmt: skip
    assert f"Created repository proj at {base}/proj: s1 with {2 + len(NOTES)} entries." in out
    assert "Added .dsg/ and the data dirs to .gitignore" in out
    git(ana.root, "add", "-A")
    assert git(ana.root, "ls-files").split() == [
        ".dsgconfig.yml",
        ".gitignore",
        "task1/src/clean.R",
    ]
    git(ana.root, "commit", "-qm", "project")

    # --- ben and chen: git clone, then the guide's "First clone"
    for p in (ben, chen):
        git(tmp_path, "clone", "-q", str(ana.root), str(p.root))
        assert "configuration is valid" in p.dsg("validate-config")
        out = p.dsg("clone")
        assert f"Cloned proj at s1: {2 + len(NOTES)} files downloaded." in out
        assert ".gitignore" not in out  # ana's block came with git: nothing to add
        assert f"Up to date ({2 + len(NOTES)} files unchanged)." in p.dsg("status")
        assert "first data" in p.dsg("log", "-n", "5")
    assert tree(ben.root) == tree(ana.root) == tree(chen.root)

    # --- Tuesday: daily work. ben adds a result, ana gets it
    ben.write("task1/output/by-village.csv", "north,1\n")
    out = ben.dsg("status")
    assert "task1/output/by-village.csv   new here — will upload" in out
    assert "Total: 1 to upload (8 B);" in out
    assert "Synced: 1 uploaded (8 B); committed s2; now at s2." in ben.dsg("sync", "-m", "counts")
    out = ana.dsg("status")
    assert "task1/output/by-village.csv   new on the server — will download" in out
    assert "Synced: 1 downloaded (8 B); no new snapshot; now at s2." in ana.dsg("sync")

    # --- Wednesday: ana and chen edit the same file: a conflict, resolved with the guide
    ana.write("task1/input/interviews.csv", "id,village\n1,north\n2,south\n")
    ana.dsg("sync", "-m", "second interview")  # s3
    chen.write("task1/input/interviews.csv", "id,village\n1,North\n")
    out = chen.dsg("sync", "-m", "typo", code=3)
    assert "conflict" in out.lower()
    out = chen.dsg("status")
    assert "task1/input/interviews.csv   changed here and on the server — conflict" in out
    chen.dsg("resolve", "task1/input/interviews.csv", "--use", "remote")
    out = chen.dsg("sync")
    assert "kept your version as task1/input/interviews.dsg-conflict-" in out
    assert chen.read("task1/input/interviews.csv") == ana.read("task1/input/interviews.csv")
    out = chen.dsg("status")
    assert "1 conflict copy left from earlier syncs" in out and "dsg clean" in out
    assert "would remove" in chen.dsg("clean")
    chen.dsg("clean", "--no-dry-run")
    assert "conflict cop" not in chen.dsg("status")

    # --- Thursday: the log, a tag, an old version
    log = ana.json("log")["snapshots"]
    assert [s["id"] for s in log] == ["s3", "s2", "s1"]
    assert [s["author"] for s in log] == ["ana@hrdag.org", "ben@hrdag.org", "ana@hrdag.org"]
    assert "tagged s3 as v1.0" in ana.dsg("tag", "v1.0", "-m", "data for the report")
    assert "v1.0" in ben.dsg("log", "-n", "1")
    old = tmp_path / "interviews-s1.csv"
    ben.dsg("snapfetch", "task1/input/interviews.csv", "-s", "s1", "-o", str(old))
    assert old.read_text() == "id,village\n1,north\n"
    missing = ben.json("snapfetch", "task1/input/interviews.csv", "-s", "s9", code=1)
    assert "no snapshot s9 (head is s3)" in missing["error"]["message"]

    # --- Friday: mistakes. A typo in data_dirs is reported, never a deletion
    assert "Synced: 1 downloaded" in ben.dsg("sync")  # ben starts the day at the head
    cfg = ben.root / ".dsgconfig.yml"
    good = cfg.read_text()
    cfg.write_text(good.replace("- input", "- inputt"))
    out = ben.dsg("status")
    assert "not synced here" in out and "delete" not in out.lower(), out
    out = ben.dsg("sync")
    assert "deleted" not in out and "committed" not in out, out
    assert (
        ana.dsg("sync").startswith("Up to date") and (ana.root / "task1/input/codes.csv").exists()
    )
    cfg.write_text(good)
    assert "Up to date" in ben.dsg("status")

    # ... an `rm -rf` of a directory is stopped by the mass-delete guard, and restored
    shutil.rmtree(chen.root / "task1/input/notes")
    out = chen.dsg("sync", "-m", "oops", code=4)
    assert "--allow-mass-delete" in out and str(len(NOTES)) in out, out
    assert ana.json("log", "-n", "1")["snapshots"][0]["id"] == "s3"  # nothing committed
    chen.dsg("restore", "task1/input/notes")
    assert "Up to date" in chen.dsg("status")
    assert tree(chen.root) == tree(ana.root)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_fixed_data_dirs_typo_changes_nothing(tmp_path: Path) -> None:
    base = tmp_path / "repos"
    base.mkdir()
    ana, ben = Person("ana", tmp_path / "ana"), Person("ben", tmp_path / "ben")
    ana.root.mkdir()
    ana.write("task1/input/a.csv", "v1\n")
    ana.dsg("init", "--repo-type", "posix", "--repo-path", str(base), "--repo-name", "proj",
            "--no-interactive")  # fmt: skip
    ben.root.mkdir()
    shutil.copy(ana.root / ".dsgconfig.yml", ben.root)
    ben.dsg("clone")
    ana.write("task1/input/a.csv", "v2\n")
    ana.dsg("sync")  # s2: ana's newer version
    cfg = ben.root / ".dsgconfig.yml"
    good = cfg.read_text()
    cfg.write_text(good.replace("- input", "- inputt"))
    ben.dsg("sync")  # the typo: a.csv is "not synced here"
    cfg.write_text(good)
    out = ben.dsg("status")
    assert "task1/input/a.csv   changed on the server — will download" in out, out
