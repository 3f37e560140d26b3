"""Build a dsg release: the engine wheel, a wheelhouse of its runtime dependencies for the
servers' Python, a hashed requirements lock and a manifest (release.json).

    scripts/release/build [OUTDIR] [--build-id ID] [--source DIR] [--allow-dirty] ...

OUTDIR (default dist/release-<version>) must not exist or be empty: a release, once built, is
never rewritten (build another one into another directory). It ends up holding

    release.json        what the release is: version, build, git commit, the sha256 of the
                        dsg wheel, of the lock, of the archive and of every wheel in it
                        (format dsg-release/1)
    requirements.lock   every wheel pinned `name==version --hash=sha256:...`, dsg included:
                        pip install --no-index --require-hashes --only-binary :all:
                        --find-links wheels/ -r requirements.lock
    wheelhouse.tar      wheels/: the dsg wheel and its dependencies (binary wheels for the
                        target: CPython 3.11 on manylinux x86_64, Debian bookworm, by
                        default); one file, so a deploy copies three files, not dozens
    SHA256SUMS          `sha256sum -c SHA256SUMS` checks the three files above

roles/dsg_server installs only from such a directory (dsg_server_release_dir): it checks the
wheel's sha256 against release.json before installing it, into /opt/dsg/venvs/<release>.

The wheel is built from a copy of the source's files (tracked and untracked-but-not-ignored
files when it is a git checkout), never from stale build/ leftovers, with SOURCE_DATE_EPOCH
at the commit's time: the same commit gives the same dsg wheel, byte for byte. The build id
is `g<commit>` for a clean checkout; a dirty tree or a source outside git gets the first
8 hex digits of the wheel's sha256 too, so two different builds never share an id.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MANIFEST_FORMAT = "dsg-release/1"
# What the wheel is built from (setuptools: pyproject.toml, the readme, the package dir).
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "engine")
BUILD_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._]{0,63}\Z")
# name-version(-build)?-python-abi-platform.whl (PEP 427)
WHEEL_NAME = re.compile(
    r"\A(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-[^-]+-[^-]+-[^-]+\.whl\Z"
)


class BuildError(Exception):
    pass


def say(msg: str) -> None:
    print(f"release/build: {msg}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise BuildError(
            f"{' '.join(argv[:6])} ... failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )
    return proc.stdout


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def git_info(source: Path) -> dict[str, object] | None:
    """Commit, commit time and dirtiness of a git checkout; None outside git."""
    try:
        top = run(["git", "-C", str(source), "rev-parse", "--show-toplevel"]).strip()
    except (BuildError, FileNotFoundError):
        return None
    if Path(top).resolve() != source.resolve():
        return None  # a directory inside some other checkout: not this source's history
    commit = run(["git", "-C", top, "rev-parse", "HEAD"]).strip()
    epoch = int(run(["git", "-C", top, "log", "-1", "--format=%ct", "HEAD"]).strip())
    status = run(["git", "-C", top, "status", "--porcelain", "--", *BUILD_INPUTS])
    return {"commit": commit, "commit_time": epoch, "dirty": bool(status.strip())}


def source_files(source: Path, in_git: bool) -> list[str]:
    """The build inputs, relative to source: what git would commit (tracked, or untracked
    and not ignored), or outside git every file but caches and build leftovers."""
    if in_git:
        out = run(
            ["git", "-C", str(source), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard", "--", *BUILD_INPUTS]
        )  # fmt: skip
        return sorted({p for p in out.split("\0") if p and (source / p).is_file()})
    files: list[str] = []
    for top in BUILD_INPUTS:
        p = source / top
        if p.is_file():
            files.append(top)
        elif p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(
                    d for d in dirs if d != "__pycache__" and not d.endswith(".egg-info")
                )
                rel = Path(root).relative_to(source)
                files += [str(rel / n) for n in sorted(names) if not n.endswith((".pyc", ".pyo"))]
    return files


def copy_sources(source: Path, files: list[str], dest: Path) -> None:
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target)


def project_version(source: Path) -> str:
    with (source / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def lock_text(release: str, entries: list[dict[str, str]]) -> str:
    lines = [
        f"# dsg release {release}: every wheel of the wheelhouse, pinned and hashed.",
        "# pip install --no-index --require-hashes --only-binary :all: "
        "--find-links wheels -r requirements.lock",
    ]
    by_name: dict[tuple[str, str], list[str]] = {}
    for e in entries:
        by_name.setdefault((e["name"], e["version"]), []).append(e["sha256"])
    for (name, version), hashes in sorted(by_name.items()):
        hash_lines = [f"    --hash=sha256:{h}" for h in sorted(hashes)]
        lines.append(" \\\n".join([f"{name}=={version}", *hash_lines]))
    return "\n".join(lines) + "\n"


def write_tar(path: Path, wheels: Path, epoch: int) -> None:
    """wheels/<name>.whl for every wheel, sorted, owned by 0:0 at the release's time: the same
    wheels give the same archive, byte for byte."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, src: Path | None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "root", "root"
            if src is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                return
            info.mode, info.size = 0o644, src.stat().st_size
            with src.open("rb") as f:
                tar.addfile(info, f)

        add("wheels", None)
        for w in sorted(wheels.iterdir()):
            add(f"wheels/{w.name}", w)


def verify_install(out: Path, version: str, python: str) -> None:
    """Install the release as a server would (from the archive, hash-checked, no index) into
    a scratch venv, and run dsg --version and pip check."""
    with tempfile.TemporaryDirectory(prefix="dsg-release-verify-") as tmp:
        with tarfile.open(out / "wheelhouse.tar") as tar:
            # our own archive; the "data" filter where this Python has it (3.11.4+)
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, **kw)
        venv = Path(tmp) / "venv"
        run([python, "-m", "venv", str(venv)])
        # as on a server: no pip.conf, no PIP_* settings (no index, no extra find-links)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
             "--require-hashes", "--only-binary", ":all:", "--no-cache-dir",
             "--find-links", str(Path(tmp) / "wheels"), "-r", str(out / "requirements.lock")],
            env=env,
        )  # fmt: skip
        got = run([str(venv / "bin" / "dsg"), "--version"]).strip()
        if got != f"dsg {version}":
            raise BuildError(f"the installed release says {got!r}, expected 'dsg {version}'")
        run([str(venv / "bin" / "python"), "-m", "pip", "check"], env=env)


def target_matches_here(py: str, platforms: list[str]) -> bool:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (
        py == here
        and sys.implementation.name == "cpython"
        and sys.platform == "linux"
        and any(p.endswith("_" + platform.machine()) for p in platforms)
    )


def build(args: argparse.Namespace) -> Path:
    source = Path(args.source).resolve()
    if not (source / "pyproject.toml").is_file():
        raise BuildError(f"{source} has no pyproject.toml")
    version = project_version(source)
    git = git_info(source)
    if git and git["dirty"] and not args.allow_dirty:
        raise BuildError(
            f"{source} has uncommitted changes under {', '.join(BUILD_INPUTS)}: commit them, "
            "or pass --allow-dirty (a test build; its id carries the wheel's hash)"
        )
    epoch = args.source_date_epoch
    if epoch is None:
        epoch = int(git["commit_time"]) if git else 315532800  # 1980-01-01, zip's minimum

    with tempfile.TemporaryDirectory(prefix="dsg-release-") as tmp_name:
        tmp = Path(tmp_name)
        src_copy, built = tmp / "src", tmp / "built"
        copy_sources(source, source_files(source, git is not None), src_copy)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"}
        say(f"building the dsg {version} wheel (SOURCE_DATE_EPOCH={epoch})")
        run([args.python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(built),
             str(src_copy)], env=env)  # fmt: skip
        wheels = sorted(built.glob("dsg-*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"expected one dsg wheel, pip made {[w.name for w in wheels]}")
        dsg_wheel = wheels[0]
        m = WHEEL_NAME.match(dsg_wheel.name)
        if not m or m["version"] != version:
            raise BuildError(f"{dsg_wheel.name} is not dsg {version}")
        dsg_sha = sha256(dsg_wheel)

        if args.build_id:
            build_id = args.build_id
        elif git and not git["dirty"]:
            build_id = f"g{str(git['commit'])[:12]}"
        elif git:
            build_id = f"g{str(git['commit'])[:12]}.dirty.{dsg_sha[:8]}"
        else:
            build_id = f"src.{dsg_sha[:8]}"
        if not BUILD_ID.match(build_id):
            raise BuildError(
                f"build id {build_id!r}: letters, digits, '.' and '_' only (at most 64)"
            )
        release = f"{version}-{build_id}"

        out = Path(args.outdir or REPO / "dist" / f"release-{version}").absolute()
        if out.exists() and any(out.iterdir()):
            raise BuildError(f"{out} exists and is not empty: a release is never rewritten")
        out.parent.mkdir(parents=True, exist_ok=True)
        # built beside OUTDIR and renamed into place only when complete
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            wh = tmp / "wheels"
            wh.mkdir()
            shutil.copy2(dsg_wheel, wh / dsg_wheel.name)
            where = (
                ", ".join(args.platform)
                if args.exact_platform
                else f"glibc {args.glibc} {args.arch} (manylinux)"
            )
            say(f"downloading dependency wheels for CPython {args.python_version} on {where}")
            cmd = [args.python, "-m", "pip", "download", "-q", "--only-binary", ":all:",
                   "--python-version", args.python_version, "--implementation", "cp",
                   "--abi", "cp" + args.python_version.replace(".", ""),
                   "-d", str(wh)]  # fmt: skip
            for p in args.platform:
                cmd += ["--platform", p]
            for c in args.constraint:
                cmd += ["-c", str(Path(c).absolute())]
            run([*cmd, str(wh / dsg_wheel.name)])

            entries: list[dict[str, str]] = []
            for w in sorted(wh.iterdir()):
                wm = WHEEL_NAME.match(w.name)
                if not wm:
                    raise BuildError(f"{w.name} in the wheelhouse is not a wheel")
                entries.append({
                    "file": f"wheels/{w.name}",
                    "name": canonical(wm["name"]),
                    "version": wm["version"],
                    "sha256": sha256(w),
                })  # fmt: skip
            if [e for e in entries if e["name"] == "dsg"] != [
                {
                    "file": f"wheels/{dsg_wheel.name}",
                    "name": "dsg",
                    "version": version,
                    "sha256": dsg_sha,
                }
            ]:
                raise BuildError("the wheelhouse holds another dsg wheel than the one built")
            lock = staging / "requirements.lock"
            lock.write_text(lock_text(release, entries))
            house = staging / "wheelhouse.tar"
            write_tar(house, wh, epoch)
            manifest = {
                "format": MANIFEST_FORMAT,
                "name": "dsg",
                "version": version,
                "build": build_id,
                "release": release,
                "git": (
                    {"commit": git["commit"], "dirty": git["dirty"]}
                    if git
                    else {"commit": None, "dirty": None}
                ),
                "source_date_epoch": epoch,
                "target": {
                    "python": args.python_version,
                    "implementation": "cp",
                    **(
                        {"platforms": args.platform}
                        if args.exact_platform
                        else {"glibc": args.glibc, "arch": args.arch}
                    ),
                },
                "wheel": {"file": f"wheels/{dsg_wheel.name}", "sha256": dsg_sha},
                "lock": {"file": "requirements.lock", "sha256": sha256(lock)},
                "wheelhouse": {"file": house.name, "sha256": sha256(house)},
                "wheels": entries,
            }
            (staging / "release.json").write_text(json.dumps(manifest, indent=2) + "\n")
            sums = "".join(
                f"{sha256(staging / n)}  {n}\n"
                for n in ("release.json", "requirements.lock", house.name)
            )
            (staging / "SHA256SUMS").write_text(sums)
            if args.verify == "yes" or (
                args.verify == "auto" and target_matches_here(args.python_version, args.platform)
            ):
                say("verifying: a scratch venv installs it with --require-hashes; dsg --version")
                verify_install(staging, version, args.python)
            for p in staging.rglob("*"):
                p.chmod(0o755 if p.is_dir() else 0o644)
            staging.chmod(0o755)
            if out.exists():
                out.rmdir()
            staging.rename(out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    say(f"built {release}: {out}")
    print(out)
    return out


def manylinux_platforms(glibc: str, arch: str) -> list[str]:
    """Every manylinux tag a system with this glibc runs, newest first (pip takes only the
    tags it is given: manylinux_2_36 alone would refuse a manylinux_2_17 wheel)."""
    major, _, minor = glibc.partition(".")
    if major != "2" or not minor.isdigit() or int(minor) < 17:
        raise SystemExit(f"--glibc {glibc}: expected 2.17 or newer")
    tags = [f"manylinux_2_{m}_{arch}" for m in range(int(minor), 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="scripts/release/build",
        description="Build a dsg release: wheel, dependency wheelhouse, hashed lock, manifest.",
    )
    ap.add_argument("outdir", nargs="?", help="default: dist/release-<version>")
    ap.add_argument("--source", default=str(REPO), help="the dsg source tree (default: here)")
    ap.add_argument("--build-id", help="default g<commit> (plus the wheel's hash when dirty)")
    ap.add_argument(
        "--allow-dirty",
        action="store_true",
        help="build from uncommitted changes (a test build)",
    )
    ap.add_argument(
        "--python-version",
        default="3.11",
        help="the servers' Python (default 3.11, Debian bookworm)",
    )
    ap.add_argument(
        "--glibc",
        default="2.36",
        help="the servers' glibc (default 2.36, Debian bookworm): manylinux wheels up to it",
    )
    ap.add_argument("--arch", default="x86_64", help="the servers' machine (default x86_64)")
    ap.add_argument(
        "--platform",
        action="append",
        help="exact wheel platform tag(s), instead of those --glibc and --arch give",
    )
    ap.add_argument(
        "--constraint",
        action="append",
        default=[],
        help="pip constraints for the dependencies (e.g. the pins of an earlier release)",
    )
    ap.add_argument(
        "--source-date-epoch",
        type=int,
        help="timestamp of the wheel's files (default: the commit's time)",
    )
    ap.add_argument(
        "--verify",
        choices=["auto", "yes", "no"],
        default="auto",
        help="install into a scratch venv and run dsg --version (auto: when this Python "
        "matches the target)",
    )
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="Python with pip used to build (default: this one)",
    )
    args = ap.parse_args(argv)
    args.exact_platform = bool(args.platform)
    args.platform = args.platform or manylinux_platforms(args.glibc, args.arch)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        build(parse_args(sys.argv[1:] if argv is None else argv))
    except BuildError as e:
        say(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
