"""Property test: three researchers edit, delete and sync in random order against one
repository. After every step no committed byte is lost, the chain is linear and proven by
its hashes, and a working copy that synced without conflict equals the head exactly."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from dsg.core.errors import ConflictsBlocked
from dsg.core.manifest import SnapshotRecord
from dsg.fs.files import hash_file
from tests.helpers import Researcher, manifest_content, project_config, tree_content

USERS = ["alice", "bob", "carol"]
PATHS = ["t/input/a.csv", "t/input/b.csv", "t/input/d/c.csv", "t/output/e.txt"]


def all_local_bytes(root: Path) -> set[bytes]:
    out = set()
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and ".dsg" not in p.parts:
            out.add(p.read_bytes())
    return out


class Team(RuleBasedStateMachine):
    # Where the repository lives: None = a posix repository in a temp dir; the zfs test
    # sets a factory returning a context manager that yields a RepoSpace (tests/conftest.py).
    space_factory = None

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="dsg-prop-"))
        self._space_cm = None
        if self.space_factory is None:
            (self.tmp / "repos").mkdir()
            cfg = project_config("proj", self.tmp / "repos")
        else:
            self._space_cm = type(self).space_factory()
            space = self._space_cm.__enter__()
            space.prepare("proj")
            cfg = space.config("proj")
        self.r = {u: Researcher(u, self.tmp / u / "proj", self.tmp / "cfg" / u, cfg) for u in USERS}
        self.counter = 0
        self.r["alice"].write(PATHS[0], self.fresh("alice"))
        self.r["alice"].init()
        self.r["bob"].clone()
        self.r["carol"].clone()
        self.committed_bytes: set[bytes] = self.snapshot_bytes()

    def teardown(self) -> None:
        if self._space_cm is not None:
            self._space_cm.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fresh(self, user: str) -> str:
        self.counter += 1
        return f"{user}-{self.counter}\n"

    def repo(self):
        return self.r["alice"].repo

    def snapshot_bytes(self) -> set[bytes]:
        repo = self.repo()
        out = set()
        try:
            for rec in repo.history():
                for e in repo.manifest(rec.id):
                    if not e.is_link:
                        out.add((repo.snapshot_path(rec.id) / e.path).read_bytes())
        finally:
            repo.close()
        return out

    @rule(user=st.sampled_from(USERS), path=st.sampled_from(PATHS))
    def write(self, user: str, path: str) -> None:
        self.r[user].write(path, self.fresh(user))

    @rule(user=st.sampled_from(USERS), path=st.sampled_from(PATHS))
    def delete(self, user: str, path: str) -> None:
        p = self.r[user].path(path)
        if p.exists():
            p.unlink()

    @rule(user=st.sampled_from(USERS))
    def sync(self, user: str) -> None:
        self._sync(user)

    @rule(user=st.sampled_from(USERS), use=st.sampled_from(["local", "remote", "base"]))
    def resolve_all_and_sync(self, user: str, use: str) -> None:
        r = self.r[user]
        for it in r.status().plan.conflicts:
            r.resolve(it.path, use)
        self._sync(user)

    def _sync(self, user: str) -> None:
        r = self.r[user]
        before_local = all_local_bytes(r.root)
        head_before = self.repo().head()
        tree_before = tree_content(r.root)
        try:
            r.sync()
        except ConflictsBlocked:
            assert self.repo().head() == head_before, "a blocked sync must not commit"
            assert tree_content(r.root) == tree_before, "a blocked sync must not touch files"
            return
        head = self.repo().head()
        assert manifest_content(self.repo().manifest(head)) == tree_content(r.root)
        assert r.ws.base().snapshot == head
        # nothing local was lost: every byte string is still here, or in history
        after = all_local_bytes(r.root) | self.snapshot_bytes()
        lost = before_local - after
        assert not lost, f"sync lost local content {lost!r}"

    @invariant()
    def history_is_linear_and_proven(self) -> None:
        repo = self.repo()
        recs = list(repo.history())
        n = len(recs)
        assert [x.id for x in recs] == [f"s{i}" for i in range(n, 0, -1)]
        prev_chain = None
        for rec in reversed(recs):
            assert rec.parent == (f"s{rec.number - 1}" if rec.number > 1 else None)
            assert rec.chain == SnapshotRecord.expected_chain(rec, prev_chain)
            assert repo.manifest(rec.id).digest() == rec.manifest_digest
            prev_chain = rec.chain

    @invariant()
    def committed_bytes_are_never_lost(self) -> None:
        repo = self.repo()
        try:
            for rec in repo.history():
                for e in repo.manifest(rec.id):
                    if not e.is_link:
                        assert hash_file(repo.snapshot_path(rec.id) / e.path) == e.hash
        finally:
            repo.close()
        now = self.snapshot_bytes()
        assert self.committed_bytes <= now
        self.committed_bytes = now


Team.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestTeam = Team.TestCase


@pytest.mark.slow  # the extended tier: a zfs-fuse dataset per example: 2-4 min
@pytest.mark.zfs
def test_team_on_zfs(zfs_lab) -> None:
    """The same machine against a real ZFS dataset per example (fewer examples: zfs-fuse
    snapshots and clones cost tens of milliseconds each)."""
    from tests.conftest import zfs_space

    class ZfsTeam(Team):
        space_factory = staticmethod(lambda: zfs_space(zfs_lab))

    run_state_machine_as_test(
        ZfsTeam,
        settings=settings(
            max_examples=10,
            stateful_step_count=18,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
