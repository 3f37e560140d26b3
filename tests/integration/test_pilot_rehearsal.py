"""scripts/maintenance/pilot-rehearsal on a copy of the real dsg 0.4.4 two-user repository:
GO on the copy as it is; NO-GO, naming the reason, when a file of the source head changed
after the import, and when a snapshot in the new repository is corrupted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import DSG, REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "maintenance" / "pilot-rehearsal"
FIXTURE = Path(os.environ.get("DSG_FIXTURES", "/work/shared/fixtures")) / "dsg044-two-users"
pytestmark = pytest.mark.skipif(
    not (FIXTURE / "repo/.dsg/last-sync.json").is_file(),
    reason=f"the dsg 0.4.4 fixture is not at {FIXTURE} (set DSG_FIXTURES)",
)


def rehearse(src: Path, work: Path, *extra: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [
            str(SCRIPT),
            str(src / "repo"),
            "--snapshots-dir",
            str(src / "snapshots"),
            "--workdir",
            str(work),
            "--dsg",
            DSG,
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.stdout.count("\n") == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(proc.stdout)


def test_go_on_a_copy_and_no_go_when_damaged(tmp_path: Path) -> None:
    src = tmp_path / "copy"
    shutil.copytree(FIXTURE, src, symlinks=True)
    for d, _, _ in os.walk(src):
        os.chmod(d, 0o755)  # the fixture is read-only; the copy is ours to damage
    work = tmp_path / "work"

    code, rep = rehearse(src, work)
    assert (code, rep["verdict"], rep["reasons"]) == (0, "GO", []), rep
    names = [c["name"] for c in rep["checks"]]
    for step in ("import dry run", "import", "validate-chain", "validate-snapshot",
                 "clone as researcher A", "clone as researcher B", "byte-for-byte",
                 "sync A -> B", "sync B -> A", "source unchanged"):  # fmt: skip
        assert step in names, names
    assert rep["snapshots"] == ["s1", "s2", "s3"]
    # ben's s2 is reported as the tree says, against the corrupt sync-messages.json
    assert {"snapshot": "s2", "field": "created_by", "value": "ben@hrdag.org"}.items() <= next(
        d for d in rep["metadata_disagreements"] if d["field"] == "created_by"
    ).items()

    # One file of the source head changed after the import: NO-GO, naming it.
    head_file = src / "snapshots/s3/task1/input/f1.csv"
    original = head_file.read_bytes()
    head_file.write_bytes(original.replace(b"1", b"7", 1))
    code, rep = rehearse(src, work, "--reuse-import")
    assert (code, rep["verdict"]) == (1, "NO-GO"), rep
    assert any(
        r.startswith("byte-for-byte:") and "task1/input/f1.csv" in r for r in rep["reasons"]
    ), rep["reasons"]
    head_file.write_bytes(original)

    # A corrupted snapshot in the new repository: NO-GO, naming the snapshot.
    f4 = (src / "snapshots/s1/task1/input/f4.csv").read_bytes()
    objects = [p for p in (work / "repos").rglob("*") if p.is_file() and p.read_bytes() == f4]
    assert objects, "the stored copy of f4.csv"
    for p in objects:
        os.chmod(p, 0o644)
        p.write_bytes(f4[:-1] + b"X")
    code, rep = rehearse(src, work, "--reuse-import")
    assert (code, rep["verdict"]) == (1, "NO-GO"), rep
    bad = [r for r in rep["reasons"] if r.startswith("validate-snapshot:")]
    assert bad and "s1" in bad[0] and "task1/input/f4.csv" in bad[0], rep["reasons"]


def test_human_report_and_bad_arguments(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(SCRIPT), str(tmp_path / "nowhere"), "--dsg", DSG],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "not a directory" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [str(SCRIPT), str(empty), "--dsg", DSG], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "NO-GO" in proc.stdout and "import dry run" in proc.stdout
    assert "neither an original dsg repository" in proc.stdout
