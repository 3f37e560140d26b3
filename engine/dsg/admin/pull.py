"""Pull backups: the backup host asks, the primary sends; the primary cannot touch the copy.

On the primary, a dedicated account (`dsgpull`) has one authorized key per backup target,
each with a forced command (`restrict,command="dsg admin send-for-backup --name N
--project P=DATASET ..."`): whatever the client asks for arrives as SSH_ORIGINAL_COMMAND,
a short request that :func:`parse_request` checks word by word against the projects named
in the forced command. It can list a project's dsg snapshots, send one (`zfs send -p`, raw
when the dataset is encrypted, `-L -c -e` otherwise), resume an interrupted one from its
token (`zfs send -t`, only for a token naming that project's dsg snapshot), and hold or
release that project's snapshots under the target's own tag. Nothing else: no other
dataset, no other snapshot, no destroy, no shell. The account has `zfs allow
send,hold,release` on the project datasets and no credentials anywhere.

On the backup host, :class:`RemoteSource` is the primary as the executor in `backup.py`
sees it (`replicate_from`): the same planner, holds, metrics and audit as the push path;
the receive runs there under the backup account's delegated zfs (receive, create, mount,
hold, release, userprop, readonly, mountpoint: no destroy, no rollback). So neither side
can delete the other's data: the primary holds no key for the backup host, and what a
primary sends can add snapshots to the copy but never take one away.

Requests (words separated by single spaces, at most MAX_REQUEST bytes):

    dsg-backup-1 projects
    dsg-backup-1 list PROJECT
    dsg-backup-1 send PROJECT SNAPSHOT [BASE]
    dsg-backup-1 resume PROJECT TOKEN
    dsg-backup-1 hold PROJECT SNAPSHOT
    dsg-backup-1 release PROJECT SNAPSHOT
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from dsg.admin.backup import SNAP_RE, SnapInfo, Step, _ensure_hold, _release, dsg_snapshots
from dsg.admin.backup import snapshot_infos as _snapshot_infos
from dsg.core.errors import RepositoryError, UsageError
from dsg.wire.sshstart import SSH_OPTIONS
from dsg.zfs.ops import Zfs, ZfsError, check_dataset_name, check_resume_token

PROTOCOL = "dsg-backup-1"
MAX_REQUEST = 9000  # a resume token is at most 8192 characters
MAX_LIST_REPLY = 16 << 20  # a project's snapshot list (about 100 bytes a snapshot)
PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
GUID_RE = re.compile(r"[0-9]{1,20}")
VERBS = {"projects": 0, "list": 1, "send": (2, 3), "resume": 2, "hold": 2, "release": 2}


class RequestRefused(UsageError):
    kind = "backup_request_refused"


@dataclass(frozen=True)
class Request:
    verb: str
    project: str | None = None
    snapshot: str | None = None
    base: str | None = None
    token: str | None = None


def check_project_name(name: str) -> str:
    if not PROJECT_RE.fullmatch(name):
        raise ValueError(f"not a project name: {name[:60]!r}")
    return name


def parse_projects(pairs: Sequence[str]) -> dict[str, str]:
    """The forced command's `--project NAME=DATASET` words as {name: dataset}."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, dataset = pair.partition("=")
        if not sep:
            raise ValueError(f"--project wants NAME=DATASET, not {pair[:80]!r}")
        out[check_project_name(name)] = check_dataset_name(dataset)
    return out


def parse_request(text: str | None, projects: Mapping[str, str]) -> Request:
    """Check a request word by word; refuse anything that is not exactly one of the forms
    above about one of `projects`. Pure."""
    if text is None or not text.strip():
        raise RequestRefused("no request: this key only answers dsg backup requests")
    if len(text) > MAX_REQUEST:
        raise RequestRefused(f"request longer than {MAX_REQUEST} bytes")
    if not text.isascii() or not all(c.isalnum() or c in " _.@=/-" for c in text):
        raise RequestRefused("request with characters outside [A-Za-z0-9 _.@=/-]")
    words = text.split(" ")
    if words[0] != PROTOCOL:
        raise RequestRefused(
            f"not a dsg backup request (expected {PROTOCOL!r} first): this key runs only "
            "dsg admin send-for-backup"
        )
    verb, args = (words[1] if len(words) > 1 else ""), words[2:]
    want = VERBS.get(verb)
    if want is None:
        raise RequestRefused(f"unknown request {verb[:20]!r} (allowed: {', '.join(VERBS)})")
    counts = want if isinstance(want, tuple) else (want,)
    if len(args) not in counts:
        raise RequestRefused(f"{verb}: wrong number of arguments ({len(args)})")
    if verb == "projects":
        return Request("projects")
    project = args[0]
    if project not in projects:
        raise RequestRefused(f"{project[:60]!r} is not a project this key may back up")
    if verb == "list":
        return Request("list", project)
    if verb == "resume":
        try:
            token = check_resume_token(args[1])
        except ValueError as e:
            raise RequestRefused(str(e)) from e
        return Request("resume", project, token=token)
    for snap in args[1:]:
        if not SNAP_RE.fullmatch(snap):
            raise RequestRefused(f"{snap[:40]!r} is not a dsg snapshot (sN)")
    snapshot = args[1]
    base = args[2] if len(args) > 2 else None
    if base is not None and int(base[1:]) >= int(snapshot[1:]):
        raise RequestRefused(f"base {base} is not older than {snapshot}")
    return Request(verb, project, snapshot, base)


RESUME_TONAME_RE = re.compile(r"^\s*toname = (\S+)\s*$", re.MULTILINE)


def resume_token_snapshot(zfs: Zfs, token: str) -> str:
    """The snapshot a resume token would send (`zfs send -nv -t`: a dry run, nothing is
    sent): OpenZFS prints the token's contents, among them `toname = pool/ds@snap`."""
    proc = zfs.run("zfs", ["send", "-nv", "-t", check_resume_token(token)], check=False)
    m = RESUME_TONAME_RE.search(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0 or m is None:
        raise RequestRefused(
            "the resume token cannot be read on the primary: "
            + (proc.stderr.strip()[-300:] or "no snapshot name in it")
        )
    return m.group(1)


def serve_request(
    req: Request, projects: Mapping[str, str], zfs: Zfs, tag: str, out: IO[bytes]
) -> dict[str, Any] | None:
    """Answer one checked request: a JSON document (returned), or a send stream written to
    `out` (None returned). An encrypted dataset is only ever sent raw."""
    if req.verb == "projects":
        return {"projects": sorted(projects)}
    assert req.project is not None
    dataset = projects[req.project]
    if req.verb == "list":
        snaps = _snapshot_infos(zfs, dataset)
        if snaps is None:
            raise RepositoryError(f"project {req.project}: dataset {dataset} does not exist")
        return {
            "project": req.project,
            "dataset": dataset,
            "encrypted": zfs.key_state(dataset).encrypted,
            "resume": not zfs.platform.is_zfs_fuse,
            "snapshots": [
                {"name": s.name, "guid": s.guid, "creation": s.creation}
                for s in dsg_snapshots(snaps)
            ],
        }
    if req.verb == "resume":
        assert req.token is not None
        if zfs.platform.is_zfs_fuse:
            raise RequestRefused("zfs-fuse has no zfs send -t: nothing to resume from")
        snap = resume_token_snapshot(zfs, req.token)
        ds, _, name = snap.partition("@")
        if ds != dataset or not SNAP_RE.fullmatch(name):
            raise RequestRefused(
                f"the resume token is for {snap[:200]}, not a dsg snapshot of {req.project}"
            )
        _send_to(zfs.resume_send_argv(req.token), out)
        return None
    assert req.snapshot is not None
    snapshot = f"{dataset}@{req.snapshot}"
    if req.verb == "hold":
        _ensure_hold(zfs, snapshot, tag)
        return {"held": req.snapshot, "tag": tag}
    if req.verb == "release":
        _release(zfs, snapshot, tag)
        return {"released": req.snapshot, "tag": tag}
    raw = zfs.key_state(dataset).encrypted
    base = None if req.base is None else f"@{req.base}"
    _send_to(zfs.send_argv(snapshot, base=base, raw=raw), out)
    return None


def _send_to(argv: list[str], out: IO[bytes]) -> None:
    """Run a `zfs send` with its stream on `out`; its stderr (bounded) in the error."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        if proc.returncode != 0:
            err.seek(0)
            raise ZfsError(argv, proc.returncode, err.read(4000).decode("utf-8", "replace"))


# --- the backup host's side ----------------------------------------------------------------------


class RemoteSource:
    """The primary, reached through `ssh [options] -- HOST REQUEST` (its forced command
    answers); program and options from $DSG_SSH_COMMAND, host keys verified."""

    def __init__(self, host: str, ssh_command: str | None = None, timeout: float = 300):
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise ValueError(f"not an ssh destination: {host[:80]!r}")
        ssh = shlex.split(ssh_command or os.environ.get("DSG_SSH_COMMAND", "ssh"))
        self.host = host
        self.base = [*ssh, *SSH_OPTIONS, "-T", "--", host]
        self.timeout = timeout
        self._projects: dict[str, dict[str, Any]] = {}

    def argv(self, *words: str) -> list[str]:
        return [*self.base, " ".join([PROTOCOL, *words])]

    def request(self, *words: str, limit: int = 1 << 20) -> Any:
        argv = self.argv(*words)
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout
            )
        except subprocess.TimeoutExpired as e:
            raise ZfsError(argv, -1, f"timed out after {self.timeout:g}s") from e
        err = proc.stderr.decode("utf-8", "replace").strip()[-2000:]
        if proc.returncode != 0:
            raise ZfsError(argv, proc.returncode, err or "the primary refused the request")
        if len(proc.stdout) > limit:
            raise RepositoryError(f"{self.host}: reply to {words[0]} over {limit} bytes")
        try:
            return json.loads(proc.stdout)
        except ValueError as e:
            raise RepositoryError(f"{self.host}: reply to {words[0]} is not JSON") from e

    def projects(self) -> list[str]:
        doc = self.request("projects")
        names = doc.get("projects") if isinstance(doc, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RepositoryError(f"{self.host}: malformed project list")
        return [check_project_name(n) for n in names]

    def listing(self, project: str) -> dict[str, Any]:
        if project not in self._projects:
            self._projects[project] = parse_listing(
                self.request("list", check_project_name(project), limit=MAX_LIST_REPLY), project
            )
        return self._projects[project]

    # Source: `dataset` is the project name here (the primary maps it to its dataset).
    def describe(self, dataset: str) -> str:
        return f"{self.host}:{self.listing(dataset)['dataset']}"

    def snapshots(self, dataset: str) -> list[SnapInfo] | None:
        return list(self.listing(dataset)["snapshots"])

    def encrypted(self, dataset: str) -> bool:
        return bool(self.listing(dataset)["encrypted"])

    def resumable(self, dataset: str) -> bool:
        return bool(self.listing(dataset)["resume"])

    def send_argv(self, dataset: str, step: Step, raw: bool) -> list[str]:
        return self.argv("send", dataset, step.snapshot, *([step.base] if step.base else []))

    def resume_argv(self, dataset: str, token: str) -> list[str]:
        return self.argv("resume", dataset, check_resume_token(token))

    def hold(self, dataset: str, snapshot: str, tag: str) -> None:
        self.request("hold", dataset, snapshot)

    def release(self, dataset: str, snapshot: str, tag: str) -> None:
        self.request("release", dataset, snapshot)


def parse_listing(doc: Any, project: str) -> dict[str, Any]:
    """A primary's `list` reply, checked (the primary is not trusted with the backup)."""
    if not isinstance(doc, dict) or doc.get("project") != project:
        raise RepositoryError(f"malformed snapshot list for {project}")
    snaps = doc.get("snapshots")
    if not isinstance(snaps, list):
        raise RepositoryError(f"malformed snapshot list for {project}")
    out: list[SnapInfo] = []
    for s in snaps:
        if not (
            isinstance(s, dict)
            and isinstance(s.get("name"), str)
            and SNAP_RE.fullmatch(s["name"])
            and isinstance(s.get("guid"), str)
            and GUID_RE.fullmatch(s["guid"])
            and isinstance(s.get("creation"), int)
        ):
            raise RepositoryError(f"malformed snapshot entry for {project}: {str(s)[:120]}")
        out.append(SnapInfo(s["name"], s["guid"], s["creation"]))
    dataset = doc.get("dataset")
    if not isinstance(dataset, str):
        raise RepositoryError(f"malformed snapshot list for {project}")
    return {
        "dataset": check_dataset_name(dataset),
        "encrypted": doc.get("encrypted") is True,
        "resume": doc.get("resume") is True,
        "snapshots": out,
    }
