"""Plan: turn sync states (and the user's conflict resolutions) into actions.

The plan is a plain value. `dsg sync --dry-run` prints it; `dsg sync` executes the very
same object. Nothing here does I/O.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import compress, repeat
from typing import Literal

from dsg.core.changes import Change
from dsg.core.compare import CONFLICT_STATES, S, SyncState, Triple, classify, merge3
from dsg.core.manifest import Entry, Manifest

Choice = Literal["local", "remote", "base"]
CHOICES: tuple[Choice, ...] = ("local", "remote", "base")


class Action(StrEnum):
    none = "none"
    upload = "upload"
    download = "download"
    delete_local = "delete_local"
    delete_remote = "delete_remote"
    conflict = "conflict"
    restore = "restore"  # a conflict resolved with --use base: both sides return to the base


STATE_ACTIONS: dict[SyncState, Action] = {
    S.sLCR__all_eq: Action.none,
    S.sLCR__L_eq_C_ne_R: Action.download,
    S.sLCR__L_eq_R_ne_C: Action.none,
    S.sLCR__C_eq_R_ne_L: Action.upload,
    S.sLCR__all_ne: Action.conflict,
    S.sxLCR__C_eq_R: Action.delete_remote,
    S.sxLCR__C_ne_R: Action.conflict,
    S.sLxCR__L_eq_R: Action.none,
    S.sLxCR__L_ne_R: Action.conflict,
    S.sLCxR__L_eq_C: Action.delete_local,
    S.sLCxR__L_ne_C: Action.conflict,
    S.sxLCxR__only_R: Action.download,
    S.sxLCRx__only_C: Action.none,
    S.sLxCxR__only_L: Action.upload,
    S.sxLxCxR__none: Action.none,
}

REMOTE_ACTIONS = frozenset({Action.upload, Action.delete_remote, Action.restore})


def fingerprint(e: Entry | None) -> str:
    if e is None:
        return "-"
    return f"l:{e.target}" if e.is_link else f"f:{e.hash_hex}"


@dataclass(frozen=True)
class Resolution:
    """A user's choice for a conflicted path, valid only for the triple it was made on."""

    path: str
    choice: Choice
    local: str
    base: str
    remote: str

    def matches(self, l: Entry | None, c: Entry | None, r: Entry | None) -> bool:  # noqa: E741
        return (self.local, self.base, self.remote) == (
            fingerprint(l),
            fingerprint(c),
            fingerprint(r),
        )

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass(slots=True)
class Item:
    path: str
    state: SyncState
    action: Action
    local: Entry | None
    base: Entry | None
    remote: Entry | None
    choice: Choice | None = None
    backup: bool = False  # make a conflict copy of the local file before replacing it

    def base_matches_remote(self) -> bool:
        if self.base is None:
            return self.remote is None
        return self.base.same_content(self.remote)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "path": self.path,
            "state": self.state.value,
            "action": self.action.value,
        }
        if self.choice:
            d["resolution"] = self.choice
        if self.backup:
            d["backup"] = True
        return d


def resolve_action(
    choice: Choice,
    l: Entry | None,  # noqa: E741
    c: Entry | None,
    r: Entry | None,
) -> tuple[Action, bool]:
    """The action a conflict resolution leads to, and whether the local file is backed up."""
    if choice == "local":
        return (Action.upload if l is not None else Action.delete_remote), False
    if choice == "remote":
        return (Action.download if r is not None else Action.delete_local), l is not None
    return Action.restore, l is not None and not l.same_content(c)


@dataclass
class Plan:
    base_id: str | None
    remote_id: str | None
    items: list[Item] = field(default_factory=list)
    unchanged: int = 0
    stale_resolutions: list[str] = field(default_factory=list)
    # paths of the base or the repository outside this copy's rules (data_dirs, ignore, the
    # repository's shape): left as they are on both sides, never deleted or downloaded
    untracked: list[str] = field(default_factory=list)

    def by_action(self, *actions: Action) -> list[Item]:
        return [it for it in self.items if it.action in actions]

    @property
    def conflicts(self) -> list[Item]:
        return self.by_action(Action.conflict)

    @property
    def changes_remote(self) -> bool:
        return any(it.action in REMOTE_ACTIONS for it in self.items)

    @property
    def changes_local(self) -> bool:
        return any(
            it.action in (Action.download, Action.delete_local, Action.restore) for it in self.items
        )

    @property
    def is_noop(self) -> bool:
        return all(it.action == Action.none for it in self.items)

    def counts(self) -> dict[str, int]:
        c: Counter[str] = Counter(it.action.value for it in self.items)
        c["none"] += self.unchanged
        return dict(sorted(c.items()))

    def to_dict(self) -> dict[str, object]:
        return {
            "base": self.base_id,
            "remote_head": self.remote_id,
            "counts": self.counts(),
            "files": [it.to_dict() for it in self.items],
            "stale_resolutions": self.stale_resolutions,
            "untracked": self.untracked,
        }


def make_plan(
    local: Manifest,
    base: Manifest,
    remote: Manifest,
    resolutions: dict[str, Resolution] | None = None,
    keep_unchanged: bool = False,
    tracked: Callable[[str], bool] | None = None,
) -> Plan:
    """Classify every path and choose its action. Unchanged paths are only counted,
    unless `keep_unchanged` (for listings that show every file). A changed path `tracked`
    rejects (left out of data_dirs or ignore rules, a path from a peer outside the project's
    shape, or a local one the repository's shape does not take) gets no action: it is listed
    in `untracked`."""
    resolutions = resolutions or {}
    plan = Plan(base.snapshot, remote.snapshot)
    # paths today's rules refuse, committed before them: never applied here (Manifest.suspect)
    suspect = base.suspect.keys() | remote.suspect.keys()
    if remote is base and not keep_unchanged:  # nobody synced since: local against base only
        triples, plan.unchanged = _changed_since_base(local, base)
    else:
        triples = merge3(local, base, remote)
    for path, le, ce, re_ in triples:
        state = classify(le, ce, re_)
        if state is S.sLCR__all_eq and not keep_unchanged:
            plan.unchanged += 1
            continue
        action = STATE_ACTIONS[state]
        # left alone only where something would happen (nothing to do is nothing to skip)
        if action is not Action.none and (
            (tracked is not None and not tracked(path)) or (suspect and path in suspect)
        ):
            plan.untracked.append(path)
            continue
        item = Item(path, state, action, le, ce, re_)
        if state in CONFLICT_STATES:
            res = resolutions.get(path)
            if res is not None:
                if res.matches(le, ce, re_):
                    item.choice = res.choice
                    item.action, item.backup = resolve_action(res.choice, le, ce, re_)
                else:
                    plan.stale_resolutions.append(path)
        plan.items.append(item)
    return plan


def _changed_since_base(local: Manifest, base: Manifest) -> tuple[list[Triple], int]:
    """merge3(local, base, base) less the paths whose local entry has the base's content,
    which are only counted: in path order, as merge3 gives them."""
    le, be = local.entries, base.entries
    if local.paths == base.paths:  # only contents changed (the common case): a column at a
        # time in C, and one by one only the rows whose hashes differ there or that have none
        # (a link, whose target decides; a file without one is never the same)
        rows = range(len(le))
        lh, bh = [e.hash for e in le], [e.hash for e in be]
        differ = set(compress(rows, map(operator.ne, lh, bh)))
        differ.update(compress(rows, map(operator.is_, lh, repeat(None))))
        pairs = ((le[i], be[i]) for i in sorted(differ))
        out = [(c.path, e, c, c) for e, c in pairs if not e.same_content(c)]
        return out, len(le) - len(out)
    by_path = {e.path: e for e in be}
    pop = by_path.pop
    out = []
    same = 0
    for e in le:
        c = pop(e.path, None)
        if c is not None and e.same_content(c):
            same += 1
        else:
            out.append((e.path, e, c, c))
    out += [(p, None, c, c) for p, c in by_path.items()]
    out.sort(key=lambda t: t[0])
    return out, same


def remote_changes(plan: Plan) -> list[Change]:
    """The repository side of a plan, in path order."""
    out: list[Change] = []
    for it in plan.items:
        if it.action == Action.upload:
            assert it.local is not None
            out.append(Change(it.path, it.local))
        elif it.action == Action.delete_remote:
            out.append(Change(it.path, None))
        elif it.action == Action.restore and not it.base_matches_remote():
            out.append(Change(it.path, it.base))
    return out
