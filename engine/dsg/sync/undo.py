"""Undo: `dsg restore` (a file or directory back in the working copy, as a snapshot had it)
and `dsg revert` (a new snapshot whose content undoes an earlier one; the history keeps both);
and `dsg rm`, the explicit way to take files out of the project.

Restore writes through the sync's own local writer (`LocalApplier`: a new temp name nobody
can guess, O_EXCL|O_NOFOLLOW, hash-checked, renamed into place, never through a link, only
paths this copy tracks), so a restored file is an ordinary file with the user's umask. A local
edit it replaces is first kept as a conflict copy unless `force`.

Revert is a three-way merge run backwards: "local" is the parent of the snapshot to undo,
"base" the snapshot, "remote" the head. What the snapshot changed and nobody changed since
goes back to the parent's content (Transaction.restore from the parent, or delete), in one
new snapshot under the repository lock; a file changed again since is a conflict and nothing
is committed.
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dsg.backends.base import LockOwner, Repository
from dsg.core.compare import S
from dsg.core.errors import ConflictsBlocked, WorkingCopyError
from dsg.core.manifest import Entry, Manifest, SnapshotRecord
from dsg.core.paths import show
from dsg.core.plan import Action, Item, Plan, make_plan
from dsg.fs.log import new_tx
from dsg.sync.execute import LocalApplier, Progress, run_local
from dsg.sync.ops import Result, event_log, guard_mass_delete, read_remote, status, sync, tracked
from dsg.workcopy.config import UserConfig
from dsg.workcopy.workspace import Workspace

MAX_LISTED = 50  # paths named in an error message; the JSON details carry them all
MAX_EXTRA = 10_000  # local files under a restored directory that are not in the snapshot


class _Restorer(LocalApplier):
    """The sync's local writer; with `force`, a local edit is replaced, not kept aside."""

    force = False

    def backup(self, path: str) -> str:
        if self.force:
            os.unlink(self.root / path)
            return ""
        return super().backup(path)


@dataclass
class Restored:
    snapshot: str
    restored: list[str] = field(default_factory=list)
    unchanged: int = 0
    backups: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)  # in the snapshot, not synced here
    extra: list[str] = field(default_factory=list)  # here, under a restored dir, not in it

    def to_dict(self) -> dict[str, object]:
        return {
            "snapshot": self.snapshot,
            "restored": self.restored,
            "unchanged": self.unchanged,
            "backups": self.backups,
            "untracked": self.untracked,
            "extra": self.extra,
        }


def select(manifest: Manifest, paths: list[str]) -> list[Entry]:
    """The entries of `manifest` at or under each of `paths` ("" is the whole project)."""
    chosen: dict[str, Entry] = {}
    for p in paths:
        p = p.strip("/")
        found = [e for e in manifest if not p or e.path == p or e.path.startswith(p + "/")]
        if not found:
            raise WorkingCopyError(
                f"{show(p)} is not in snapshot {manifest.snapshot}",
                hint="paths are relative to the project root; 'dsg list-files' lists the "
                "base's files, 'dsg blame PATH' every version of one",
            )
        for e in found:
            chosen[e.path] = e
    return [chosen[k] for k in sorted(chosen)]


def restore(
    ws: Workspace,
    repo: Repository,
    user: UserConfig,
    paths: list[str],
    snapshot: str | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> Restored:
    """Put `paths` (files or directories) back as `snapshot` (default: the base) had them."""
    with ws.lock():
        base = ws.base()
        snap = snapshot or base.snapshot
        if snap is None:
            raise WorkingCopyError("this working copy has no snapshot to restore from yet")
        manifest = base if snap == base.snapshot else repo.manifest(snap)
        keep = tracked(ws, repo)
        result = Restored(snap)
        entries = []
        for e in select(manifest, paths):
            (entries if keep(e.path) else result.untracked).append(e)
        tx = new_tx()
        applier = _Restorer(ws.root, repo, ws.hash_cache(), user.user_id, tx, progress)
        applier.force = force
        plan = Plan(base.snapshot, snap)
        for e in entries:
            if _is_regular_or_link(ws.root / e.path) and applier.matches(e.path, e):
                result.unchanged += 1
                continue
            # A file that is the base's version is in the repository already: replaced as
            # is. Anything else is a local edit: kept as a conflict copy first (unless force).
            known = base.get(e.path)
            plan.items.append(Item(e.path, S.sLCR__L_eq_C_ne_R, Action.download, known, known, e))
            result.restored.append(e.path)
        run_local(applier, plan, snap)
        result.backups = [b for b in applier.backups if b]
        ws.hash_cache().save()
        wanted = {e.path for e in entries} | set(result.untracked)
        result.extra = _extra(ws.root, paths, wanted, keep)
        event_log(ws, "restore", tx)(
            "restored", snapshot=snap, files=len(result.restored), backups=len(result.backups)
        )
        return result


def _is_regular_or_link(p: Path) -> bool:
    try:
        mode = os.lstat(p).st_mode
    except OSError:
        return False
    return stat_mod.S_ISREG(mode) or stat_mod.S_ISLNK(mode)


def _extra(
    root: Path, paths: list[str], wanted: set[str], keep: Callable[[str], bool]
) -> list[str]:
    """Tracked files under the restored directories that the snapshot did not have: left
    as they are (a restore never deletes), listed so the user can decide."""
    out: list[str] = []
    for p in paths:
        top = root / p.strip("/") if p.strip("/") else root
        if not top.is_dir() or top.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if rel not in wanted and keep(rel):
                    out.append(rel)
                    if len(out) >= MAX_EXTRA:
                        return sorted(set(out))
    return sorted(set(out))


@dataclass
class Reverted:
    reverted: str
    parent: str | None
    committed: SnapshotRecord | None
    changes: list[dict[str, str]]
    working_copy: Result | None = None  # the sync that brought this copy to the result
    pending_local: bool = False  # this copy has local changes: the user runs 'dsg sync'

    def to_dict(self) -> dict[str, object]:
        return {
            "reverted": self.reverted,
            "parent": self.parent,
            "committed": self.committed.to_dict() if self.committed else None,
            "changes": self.changes,
            "snapshot": self.working_copy.snapshot if self.working_copy else None,
            "pending_local": self.pending_local,
        }


def revert(
    ws: Workspace,
    repo: Repository,
    user: UserConfig,
    snapshot: str,
    *,
    message: str | None = None,
    allow_mass_delete: bool = False,
    lock_timeout: float | None = None,
    progress: Progress | None = None,
) -> Reverted:
    """Commit a new snapshot that undoes `snapshot`'s changes, then bring this working copy
    to it (unless it has local changes of its own: then 'dsg sync' combines them)."""
    target = repo.record(snapshot)
    parent = target.parent
    after = repo.manifest(snapshot)
    before = repo.manifest(parent) if parent else Manifest.empty()
    tx = new_tx()
    log = event_log(ws, "revert", tx)
    owner = LockOwner(user=user.user_id, tx=tx, operation="revert")
    timeout = user.lock_timeout if lock_timeout is None else lock_timeout
    with repo.lock(owner, timeout):
        head, remote = read_remote(repo)
        plan = make_plan(before, after, remote)
        changed_since = plan.conflicts
        if changed_since:
            listing = "\n".join(f"  {show(it.path)}" for it in changed_since[:MAX_LISTED])
            raise ConflictsBlocked(
                f"{len(changed_since)} file(s) that {snapshot} changed were changed again "
                f"after it; revert does not overwrite later work, nothing was changed:\n"
                f"{listing}",
                hint=f"bring back what you need with 'dsg restore PATH --snapshot "
                f"{parent or snapshot}' and 'dsg sync'",
                details=[it.path for it in changed_since],
            )
        todo = plan.by_action(Action.upload, Action.delete_remote)
        if not todo:
            return Reverted(snapshot, parent, None, [])
        deletes = [it.path for it in todo if it.action == Action.delete_remote]
        guard_mass_delete(
            deletes, len(remote), [], 0, ws.config.safety, allow_mass_delete, "revert"
        )
        txn = repo.begin(head, tx)
        try:
            for it in todo:
                if it.action == Action.delete_remote:
                    txn.delete(it.path)
                else:
                    assert parent is not None  # s1 has no parent: its revert only deletes
                    txn.restore(it.path, parent)
            note = target.message if len(target.message) <= 200 else target.message[:200] + "..."
            record = txn.commit(
                message or f"revert {snapshot}: {note}", user.user_id, user.user_name
            )
        except BaseException:
            txn.abort()
            raise
    log("committed", snapshot=record.id, reverted=snapshot, changes=len(todo))
    changes = [
        {"path": it.path, "action": "delete" if it.action == Action.delete_remote else "restore"}
        for it in todo
    ]
    result = Reverted(snapshot, parent, record, changes)
    result.working_copy, result.pending_local = _follow(
        ws, repo, user, allow_mass_delete, lock_timeout, progress
    )
    return result


def _follow(
    ws: Workspace,
    repo: Repository,
    user: UserConfig,
    allow_mass_delete: bool,
    lock_timeout: float | None,
    progress: Progress | None,
) -> tuple[Result | None, bool]:
    """Bring this working copy to the snapshot just committed, by an ordinary sync, unless it
    has local changes of its own (then the user's 'dsg sync' combines them: True)."""
    if not ws.has_base:
        return None, False
    mine = status(ws, repo).plan
    if mine.changes_remote or mine.conflicts:
        return None, True
    done = sync(
        ws,
        repo,
        user,
        allow_mass_delete=allow_mass_delete,
        lock_timeout=lock_timeout,
        progress=progress,
    )
    return done, False


@dataclass
class Removed:
    paths: list[str]  # the repository's paths at or under what was named
    head: str | None
    committed: SnapshotRecord | None = None
    working_copy: Result | None = None
    pending_local: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "paths": self.paths,
            "head": self.head,
            "committed": self.committed.to_dict() if self.committed else None,
            "snapshot": self.working_copy.snapshot if self.working_copy else None,
            "pending_local": self.pending_local,
        }


def remove(
    ws: Workspace,
    repo: Repository,
    user: UserConfig,
    paths: list[str],
    *,
    message: str | None = None,
    dry_run: bool = False,
    lock_timeout: float | None = None,
    progress: Progress | None = None,
) -> Removed:
    """Remove files or directories from the project on purpose: one new snapshot without
    them (the history keeps them), then this copy syncs to it. Works for paths this copy no
    longer tracks too (a directory taken out of data_dirs), which a sync never deletes.
    `dry_run`: only what would go, from the head, without the lock."""
    head, remote = read_remote(repo)
    found = Removed([e.path for e in select(remote, paths)], head)
    if dry_run:
        return found
    tx = new_tx()
    owner = LockOwner(user=user.user_id, tx=tx, operation="rm")
    timeout = user.lock_timeout if lock_timeout is None else lock_timeout
    with repo.lock(owner, timeout):
        head, remote = read_remote(repo)  # again, under the lock: the paths of this head
        found = Removed([e.path for e in select(remote, paths)], head)
        txn = repo.begin(head, tx)
        try:
            for p in found.paths:
                txn.delete(p)
            named = ", ".join(p.strip("/") or "." for p in paths)
            if len(named) > 200:
                named = named[:200] + "..."
            found.committed = txn.commit(message or f"rm {named}", user.user_id, user.user_name)
        except BaseException:
            txn.abort()
            raise
    event_log(ws, "rm", tx)("committed", snapshot=found.committed.id, files=len(found.paths))
    # The user confirmed these deletions: the sync that applies them here may delete many.
    found.working_copy, found.pending_local = _follow(ws, repo, user, True, lock_timeout, progress)
    return found
