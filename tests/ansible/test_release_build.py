"""scripts/release/build: a release is the dsg wheel, a wheelhouse of its dependencies for
the servers' Python, a lock with a sha256 per wheel and release.json; it installs with
`pip --no-index --require-hashes`, is built the same way twice, and is never rewritten."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "release" / "build_release.py"


def build(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUILD), *args, "--python", sys.executable],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the build inputs outside git (a fixed tree, whatever the checkout does)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "engine", src / "engine", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return src


@pytest.mark.slow  # the extended tier: two release builds and a venv install: about 1 min
def test_release_is_complete_hashed_installable_and_reproducible(
    source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r1"
    proc = build(str(out), "--source", str(source), "--verify", "yes")
    if proc.returncode != 0 and ("Could not find" in proc.stderr or "connection" in proc.stderr):
        pytest.skip(f"no package index for the dependency wheels: {proc.stderr[-400:]}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert "verifying: a scratch venv installs it with --require-hashes" in proc.stderr

    m = json.loads((out / "release.json").read_text())
    version = m["version"]
    wheel_sha = m["wheel"]["sha256"]
    assert m["format"] == "dsg-release/1" and m["name"] == "dsg"
    assert m["build"] == f"src.{wheel_sha[:8]}" and m["release"] == f"{version}-{m['build']}"
    assert m["git"] == {"commit": None, "dirty": None}
    assert m["target"] == {
        "python": "3.11",
        "implementation": "cp",
        "glibc": "2.36",
        "arch": "x86_64",
    }
    assert sorted(p.name for p in out.iterdir()) == [
        "SHA256SUMS", "release.json", "requirements.lock", "wheelhouse.tar",
    ]  # fmt: skip

    # the archive holds exactly the listed wheels, each with its sha256
    with tarfile.open(out / "wheelhouse.tar") as tar:
        members = {i.name: i for i in tar.getmembers()}
        files = {n: sha256(tar.extractfile(i).read()) for n, i in members.items() if i.isfile()}
    assert files == {w["file"]: w["sha256"] for w in m["wheels"]}
    assert files[m["wheel"]["file"]] == wheel_sha
    assert {w["name"] for w in m["wheels"]} >= {"dsg", "pydantic", "pydantic-core", "pyyaml"}
    assert all(i.uid == 0 and i.mtime == m["source_date_epoch"] for i in members.values())
    assert sha256((out / "wheelhouse.tar").read_bytes()) == m["wheelhouse"]["sha256"]

    # the lock pins every wheel with its hash, dsg included
    lock = (out / "requirements.lock").read_text()
    assert sha256(lock.encode()) == m["lock"]["sha256"]
    for w in m["wheels"]:
        assert f"{w['name']}=={w['version']} \\\n    --hash=sha256:{w['sha256']}" in lock, w
    assert f"dsg=={version} \\\n    --hash=sha256:{wheel_sha}" in lock

    check = subprocess.run(
        ["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=out, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # the same source builds the same release, byte for byte
    again = build(str(tmp_path / "r2"), "--source", str(source), "--verify", "no")
    assert again.returncode == 0, again.stderr
    for name in ("release.json", "requirements.lock", "wheelhouse.tar"):
        assert (tmp_path / "r2" / name).read_bytes() == (out / name).read_bytes(), name

    # a release is never rewritten
    refused = build(str(out), "--source", str(source), "--verify", "no")
    assert refused.returncode == 1
    assert "exists and is not empty: a release is never rewritten" in refused.stderr


def test_uncommitted_changes_need_allow_dirty(source: Path, tmp_path: Path) -> None:
    repo = tmp_path / "checkout"
    shutil.copytree(source, repo)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "x"]):
        subprocess.run([*git, *argv], check=True, capture_output=True)
    with (repo / "engine" / "dsg" / "__init__.py").open("a") as f:
        f.write("# a local change\n")
    proc = build(str(tmp_path / "out"), "--source", str(repo))
    assert proc.returncode == 1
    assert "has uncommitted changes" in proc.stderr and "--allow-dirty" in proc.stderr
    assert not (tmp_path / "out").exists()
