"""Backups: replicate project datasets to a backup pool, and prove they restore.

Replication is planned (pure: `plan_replication`) from two snapshot lists and then executed
(`replicate`). Only dsg's own snapshots (`sN`) travel, one `zfs send -p -i` step per snapshot
(a full send for the first), so the backup keeps the whole immutable history with the `dsg:`
records, and an interrupted run loses at most the step in flight: the receiver discards a
truncated stream and the next run resumes from the newest common snapshot. That snapshot is
held (`zfs hold dsg-backup-<target pool>`) on both sides, so no retention job can prune the
base the next incremental needs. A backup whose history does not continue the primary's
(a snapshot with the same name but another guid, or snapshots the primary lacks) is never
overwritten: the run stops and says what differs. An encrypted project dataset (OpenZFS
native encryption) is sent raw (`zfs send -w`): the backup holds ciphertext only, stays
encrypted with the project's key, and needs no key on the backup side.

The restore drill (`restore_drill`) restores the newest replicated snapshot of a project the
way an admin would — the whole history, sent from the backup into a scratch dataset — opens
it as a dsg repository, checks that its head is that snapshot, re-reads every file against
the manifest (`validate_snapshot`), and destroys the scratch dataset. An encrypted backup is
restored raw and can only be verified with the project's key: the drill loads it (from the
keylocation the backup carries, or the one given) and fails, saying so, when it cannot.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from dsg.core import faults
from dsg.core.errors import IntegrityError, RepositoryError
from dsg.wire.sshstart import SSH_OPTIONS
from dsg.zfs.ops import KeyState, Zfs, ZfsError, check_dataset_name, key_location_url

SNAP_RE = re.compile(r"s([1-9][0-9]*)")
HOLD_PREFIX = "dsg-backup-"

faults.register("backup.mid_stream")
MID_STREAM_BYTES = 1 << 20  # the fault point above fires once this much was relayed


class BackupDiverged(RepositoryError):
    kind = "backup_diverged"


@dataclass(frozen=True)
class SnapInfo:
    name: str  # the snapshot name after '@'
    guid: str
    creation: int


@dataclass(frozen=True)
class Step:
    snapshot: str
    base: str | None  # None: a full send

    @property
    def kind(self) -> Literal["full", "incremental"]:
        return "full" if self.base is None else "incremental"

    def to_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "base": self.base, "kind": self.kind}


@dataclass(frozen=True)
class Plan:
    source: str
    target: str
    steps: tuple[Step, ...]
    common: str | None  # newest snapshot both sides have (None: the target is new)
    source_head: str | None

    @property
    def up_to_date(self) -> bool:
        return not self.steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "common": self.common,
            "source_head": self.source_head,
            "steps": [s.to_dict() for s in self.steps],
        }


def dsg_snapshots(snaps: Sequence[SnapInfo]) -> list[SnapInfo]:
    """dsg's own snapshots (`sN`), in history order (the input is in creation order)."""
    return [s for s in snaps if SNAP_RE.fullmatch(s.name)]


def plan_replication(
    source: str, target: str, src: Sequence[SnapInfo], dst: Sequence[SnapInfo] | None
) -> Plan:
    """The steps that bring `target` (its snapshots `dst`, None when it does not exist) up
    to `source` (snapshots `src`). Pure; raises BackupDiverged instead of planning anything
    that would destroy backup data."""
    ours = dsg_snapshots(src)
    head = ours[-1].name if ours else None
    if dst is None:
        steps = [Step(s.name, prev.name if prev else None) for prev, s in _pairs(ours)]
        return Plan(source, target, tuple(steps), None, head)
    theirs = dsg_snapshots(dst)
    by_name = {s.name: s for s in ours}
    common: SnapInfo | None = None
    for i, snap in enumerate(theirs):
        mine = by_name.get(snap.name)
        if mine is None or mine.guid != snap.guid:
            what = "is not on the primary" if mine is None else "differs from the primary's"
            raise BackupDiverged(
                f"backup {target}@{snap.name} {what}: the backup does not continue the "
                f"history of {source}",
                hint="nothing was changed; compare both sides (zfs list -t snapshot -o "
                "name,guid) and move the backup dataset aside before replicating again",
                details={"diverged_at": snap.name, "common": common.name if common else None},
            )
        if i != ours.index(mine):
            raise BackupDiverged(f"backup {target} skips snapshots of {source} before {snap.name}")
        common = snap
    if common is None:
        if dst:
            raise BackupDiverged(
                f"backup target {target} exists with snapshots but none of dsg's",
                hint="replicate into a new dataset name, or move this one aside",
            )
        # An empty existing dataset cannot take a full stream without -F; refuse clearly.
        raise BackupDiverged(
            f"backup target {target} exists but has no snapshots",
            hint=f"destroy the empty dataset (zfs destroy {target}) or choose another target",
        )
    start = [s.name for s in ours].index(common.name)
    rest = ours[start:]
    steps = [Step(s.name, prev.name) for prev, s in itertools.pairwise(rest)]
    return Plan(source, target, tuple(steps), common.name, head)


def _pairs(snaps: Sequence[SnapInfo]) -> list[tuple[SnapInfo | None, SnapInfo]]:
    return [(snaps[i - 1] if i else None, s) for i, s in enumerate(snaps)]


def snapshot_infos(zfs: Zfs, dataset: str) -> list[SnapInfo] | None:
    """Snapshots of `dataset` in creation order, or None when it does not exist."""
    if not zfs.dataset_exists(dataset):
        return None
    snaps = zfs.list_snapshots(dataset)
    guids: dict[str, str] = {}
    for row in zfs.get_rows(["guid"], [dataset], depth=1):
        if "@" in row.name:
            guids[row.name] = row.value
    return [SnapInfo(s.snapname, guids.get(s.name, ""), s.creation) for s in snaps]


# --- sources and targets ---------------------------------------------------------------------


TARGET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def check_target_name(name: str) -> str:
    """A backup target's name (on-site, off-site, ...): its hold tag and metrics file."""
    if not TARGET_NAME_RE.fullmatch(name):
        raise ValueError(
            f"backup target name {name[:40]!r}: use 1-32 of a-z, 0-9 and '-', starting with a "
            "letter or digit"
        )
    return name


def hold_tag(target: str, name: str | None = None) -> str:
    """The hold on the newest common snapshot: per named target, else per target pool."""
    return HOLD_PREFIX + (check_target_name(name) if name else target.split("/")[0])


class Source(Protocol):
    """Where the snapshots come from: this host's zfs (push) or a primary that sends on
    request over a restricted key (pull, `dsg.admin.pull.RemoteSource`)."""

    def describe(self, dataset: str) -> str: ...

    def snapshots(self, dataset: str) -> list[SnapInfo] | None: ...

    def encrypted(self, dataset: str) -> bool: ...

    def resumable(self, dataset: str) -> bool: ...

    def send_argv(self, dataset: str, step: Step, raw: bool) -> list[str]: ...

    def resume_argv(self, dataset: str, token: str) -> list[str]: ...

    def hold(self, dataset: str, snapshot: str, tag: str) -> None: ...

    def release(self, dataset: str, snapshot: str, tag: str) -> None: ...


class LocalSource:
    """The project datasets of this host (the push path)."""

    def __init__(self, zfs: Zfs):
        self.zfs = zfs

    def describe(self, dataset: str) -> str:
        return dataset

    def snapshots(self, dataset: str) -> list[SnapInfo] | None:
        return snapshot_infos(self.zfs, dataset)

    def encrypted(self, dataset: str) -> bool:
        return self.zfs.key_state(dataset).encrypted

    def resumable(self, dataset: str) -> bool:
        return not self.zfs.platform.is_zfs_fuse

    def send_argv(self, dataset: str, step: Step, raw: bool) -> list[str]:
        base = None if step.base is None else f"@{step.base}"
        return self.zfs.send_argv(f"{dataset}@{step.snapshot}", base=base, raw=raw)

    def resume_argv(self, dataset: str, token: str) -> list[str]:
        return self.zfs.resume_send_argv(token)

    def hold(self, dataset: str, snapshot: str, tag: str) -> None:
        _ensure_hold(self.zfs, f"{dataset}@{snapshot}", tag)

    def release(self, dataset: str, snapshot: str, tag: str) -> None:
        _release(self.zfs, f"{dataset}@{snapshot}", tag)


# --- resuming an interrupted receive -------------------------------------------------------

RESUME_UNSUPPORTED = (
    "zfs-fuse has no resumable receive (zfs receive -s, receive_resume_token): an interrupted "
    "step is sent again from its start"
)


@dataclass(frozen=True)
class ResumeDecision:
    action: Literal["none", "resume", "unsupported", "stuck"]
    message: str | None = None


def decide_resume(
    token: str | None, receiver_resumes: bool, sender_resumes: bool
) -> ResumeDecision:
    """What to do before planning, given the target's receive_resume_token. Pure.

    - no resumable receive on the backup side (zfs-fuse): nothing to resume, and say so;
    - a token and a sender that can `zfs send -t`: resume it first;
    - a token the sender cannot resume (zfs-fuse primary): stop, an admin decides (the
      partial state blocks every other receive into the target, and discarding it,
      `zfs receive -A`, is a destroy the backup account is not given)."""
    if not receiver_resumes:
        return ResumeDecision("unsupported", RESUME_UNSUPPORTED)
    if not token:
        return ResumeDecision("none")
    if not sender_resumes:
        return ResumeDecision(
            "stuck", "the backup holds a partial receive but the primary cannot resume it"
        )
    return ResumeDecision("resume")


class ResumeStuck(RepositoryError):
    kind = "backup_resume_stuck"


# --- execution ---------------------------------------------------------------------------------


@dataclass
class Result:
    project: str
    source: str
    target: str
    ok: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    common: str | None = None  # newest common snapshot after the run
    source_head: str | None = None
    lag_seconds: float | None = None  # age of the oldest source snapshot not on the backup
    raw: bool = False  # the source is encrypted: sent raw (zfs send -w), stays encrypted
    resumable: bool = False  # received with -s (OpenZFS): an interrupted step resumes
    resumed: str | None = None  # a snapshot whose interrupted receive this run resumed
    notes: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def receiver_zfs(host: str | None, prefix: str = "") -> Zfs | None:
    """The backup side's zfs: this host's (None), behind a prefix (e.g. "sudo -n"), or on
    `host` over SSH (program and options from $DSG_SSH_COMMAND like the sync transport;
    host keys verified, never prompted for)."""
    words = shlex.split(prefix)
    if host:
        ssh = shlex.split(os.environ.get("DSG_SSH_COMMAND", "ssh"))
        return Zfs([*ssh, *SSH_OPTIONS, "--", host, *words])
    return Zfs(words) if words else None


def replicate(
    project: str,
    source: str,
    target: str,
    zfs: Zfs,
    receiver: Zfs | None = None,
    *,
    name: str | None = None,
    dry_run: bool = False,
    on_step: Callable[[Step], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[Plan, Result]:
    """Plan, then (unless `dry_run`) execute, one project's replication from this host
    (push): `zfs` sends, `receiver` (default: the same zfs) receives."""
    return replicate_from(
        LocalSource(zfs), project, source, target, receiver or zfs,
        tag=hold_tag(target, name), force=True, dry_run=dry_run, on_step=on_step,
        on_bytes=on_bytes,
    )  # fmt: skip


def replicate_from(
    origin: Source,
    project: str,
    source: str,
    target: str,
    recv: Zfs,
    *,
    tag: str,
    force: bool,
    dry_run: bool = False,
    on_step: Callable[[Step], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[Plan, Result]:
    """The executor shared by push and pull: resume an interrupted receive, plan, send
    each step into `recv`, move the holds. `force` receives incrementals with -F (push: roll
    back whatever touched the copy); pull never does (its account is not given rollback or
    destroy, and a stream from the primary must not be able to take anything away)."""
    check_dataset_name(source)
    check_dataset_name(target)
    res = Result(project, origin.describe(source), target)
    t0 = time.monotonic()
    src = origin.snapshots(source)
    if src is None:
        raise RepositoryError(f"project {project}: source dataset {source} does not exist")
    res.raw = origin.encrypted(source)
    receiver_resumes = not recv.platform.is_zfs_fuse
    res.resumable = receiver_resumes and origin.resumable(source)
    token = recv.receive_resume_token(target) if receiver_resumes else None
    decision = decide_resume(token, receiver_resumes, origin.resumable(source))
    if decision.action == "unsupported" and decision.message:
        res.notes.append(decision.message)
    if decision.action == "stuck":
        raise ResumeStuck(
            f"{target}: {decision.message}",
            hint=f"as root on the backup host, discard it (zfs receive -A {target}) and run "
            "the backup again: the step is sent from its start",
            details={"target": target},
        )

    def relay(n: int) -> None:
        res.bytes += n
        if on_bytes is not None:
            on_bytes(n)
        # Mid-stream means the receiver holds a real part of a step: a stream's first chunk
        # can be its header alone, from which OpenZFS keeps nothing to resume.
        if res.bytes >= MID_STREAM_BYTES:
            faults.crash_point("backup.mid_stream")

    if decision.action == "resume":
        if dry_run:
            res.notes.append(f"would resume the interrupted receive into {target} first")
        else:
            _resume(origin, source, target, recv, token or "", tag, res, relay)
    dst = snapshot_infos(recv, target)
    plan = plan_replication(source, target, src, dst)
    res.source_head, res.common = plan.source_head, plan.common
    if res.raw and dst is not None:
        check_raw_target(source, target, recv.key_state(target))
    if dry_run:
        res.ok = True
        res.steps = [s.to_dict() for s in plan.steps]
        res.lag_seconds = _lag(src, plan.common)
        return plan, res
    parent = target.rpartition("/")[0]
    if parent and not recv.dataset_exists(parent):
        recv.create_dataset(parent, parents=True)
    guids = {s.name: s.guid for s in src}
    for step in plan.steps:
        if on_step is not None:
            on_step(step)
        s0 = time.monotonic()
        recv.receive_from(
            origin.send_argv(source, step, res.raw),
            target,
            force=force and step.base is not None,
            mount=False,
            resumable=res.resumable,
            timeout=None,
            relay=relay,
        )
        _check_received(recv, target, step.snapshot, guids.get(step.snapshot))
        if step.base is None:
            _settle_new_copy(recv, target)
        _move_holds(origin, source, recv, target, tag, step)
        res.common = step.snapshot
        res.steps.append({**step.to_dict(), "seconds": round(time.monotonic() - s0, 3)})
    if plan.common is not None and not plan.steps:
        # Up to date: make sure the newest common snapshot is still held on both sides.
        origin.hold(source, plan.common, tag)
        _ensure_hold(recv, f"{target}@{plan.common}", tag)
    res.ok = True
    res.seconds = round(time.monotonic() - t0, 3)
    res.lag_seconds = _lag(src, res.common)
    return plan, res


def _resume(
    origin: Source,
    source: str,
    target: str,
    recv: Zfs,
    token: str,
    tag: str,
    res: Result,
    relay: Callable[[int], None],
) -> None:
    """Finish the interrupted receive from its token, then hold what it completed."""
    before = dsg_snapshots(snapshot_infos(recv, target) or [])
    s0 = time.monotonic()
    recv.receive_from(
        origin.resume_argv(source, token), target, mount=False, resumable=True, relay=relay
    )
    after = dsg_snapshots(snapshot_infos(recv, target) or [])
    if not after:
        raise RepositoryError(f"resumed receive into {target} left no dsg snapshot")
    base = before[-1].name if before else None
    done = after[-1].name
    if done == base:
        return
    step = Step(done, base)
    if base is None:
        _settle_new_copy(recv, target)
    _move_holds(origin, source, recv, target, tag, step)
    res.resumed = done
    res.steps.append(
        {**step.to_dict(), "kind": "resumed", "seconds": round(time.monotonic() - s0, 3)}
    )


def _check_received(recv: Zfs, target: str, snapshot: str, guid: str | None) -> None:
    """The step's snapshot is on the copy, and is the one the primary listed (a stream is
    the sender's word: in pull mode, a primary's)."""
    rows = {r.property: r.value for r in recv.get_rows(["guid"], [f"{target}@{snapshot}"])}
    if "guid" not in rows or (guid and rows["guid"] != guid):
        raise BackupDiverged(
            f"after receiving {snapshot} into {target} the copy's {snapshot} is "
            f"{'missing' if 'guid' not in rows else 'another snapshot (guid differs)'}",
            hint="nothing was removed from the copy; compare both sides (zfs list -t snapshot "
            "-o name,guid) before the next run",
            details={"snapshot": snapshot, "expected_guid": guid, "guid": rows.get("guid")},
        )


def _move_holds(origin: Source, source: str, recv: Zfs, target: str, tag: str, step: Step) -> None:
    """Hold the newly common snapshot on both sides, then release the previous one."""
    origin.hold(source, step.snapshot, tag)
    _ensure_hold(recv, f"{target}@{step.snapshot}", tag)
    if step.base is not None:
        origin.release(source, step.base, tag)
        _release(recv, f"{target}@{step.base}", tag)


def check_raw_target(source: str, target: str, key: KeyState) -> None:
    """An encrypted source goes raw; a raw incremental applies only to a copy that was itself
    received raw (its own encryption root). Refuse, changing nothing, any other copy."""
    if key.encrypted and key.encryption_root == target:
        return
    what = f"is encrypted under {key.encryption_root}" if key.encrypted else "is not encrypted"
    raise BackupDiverged(
        f"{source} is encrypted and is sent raw, but the backup {target} {what} (it was not "
        "received raw): a raw incremental cannot continue it",
        hint="nothing was changed; move the old copy aside (zfs rename) so that the next run "
        "sends a full raw stream",
        details={"source": source, "target": target, "encryption": key.encryption},
    )


def _lag(src: Sequence[SnapInfo], common: str | None) -> float | None:
    """Seconds since the oldest primary snapshot the backup does not have (0: in sync)."""
    ours = dsg_snapshots(src)
    names = [s.name for s in ours]
    missing = ours[names.index(common) + 1 :] if common in names else ours
    return round(time.time() - missing[0].creation, 3) if missing else 0.0


def _settle_new_copy(recv: Zfs, target: str) -> None:
    """A fresh backup copy: never mounted where the primary is, and read-only."""
    props = recv.get_rows(["mountpoint", "readonly"], [target])
    for row in props:
        if row.property == "mountpoint" and row.source in ("local", "received"):
            recv.inherit_property(target, "mountpoint")
    recv.set_property(target, "readonly", "on")


def _ensure_hold(zfs: Zfs, snapshot: str, tag: str) -> None:
    try:
        zfs.hold(snapshot, tag)
    except ZfsError as e:
        if "tag already exists" not in e.stderr:
            raise


def _release(zfs: Zfs, snapshot: str, tag: str) -> None:
    try:
        zfs.release(snapshot, tag)
    except ZfsError as e:
        if "no such tag" not in e.stderr:
            raise


# --- restore drill -----------------------------------------------------------------------------


@dataclass
class DrillResult:
    project: str
    backup: str
    scratch: str
    ok: bool = False
    snapshot: str | None = None
    files: int = 0
    bytes: int = 0
    restore_seconds: float = 0.0
    verify_seconds: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    cleaned_up: bool = False
    encrypted: bool = False  # the backup is encrypted (raw): verified with the key loaded
    key_location: str | None = None  # where the key was loaded from
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class KeyUnavailable(RepositoryError):
    """An encrypted (raw) restore whose key could not be loaded: the data cannot be read."""

    kind = "key_unavailable"


def restore_drill(
    project: str,
    backup: str,
    scratch_parent: str,
    zfs: Zfs,
    *,
    keep: bool = False,
    key_location: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> DrillResult:
    """Restore the newest replicated snapshot of `project` from dataset `backup` into a
    scratch dataset under `scratch_parent`, verify it, clean up. Never raises for a failed
    drill: the result says what failed (a drill is a measurement).

    An encrypted backup is restored raw, then its key is loaded (from `key_location`, else
    the keylocation the backup carries) so that every file can be re-read; without the key
    the drill fails (it proves nothing it cannot read)."""
    from dsg.admin.validate import validate_snapshot
    from dsg.backends.zfs import ZfsRepository

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    scratch = f"{scratch_parent}/drill-{project}-{stamp}"
    res = DrillResult(project, backup, scratch)
    t0 = time.monotonic()
    repo: ZfsRepository | None = None
    try:
        check_dataset_name(scratch)
        if not zfs.dataset_exists(scratch_parent):
            zfs.create_dataset(scratch_parent, parents=True)

        def count(n: int) -> None:
            res.bytes += n
            if on_bytes is not None:
                on_bytes(n)

        plan = restore_history(
            zfs, backup, scratch, on_bytes=count, before=_note(res), key_location=key_location
        )
        res.restore_seconds = round(time.monotonic() - t0, 3)
        if res.encrypted:
            res.key_location = zfs.key_state(scratch).keylocation
        mnt = zfs.mountpoint(scratch)
        if mnt is None:
            raise RepositoryError(f"restored dataset {scratch} has no mountpoint")
        t1 = time.monotonic()
        repo = ZfsRepository(mnt, project, scratch.split("/")[0], zfs)
        head = repo.head()
        if head != plan.source_head:
            res.problems.append(f"restored head is {head}, the backup's newest is {res.snapshot}")
        check = validate_snapshot(repo, plan.source_head, None)
        res.files = check.files_verified
        res.problems += [str(m) for m in check.mismatches]
        if check.digest_problem:
            res.problems.append(check.digest_problem)
        if not check.complete:
            res.problems.append(f"verification of {plan.source_head} did not complete")
        res.verify_seconds = round(time.monotonic() - t1, 3)
        res.ok = not res.problems
    except (RepositoryError, IntegrityError, OSError, ValueError) as e:
        res.ok = False
        res.error = {"kind": getattr(e, "kind", "os"), "message": getattr(e, "message", str(e))}
        res.problems.append(res.error["message"])
    finally:
        if repo is not None:
            repo.close()
        if not keep:
            res.cleaned_up = _destroy_scratch(zfs, scratch)
        res.seconds = round(time.monotonic() - t0, 3)
    return res


def _note(res: DrillResult) -> Callable[[Plan], None]:
    def note(plan: Plan, key: KeyState) -> None:
        res.snapshot = plan.source_head
        res.encrypted = key.encrypted

    return note


def restore_history(
    zfs: Zfs,
    backup: str,
    dest: str,
    *,
    on_bytes: Callable[[int], None] | None = None,
    before: Callable[[Plan, KeyState], None] | None = None,
    key_location: str | None = None,
) -> Plan:
    """Send the whole dsg history of `backup` into the new dataset `dest` (its parent must
    exist), mounted where `dest` inherits its mountpoint from. Returns the plan it ran.

    An encrypted backup is sent raw (it needs no key to be read), so `dest` arrives encrypted
    with the project's key; that key is then loaded, from `key_location` (a path or
    file:// URL) or else from the keylocation the stream carried (the primary's). When it
    cannot be, KeyUnavailable is raised and `dest` is left received, encrypted, unmounted."""
    check_dataset_name(dest)
    location = key_location_url(key_location) if key_location else None
    snaps = snapshot_infos(zfs, backup)
    if snaps is None:
        raise RepositoryError(f"backup dataset {backup} does not exist")
    if zfs.dataset_exists(dest):
        raise RepositoryError(
            f"{dest} already exists; a restore never overwrites a dataset",
            hint="choose another destination, or move the existing one aside (zfs rename)",
        )
    plan = plan_replication(backup, dest, snaps, None)
    if plan.source_head is None:
        raise RepositoryError(f"backup dataset {backup} has no dsg snapshots")
    key = zfs.key_state(backup)
    if before is not None:
        before(plan, key)
    for step in plan.steps:
        zfs.replicate(
            f"{backup}@{step.snapshot}",
            dest,
            base=None if step.base is None else f"@{step.base}",
            properties=True,
            raw=key.encrypted,
            force=step.base is not None,
            mount=False,
            relay=on_bytes,
        )
    # The copy was read-only with an inherited mountpoint on the backup; here it inherits
    # the destination parent's mountpoint (never a received one).
    for row in zfs.get_rows(["mountpoint"], [dest]):
        if row.source in ("local", "received"):
            zfs.inherit_property(dest, "mountpoint")
    if key.encrypted:
        _load_restored_key(zfs, dest, location)
    zfs.zfs("mount", dest)
    return plan


def _load_restored_key(zfs: Zfs, dest: str, location: str | None) -> None:
    state = zfs.key_state(dest)
    if state.key_loaded:
        return
    where = location or state.keylocation or "prompt"
    if where == "prompt" or not where.startswith("file://"):
        raise KeyUnavailable(
            f"{dest} is encrypted (restored raw) and its keylocation is {where!r}: no key file "
            "to load",
            hint="give the project's key file (--key-location file:///etc/dsg/keys/<project>"
            ".key, or the escrowed copy)",
        )
    try:
        zfs.load_key(dest, location)
    except ZfsError as e:
        raise KeyUnavailable(
            f"{dest} is encrypted (restored raw) and its key could not be loaded from "
            f"{where}: {e.stderr or e.message}",
            hint="the data cannot be read without the project's key: give its file with "
            "--key-location file:///path/to/<project>.key (e.g. the escrowed copy)",
            details={"dataset": dest, "key_location": where},
        ) from e
    if location and location != state.keylocation:
        # Restored to serve: boot loads the key from where it was found (dsg_datasets' unit).
        zfs.set_property(dest, "keylocation", location)


@dataclass
class RestoreResult:
    project: str
    backup: str
    dataset: str
    mountpoint: str | None = None
    head: str | None = None
    snapshots: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def restore_project(
    project: str,
    backup: str,
    dest: str,
    zfs: Zfs,
    *,
    mountpoint: str | None = None,
    key_location: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> RestoreResult:
    """Restore a project's whole history from the backup into the new dataset `dest`,
    writable and with dsg's holds, ready to serve (docs/operations.md, "Restore a project")."""
    from dsg.backends.zfs import ZfsRepository

    t0 = time.monotonic()
    res = RestoreResult(project, backup, dest)
    parent = dest.rpartition("/")[0]
    if parent and not zfs.dataset_exists(parent):
        raise RepositoryError(f"the destination's parent {parent} does not exist")

    def count(n: int) -> None:
        res.bytes += n
        if on_bytes is not None:
            on_bytes(n)

    try:
        plan = restore_history(zfs, backup, dest, on_bytes=count, key_location=key_location)
    except KeyUnavailable as e:
        raise KeyUnavailable(
            e.message,
            hint=f"{dest} was received, encrypted and unmounted; nothing else changed. Destroy "
            f"it (zfs destroy -r {dest}) and restore again with --key-location FILE (the "
            "project's key, e.g. the escrowed copy)",
            details=e.details,
        ) from e
    zfs.set_property(dest, "readonly", "off")
    if mountpoint:
        zfs.set_property(dest, "mountpoint", mountpoint)
    for step in plan.steps:
        _ensure_hold(zfs, f"{dest}@{step.snapshot}", "dsg")
    mnt = zfs.mountpoint(dest)
    if mnt is None:
        raise RepositoryError(f"restored dataset {dest} is not mounted")
    repo = ZfsRepository(mnt, project, dest.split("/")[0], zfs)
    try:
        res.head = repo.head()
    finally:
        repo.close()
    if res.head != plan.source_head:
        raise IntegrityError(f"restored {dest} has head {res.head}, expected {plan.source_head}")
    res.mountpoint = str(mnt)
    res.snapshots = len(plan.steps)
    res.seconds = round(time.monotonic() - t0, 3)
    return res


def _destroy_scratch(zfs: Zfs, scratch: str) -> bool:
    try:
        if zfs.dataset_exists(scratch):
            zfs.destroy_dataset(scratch, recursive=True)
    except ZfsError:
        return False
    return True


def _metric_file(kind: str, project: str, name: str | None) -> str:
    # '@' is in neither a project name nor a target name: no two (project, name) collide.
    return f"{kind}_{project}{'@' + check_target_name(name) if name else ''}.prom"


def drill_metric_path(textfile_dir: Path, project: str, name: str | None = None) -> Path:
    return textfile_dir / _metric_file("dsg_restore_drill", project, name)


def backup_metric_path(textfile_dir: Path, project: str, name: str | None = None) -> Path:
    return textfile_dir / _metric_file("dsg_backup", project, name)
