"""The operations behind the `dsg` commands: init, clone, status, sync, resolve, log.

Each is scan -> compare -> plan -> execute -> record, composed from the pure stages and
a repository backend. The CLI only parses arguments and prints what these return.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from dsg.backends.base import LockOwner, Repository
from dsg.core.changes import apply_changes, set_aside_after
from dsg.core.compare import DESCRIPTIONS, S
from dsg.core.compression import FAST
from dsg.core.errors import (
    ConflictsBlocked,
    IntegrityError,
    ManifestError,
    MassDelete,
    PathError,
    RepositoryError,
    RepositoryExists,
    ScanBlocked,
    WorkingCopyError,
)
from dsg.core.faults import crash_point, register
from dsg.core.manifest import Entry, Manifest, SnapshotRecord, snap_number
from dsg.core.paths import show
from dsg.core.plan import Action, Item, Plan, make_plan, remote_changes
from dsg.core.stored import StoredManifest
from dsg.fs.log import EventLog, new_tx
from dsg.sync.execute import LocalApplier, Progress, run_local, run_remote
from dsg.workcopy import prescan
from dsg.workcopy.config import PROJECT_CONFIG, ProjectConfig, SafetyRules, UserConfig
from dsg.workcopy.rules import ScanRules, tracked_by
from dsg.workcopy.scan import Problem, ScanResult
from dsg.workcopy.workspace import Workspace

register("sync.after_plan")

T = TypeVar("T")


@dataclass
class Result:
    """What an operation did; the CLI renders it as text or JSON."""

    plan: Plan
    snapshot: str | None = None  # the snapshot the working copy is at afterwards
    committed: SnapshotRecord | None = None
    backups: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    dry_run: bool = False
    recovered: list[str] = field(default_factory=list)
    # status: the mass-delete guard a sync of this plan would stop at (nothing is changed)
    mass_delete: MassDelete | None = None

    def to_dict(self) -> dict[str, object]:
        d = self.plan.to_dict()
        d.update(
            snapshot=self.snapshot,
            committed=self.committed.to_dict() if self.committed else None,
            backups=self.backups,
            problems=[p.to_dict() for p in self.problems],
            dry_run=self.dry_run,
        )
        if self.recovered:
            d["recovered"] = self.recovered
        if self.mass_delete is not None:
            d["mass_delete"] = self.mass_delete.to_dict()
        return d


def event_log(ws: Workspace, command: str, tx: str | None = None) -> EventLog:
    # a .dsg that is a link (planted through git) gets no event written through it
    path = ws.dir / "log" / "dsg.jsonl" if prescan.is_real_dir(ws.dir) else None
    return EventLog(path, tx or new_tx(), command)


def _in_background(fn: Callable[[], T], name: str) -> Future[T]:
    """Run `fn` in a daemon thread: an interrupt (Ctrl-C) or an error of the caller never
    waits for it (it may be blocked on a host that does not answer)."""
    fut: Future[T] = Future()

    def run() -> None:
        try:
            fut.set_result(fn())
        except BaseException as e:  # handed to whoever asks for the result
            fut.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut


def checked_scan(ws: Workspace, progress: Callable[[int], None] | None = None) -> ScanResult:
    return _check_scan(ws.scan(progress))


def _check_scan(result: ScanResult) -> ScanResult:
    if result.blocking:
        shown = "\n".join(f"  {p}" for p in result.blocking[:50])
        more = f"\n  ... and {len(result.blocking) - 50} more" if len(result.blocking) > 50 else ""
        raise ScanBlocked(
            f"{len(result.blocking)} path(s) cannot be synced as they are:\n{shown}{more}",
            hint="rename or remove them (nothing was changed)",
            details=[p.to_dict() for p in result.blocking],
        )
    return result


def read_remote(repo: Repository, base: Manifest | None = None) -> tuple[str | None, Manifest]:
    """The repository head and its manifest. Any failure is an error, never 'empty'.

    When the head is the snapshot of `base` (nobody synced since), the base manifest is
    reused after checking its digest against the repository's record of that snapshot."""
    head = repo.head()
    if head is None:
        return None, Manifest.empty()
    if base is not None and base.snapshot == head:
        digest = base.digest()
        if repo.record(head).manifest_digest == digest == repo.manifest_digest(head):
            return head, base
    return head, repo.manifest(head)


def check_history(ws: Workspace, repo: Repository, base: Manifest, head: str | None) -> None:
    """The base this copy synced to must be in the repository's chain, unchanged."""
    if base.snapshot is None:
        return
    if snap_number(base.snapshot) > snap_number(head):
        raise RepositoryError(
            f"the repository's head ({head or 'empty'}) is older than this working copy's "
            f"base ({base.snapshot}); it may have been restored from a backup",
            hint="nothing was changed; ask your admin before syncing",
        )
    mine = ws.base_record()
    if mine is None:
        return
    theirs = repo.record(base.snapshot)
    if theirs != mine:
        raise RepositoryError(
            f"the repository's snapshot {base.snapshot} is not the one this working copy "
            "synced to (history differs)",
            hint="nothing was changed; run 'dsg validate-chain' and ask your admin",
        )


def status(ws: Workspace, repo: Repository, keep_unchanged: bool = False) -> Result:
    repo.warm()
    base, scan_result = _scan_against_base(ws, quick=not keep_unchanged)
    if scan_result.clean:
        unchanged = _unchanged(ws, repo)
        if unchanged is not None:
            return unchanged
        base = ws.base()
        scan_result = local_as_base(base)  # the repository moved on
    if base is None:
        base = ws.base()
    head, remote = read_remote(repo, base)
    check_history(ws, repo, base, head)
    plan = make_plan(
        scan_result.manifest, base, remote, ws.resolutions(), keep_unchanged, tracked(ws, repo)
    )
    ws.note_scan(scan_result, base)
    result = Result(plan, snapshot=base.snapshot, problems=scan_result.problems)
    try:  # say so now rather than at the sync
        _guard_mass_delete(plan, base, remote, ws.config.safety, allow=False)
    except MassDelete as e:
        result.mass_delete = e
    return result


def _scan_against_base(
    ws: Workspace, *, quick: bool, checked: bool = False
) -> tuple[Manifest | None, ScanResult]:
    """The scan and, unless the scan found the copy clean (the clean stamp), the base
    manifest, read while a prescan is still scanning where there is one."""
    loaded: list[Manifest] = []

    def load_base() -> None:
        if not loaded:
            loaded.append(ws.base())

    if not quick:
        load_base()
    result = ws.scan(quick=quick, on_dirty=load_base)
    if checked:
        _check_scan(result)
    if not result.clean:
        load_base()
    return (loaded[0] if loaded else None), result


def local_as_base(base: Manifest) -> ScanResult:
    """The local side of a copy its clean stamp found exactly at `base`: the base's files,
    as a scan records them (no attribution), without walking again."""
    entries = [Entry(e.path, e.size, e.mtime, e.hash, e.target) for e in base.entries]
    return ScanResult(Manifest(entries))


def _unchanged(ws: Workspace, repo: Repository) -> Result | None:
    """The result for a copy found clean by its stamp when the repository's head is still
    the base, checked as read_remote and check_history would; None when it is not."""
    rec = ws.base_record()
    found = ws.clean_stamp()
    if rec is None or found is None or ws.resolutions():
        return None
    # The head's record (its manifest digest and chain hash) is the one this copy holds.
    # The repository's manifest file itself is not read: nothing of it is needed here, and
    # its integrity is validate-snapshot's to check.
    head = repo.head()
    if head != rec.id or repo.record(head) != rec:
        return None
    plan = Plan(rec.id, head, [], unchanged=found[0].files)
    return Result(plan, snapshot=rec.id)


def base_after(final: Manifest, old: Manifest, untracked: list[str]) -> Manifest:
    """The base this copy holds after applying a plan: the repository's manifest, except for
    paths the plan left alone (`untracked`), which keep what the copy last had of them (or
    stay absent). Recording the repository's version there would make the copy's stale file
    look like a local edit once the path is tracked again."""
    if not untracked:
        return final
    skipped = set(untracked)
    entries = [e for e in final.entries if e.path not in skipped]
    entries += [e for p in skipped if (e := old.get(p)) is not None]
    entries.sort(key=lambda e: e.path)
    return Manifest(entries, final.snapshot)


def tracked(ws: Workspace, repo: Repository) -> Callable[[str], bool]:
    """What this copy syncs: inside its own data dirs and ignore rules and inside the shape
    the repository records. Anything else from the base or the repository (a path a member
    should not have committed, or one that a change of data_dirs left behind) is left alone
    on both sides and reported, never downloaded and never deleted."""
    return tracked_by(ScanRules.of(ws.config), repo.shape())


def default_message(plan: Plan) -> str:
    c = plan.counts()
    parts = [
        f"{c[k]} {k.replace('_', ' ')}" for k in ("upload", "delete_remote", "restore") if c.get(k)
    ]
    return "sync: " + ", ".join(parts) if parts else "sync"


def _block_on_conflicts(ws: Workspace, plan: Plan, user: UserConfig) -> None:
    conflicts = plan.conflicts
    if not conflicts:
        return
    path = ws.write_conflicts(conflicts, user.user_id)
    stale = (
        f"\n{len(plan.stale_resolutions)} earlier resolution(s) no longer apply because the "
        "files changed since; resolve them again."
        if plan.stale_resolutions
        else ""
    )
    listing = "\n".join(f"  {show(it.path)}   {DESCRIPTIONS[it.state]}" for it in conflicts[:50])
    raise ConflictsBlocked(
        f"{len(conflicts)} conflict(s) block the sync; nothing was changed:\n{listing}{stale}",
        hint="choose a side per file with 'dsg resolve PATH --use local|remote|base', "
        f"or edit {path} and run 'dsg sync --continue'; then run 'dsg sync'",
        details=[it.to_dict() for it in conflicts],
    )


def deletions(plan: Plan) -> tuple[list[str], list[str]]:
    """The paths a plan deletes: in the repository, and in this working copy."""
    remote, local = [], []
    for it in plan.items:
        if it.action == Action.delete_remote or (
            it.action == Action.restore and it.base is None and it.remote is not None
        ):
            remote.append(it.path)
        if it.action == Action.delete_local or (
            it.action == Action.restore and it.base is None and it.local is not None
        ):
            local.append(it.path)
    return remote, local


def is_mass_delete(n: int, total: int, safety: SafetyRules) -> bool:
    """More than `max_delete_count` files AND more than `max_delete_share` of `total`."""
    return n > safety.max_delete_count and n > safety.max_delete_share * max(total, 1)


def where(paths: list[str], examples: int = 5) -> tuple[list[str], list[tuple[str, int]]]:
    """A few example paths and the directories that hold the most of `paths` (their common
    directory when they share one: the `rm -rf` that removed them)."""
    parents = [p.rpartition("/")[0] or "." for p in paths]
    common = os.path.commonpath(parents) if parents and "." not in parents else ""
    if common and len(set(parents)) > 1:
        return paths[:examples], [(common, len(paths))]
    return paths[:examples], Counter(parents).most_common(3)


def guard_mass_delete(
    remote_deletes: list[str],
    remote_total: int,
    local_deletes: list[str],
    local_total: int,
    safety: SafetyRules,
    allow: bool,
    command: str = "sync",
) -> None:
    """Stop (MassDelete, nothing changed) before deleting a large part of the project, in
    either direction: files missing here (an `rm -rf`) would be deleted in the repository,
    or files deleted in the repository (a colleague's mistake) would be deleted here."""
    if allow:
        return
    found = []
    if is_mass_delete(len(remote_deletes), remote_total, safety):
        found.append(
            ("repository", remote_deletes, remote_total, "they are missing from this working copy")
        )
    if is_mass_delete(len(local_deletes), local_total, safety):
        found.append(
            ("working copy", local_deletes, local_total, "they were deleted in the repository")
        )
    if not found:
        return
    lines, details = [], []
    for side, paths, total, why in found:
        examples, dirs = where(paths)
        share = 100 * len(paths) / max(total, 1)
        if len(dirs) == 1 and dirs[0][1] == len(paths):
            in_dirs = f"all in {show(dirs[0][0])}/"
        else:
            in_dirs = "mostly in " + ", ".join(f"{show(d)}/ ({n})" for d, n in dirs)
        lines.append(
            f"this {command} would delete {len(paths)} of the {total} files in the {side} "
            f"({share:.0f}%) because {why}; {in_dirs}; e.g. " + ", ".join(show(p) for p in examples)
        )
        details.append(
            {
                "side": "remote" if side == "repository" else "local",
                "count": len(paths),
                "total": total,
                "examples": examples,
                "directories": [{"path": d, "count": n} for d, n in dirs],
            }
        )
    raise MassDelete(
        "\n".join(lines) + "\nnothing was changed",
        hint="if files were deleted by mistake, 'dsg restore PATH' brings yours back (and a "
        "colleague's deletion can be undone with 'dsg revert'); if it is intended, run "
        f"'dsg {command} --allow-mass-delete' (the files stay in the repository's history). "
        f"The limits ({safety.max_delete_count} files and {safety.max_delete_share:.0%}) are "
        "'safety:' in .dsgconfig.yml",
        details={
            "deletions": details,
            "max_delete_count": safety.max_delete_count,
            "max_delete_share": safety.max_delete_share,
        },
    )


def _guard_mass_delete(
    plan: Plan, base: Manifest, remote: Manifest, safety: SafetyRules, allow: bool
) -> None:
    remote_deletes, local_deletes = deletions(plan)
    guard_mass_delete(remote_deletes, len(remote), local_deletes, len(base), safety, allow)


def _check_tree_shape(plan: Plan, remote: Manifest) -> None:
    """Refuse before any transfer a result where a file would also be a directory."""
    changes = remote_changes(plan)
    if all(c.entry is None or remote.get(c.path) is not None for c in changes):
        return  # no path added: what the checked remote holds, less deletions, cannot clash
    try:
        apply_changes(remote, changes, 0, "")
    except ManifestError as e:
        raise PathError(
            f"this sync cannot be applied: {e.message}",
            hint="a file and a directory share a name between your copy and the repository; "
            "rename one of them (nothing was changed)",
        ) from e


def sync(
    ws: Workspace,
    repo: Repository,
    user: UserConfig,
    *,
    message: str | None = None,
    dry_run: bool = False,
    continue_: bool = False,
    allow_mass_delete: bool = False,
    lock_timeout: float | None = None,
    progress: Progress | None = None,
) -> Result:
    tx = new_tx()
    log = event_log(ws, "sync", tx)
    repo.warm()
    with ws.lock():
        if continue_:
            _apply_conflicts_file(ws, repo)
        base, scan_result = _scan_against_base(ws, quick=not continue_, checked=True)
        if scan_result.clean:
            unchanged = _unchanged(ws, repo)
            if unchanged is not None:
                log("unchanged", snapshot=unchanged.snapshot, files=unchanged.plan.unchanged)
                unchanged.dry_run = dry_run
                return unchanged
            base = ws.base()
            scan_result = local_as_base(base)  # the repository moved on
        if base is None:
            base = ws.base()
        local = scan_result.manifest
        log(
            "scanned",
            files=len(local),
            hashed=scan_result.hashed_files,
            hashed_bytes=scan_result.hashed_bytes,
            prescanned=scan_result.prescanned,
        )
        head, remote = read_remote(repo, base)
        check_history(ws, repo, base, head)
        resolutions = ws.resolutions()
        keep = tracked(ws, repo)
        plan = make_plan(local, base, remote, resolutions, tracked=keep)
        log("planned", base=base.snapshot, head=head, counts=plan.counts())
        if dry_run:
            return Result(plan, snapshot=base.snapshot, problems=scan_result.problems, dry_run=True)
        _block_on_conflicts(ws, plan, user)
        _guard_mass_delete(plan, base, remote, ws.config.safety, allow_mass_delete)
        _check_tree_shape(plan, remote)
        crash_point("sync.after_plan")

        result = Result(plan, problems=scan_result.problems)
        new_head, final = head, remote
        spliced: StoredManifest | None = None
        known: dict[str, str] | None = None  # what the spliced base sets aside, if known
        if plan.changes_remote:
            owner = LockOwner(user=user.user_id, tx=tx, operation="sync")
            timeout = user.lock_timeout if lock_timeout is None else lock_timeout
            with repo.lock(owner, timeout):
                result.recovered = list(repo.recovered)
                latest = repo.head()
                if latest != head:
                    # Someone committed between our plan and the lock: plan again on top.
                    log("replan", old_head=head, new_head=latest)
                    head, remote = read_remote(repo)
                    plan = make_plan(local, base, remote, resolutions, tracked=keep)
                    result.plan = plan
                    _block_on_conflicts(ws, plan, user)
                    _guard_mass_delete(plan, base, remote, ws.config.safety, allow_mass_delete)
                if plan.changes_remote:
                    record, committed = run_remote(
                        repo,
                        plan,
                        ws.root,
                        tx,
                        message or default_message(plan),
                        user.user_id,
                        user.user_name,
                        progress,
                    )
                    log("committed", snapshot=record.id, parent=record.parent)
                    result.committed = record
                    new_head = record.id
                    changes = remote_changes(plan)
                    final = apply_changes(remote, changes, record.number, user.user_id)
                    if remote is base:  # the new base is the old one's file spliced
                        # A repository on this machine has just spliced the same lines.
                        spliced = _as_committed(committed, record) or ws.spliced_base(
                            base, changes, record.number, user.user_id, record.manifest_digest
                        )
                    del committed
                    if spliced is not None:
                        final = final.with_digest(spliced.digest)
                        known = set_aside_after(base, changes, record.number)
                        if known is not None:
                            final.suspect = known
                    elif final.digest() != record.manifest_digest:
                        final = repo.manifest(record.id)
                else:
                    new_head, final = head, remote
        applier = LocalApplier(ws.root, repo, ws.hash_cache(), user.user_id, tx, progress)
        run_local(applier, plan, new_head)
        result.backups = applier.backups
        crash_point("execute.before_base")
        rec = result.committed or (repo.record(new_head) if new_head else None)
        new_base = base_after(final, base, plan.untracked)
        data = spliced.to_bytes(FAST) if spliced is not None and new_base is final else None
        ws.set_base(new_base, rec, data=data, checked=data is not None and known is not None)
        ws.hash_cache().save()
        if not plan.changes_local:  # the tree is as scanned: the next status can be quick
            ws.note_scan(scan_result, new_base)
        _forget_used_resolutions(ws, plan)
        result.snapshot = new_head
        log("synced", snapshot=new_head, backups=len(applier.backups))
        return result


def _as_committed(
    committed: StoredManifest | None, record: SnapshotRecord
) -> StoredManifest | None:
    """The manifest a local repository committed as `record`, if it is the record's."""
    if committed is None or committed.digest != record.manifest_digest:
        return None
    return committed


def _forget_used_resolutions(ws: Workspace, plan: Plan) -> None:
    ws.conflicts_path.unlink(missing_ok=True)
    ws.save_resolutions({})


def _apply_conflicts_file(ws: Workspace, repo: Repository) -> None:
    """`sync --continue`: turn the edited conflicts file into recorded resolutions."""
    choices = ws.read_conflicts_file()
    if not choices:
        raise WorkingCopyError(
            f"{ws.conflicts_path} resolves nothing (every 'use:' is still '?')",
            hint="write local, remote or base after 'use:' for each conflict",
        )
    current = status(ws, repo).plan
    items = {it.path: it for it in current.items if it.state.value in _CONFLICT_NAMES}
    for path, choice in choices.items():
        it = items.get(path)
        if it is None:
            raise WorkingCopyError(f"{show(path)} in conflicts.txt is not in conflict any more")
        ws.record_resolution(it, choice)


_CONFLICT_NAMES = {
    S.sLCR__all_ne.value,
    S.sxLCR__C_ne_R.value,
    S.sLxCR__L_ne_R.value,
    S.sLCxR__L_ne_C.value,
}


def resolve(ws: Workspace, repo: Repository, paths: list[str], choice: str) -> list[Item]:
    with ws.lock():
        plan = status(ws, repo).plan
        items = {it.path: it for it in plan.items if it.state.value in _CONFLICT_NAMES}
        done = []
        for p in paths:
            it = items.get(p)
            if it is None:
                raise WorkingCopyError(
                    f"{show(p)} is not in conflict",
                    hint="'dsg status' lists conflicts; use paths relative to the project root",
                )
            ws.record_resolution(it, choice)
            done.append(it)
        return done


def init(
    root: Path,
    config: ProjectConfig,
    repo: Repository,
    user: UserConfig,
    message: str | None = None,
    progress: Progress | None = None,
) -> Result:
    ws = Workspace(root, config)
    if ws.has_base:
        raise WorkingCopyError(f"{root} is already a dsg working copy (.dsg/ exists)")

    def refuse_if_exists(exists: bool) -> None:
        if exists:
            raise RepositoryExists(
                f"a repository named {config.name} already exists at {repo.location}",
                hint="use 'dsg clone' to get a working copy of it, or pick another --repo-name",
            )

    # The first answer over SSH waits for the connection and the agent's start: ask it
    # while the tree is scanned. The scan stops at its next progress tick if the answer
    # is "exists" or an error, so a refused init does not hash a large tree first.
    exists = _in_background(repo.exists, "dsg-exists")

    def stop_early(_: int) -> None:
        if exists.done():
            refuse_if_exists(exists.result())

    scan_result = checked_scan(ws, stop_early)
    refuse_if_exists(exists.result())
    local = scan_result.manifest
    plan = make_plan(local, Manifest.empty(), Manifest.empty())
    tx = new_tx()
    repo.create(ScanRules.of(config))
    undone = False
    try:
        with repo.lock(LockOwner(user=user.user_id, tx=tx, operation="init"), 30):
            try:
                record, committed = run_remote(
                    repo,
                    plan,
                    root,
                    tx,
                    message or "initial snapshot",
                    user.user_id,
                    user.user_name,
                    progress,
                )
            except BaseException:
                undone = True
                repo.destroy_new()  # under the lock, as the agent requires
                raise
    except BaseException:
        if not undone:
            repo.destroy_new()
        raise
    final = apply_changes(Manifest.empty(), remote_changes(plan), record.number, user.user_id)
    data = None
    stored = _as_committed(committed, record)
    del committed  # each copy of the manifest is let go once used: ~120 MB at 1M files
    if stored is not None and len(stored) == len(final):
        # The repository on this machine wrote these very lines: not serialized again.
        final, data = final.with_digest(stored.digest), stored.to_bytes(FAST)
    del stored
    cfg_path = root / PROJECT_CONFIG
    if not cfg_path.exists():
        cfg_path.write_text(config.to_yaml(), encoding="utf-8")
    ws.ensure_dir()
    ws.set_base(final, record, cache=False, data=data)
    del data
    ws.hash_cache().save()
    ws.note_scan(scan_result, final)  # the tree is as scanned: the first status can be quick
    event_log(ws, "init", tx)("committed", snapshot=record.id, files=len(final))
    return Result(plan, snapshot=record.id, committed=record, problems=scan_result.problems)


def clone(
    ws: Workspace, repo: Repository, user: UserConfig, progress: Progress | None = None
) -> Result:
    if ws.has_base:
        raise WorkingCopyError(
            f"{ws.root} is already a dsg working copy",
            hint="use 'dsg sync' to bring it up to date",
        )
    head, remote = read_remote(repo)
    if head is None:
        raise RepositoryError(f"repository {repo.name} has no snapshots yet")
    ws.ensure_dir()
    with ws.lock():
        scan_result = checked_scan(ws)
        plan = make_plan(scan_result.manifest, Manifest.empty(), remote, tracked=tracked(ws, repo))
        clashes = [it for it in plan.items if it.state == S.sLxCR__L_ne_R]
        if clashes:
            listing = "\n".join(f"  {show(it.path)}" for it in clashes[:50])
            raise ConflictsBlocked(
                f"{len(clashes)} local file(s) differ from the repository's copy:\n{listing}",
                hint="move them out of the data directories and clone again (nothing changed)",
                details=[it.to_dict() for it in clashes],
            )
        tx = new_tx()
        applier = LocalApplier(ws.root, repo, ws.hash_cache(), user.user_id, tx, progress)
        run_local(applier, plan, head)
        new_base = base_after(remote, Manifest.empty(), plan.untracked)
        ws.set_base(new_base, repo.record(head), cache=False)
        ws.hash_cache().save()
        event_log(ws, "clone", tx)("cloned", snapshot=head, files=len(remote))
        return Result(plan, snapshot=head, problems=scan_result.problems)


def log_records(
    repo: Repository, limit: int | None = None, start: str | None = None
) -> list[SnapshotRecord]:
    """Records from the head (or from snapshot `start`) back towards s1, newest first."""
    out: list[SnapshotRecord] = []
    snap = start or repo.head()
    while snap:
        rec = repo.record(snap)
        if out and rec.number >= out[-1].number:
            break  # a parent link that does not go back in time: 'dsg validate-chain' says so
        out.append(rec)
        snap = rec.parent
        if limit is not None and len(out) >= limit:
            break
    return out


def snapfetch(repo: Repository, snapshot: str, path: str, out: Path, force: bool = False) -> Entry:
    """Copy `path` as it was in `snapshot` to `out`, checked against that snapshot's hash."""
    from dsg.fs.durable import CREATE_NEW
    from dsg.fs.files import hash_file
    from dsg.sync.execute import with_suppress_unlink

    entry = repo.manifest(snapshot).get(path)
    if entry is None:
        raise WorkingCopyError(
            f"{show(path)} is not in snapshot {snapshot}",
            hint="'dsg list-files' shows paths; 'dsg log' lists snapshots",
        )
    if os.path.lexists(out) and not force:
        raise WorkingCopyError(f"{out} exists; choose another -o or pass --force")
    # A new temp name nobody can guess, created with O_EXCL|O_NOFOLLOW: a link planted at
    # a predictable name would otherwise make this write a file outside the project.
    tmp = out.with_name(f".{out.name}.dsg-tmp-{secrets.token_hex(8)}")
    if entry.is_link:
        os.symlink(entry.target or "", tmp)
        os.replace(tmp, out)
        return entry
    try:
        with (
            repo.open_file(snapshot, path) as src,
            os.fdopen(os.open(tmp, CREATE_NEW, 0o666), "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
        if hash_file(tmp) != entry.hash:
            raise IntegrityError(
                f"{show(path)} in {snapshot} does not match its manifest",
                hint="run 'dsg validate-snapshot' and tell your admin",
            )
        os.utime(tmp, ns=(entry.mtime, entry.mtime))
        os.replace(tmp, out)
    except BaseException:
        with_suppress_unlink(tmp)
        raise
    return entry


def snapfetch_to(repo: Repository, snapshot: str, path: str, dst: BinaryIO) -> Entry:
    """Write `path` as it was in `snapshot` to the stream `dst` (stdout). The hash is checked
    as the bytes pass: a mismatch is an error after they were written."""
    from dsg.fs.files import copy_hashing

    entry = repo.manifest(snapshot).get(path)
    if entry is None:
        raise WorkingCopyError(
            f"{show(path)} is not in snapshot {snapshot}",
            hint="'dsg list-files' shows paths; 'dsg log' lists snapshots",
        )
    if entry.is_link:
        raise WorkingCopyError(
            f"{show(path)} in {snapshot} is a symbolic link to {show(entry.target or '')}",
            hint="give -o PATH to recreate the link there",
        )
    with repo.open_file(snapshot, path) as src:
        n, got = copy_hashing(src, dst)
    dst.flush()
    if n != entry.size or got != entry.hash:
        raise IntegrityError(
            f"{show(path)} in {snapshot} does not match its manifest; the output is damaged",
            hint="run 'dsg validate-snapshot' and tell your admin",
        )
    return entry


def snapmount(repo: Repository, snapshot: str, mountpoint: Path) -> Path:
    """Make `mountpoint` show the read-only tree of `snapshot`."""
    repo.record(snapshot)  # exists?
    if os.path.lexists(mountpoint):
        raise WorkingCopyError(f"{mountpoint} already exists", hint="pick another --mountpoint")
    mountpoint.parent.mkdir(parents=True, exist_ok=True)
    return repo.mount_snapshot(snapshot, mountpoint)


def snapumount(repo: Repository, mountpoint: Path) -> None:
    if not os.path.lexists(mountpoint):
        raise WorkingCopyError(f"nothing is mounted at {mountpoint}")
    repo.unmount_snapshot(mountpoint)
