"""history.py: blame over in-memory manifests, and the per-link chain check."""

from __future__ import annotations

import pytest

from dsg.core.manifest import Entry, Manifest, SnapshotRecord
from dsg.fs.files import hash_bytes
from dsg.sync.history import blame, check_link

P = "t/input/a.csv"


def rec(n: int, author: str, parent_chain: str | None = None, **kw: object) -> SnapshotRecord:
    sid, parent = f"s{n}", (f"s{n - 1}" if n > 1 else None)
    fields = dict(
        author=author,
        message=f"msg {n}",
        created_at=f"2026-01-0{n}T00:00:00Z",
        manifest_digest=f"d{n}",
    )
    fields.update(kw)  # type: ignore[arg-type]
    chain = SnapshotRecord.compute_chain(parent_chain, sid, parent, **fields)  # type: ignore[arg-type]
    return SnapshotRecord(
        id=sid,
        parent=parent,
        author_name=author,
        entry_count=0,
        total_bytes=0,
        tx="tx",
        chain=chain,
        **fields,  # type: ignore[arg-type]
    )


class History:
    """Snapshots built like the engine does: unchanged entries carried forward."""

    def __init__(self) -> None:
        self.manifests: dict[str, Manifest] = {}
        self.records: list[SnapshotRecord] = []
        self.current: dict[str, Entry] = {}
        self.reads: list[str] = []

    def commit(self, user: str, changes: dict[str, bytes | None]) -> None:
        n = len(self.records) + 1
        for path, data in changes.items():
            if data is None:
                del self.current[path]
            else:
                self.current[path] = Entry(path, len(data), 0, hash_bytes(data), None, n, user)
        self.manifests[f"s{n}"] = Manifest.from_entries(self.current.values(), f"s{n}")
        parent_chain = self.records[-1].chain if self.records else None
        self.records.append(rec(n, user, parent_chain))

    def manifest(self, snap: str) -> Manifest:
        self.reads.append(snap)
        return self.manifests[snap]

    def blame(self, path: str = P):
        return blame(path, list(reversed(self.records)), self.manifest)


def summary(versions) -> list[tuple[str, str, str]]:
    return [(v.snapshot, v.event, v.user) for v in versions]


def test_add_modify_delete_restore_newest_first() -> None:
    h = History()
    h.commit("alice", {P: b"v1", "other": b"x"})  # s1 add
    h.commit("bob", {P: b"v2"})  # s2 modify
    h.commit("carol", {"other": b"y"})  # s3 unrelated
    h.commit("alice", {P: None})  # s4 delete
    h.commit("bob", {"other": b"z"})  # s5 unrelated
    h.commit("carol", {P: b"v1"})  # s6 restore (content of s1)
    h.commit("alice", {P: b"v3"})  # s7 modify
    h.commit("bob", {P: b"v2"})  # s8 restore (content of s2)
    versions, reads = h.blame()
    assert summary(versions) == [
        ("s8", "restore", "bob"),
        ("s7", "modify", "alice"),
        ("s6", "restore", "carol"),
        ("s4", "delete", "alice"),
        ("s2", "modify", "bob"),
        ("s1", "add", "alice"),
    ]
    assert versions[0].message == "msg 8" and versions[0].time == "2026-01-08T00:00:00Z"
    assert versions[3].entry is None and versions[3].to_dict()["hash"] is None
    assert versions[-1].to_dict()["hash"] == hash_bytes(b"v1").hex()
    assert reads == len(h.reads)


def test_later_unrelated_syncs_do_not_take_the_credit_and_are_skipped() -> None:
    h = History()
    h.commit("alice", {P: b"v1"})
    h.commit("bob", {P: b"v2"})
    for i in range(20):
        h.commit("carol", {f"t/input/other{i}": b"o"})
    versions, reads = h.blame()
    assert summary(versions) == [("s2", "modify", "bob"), ("s1", "add", "alice")]
    # present all along: head, then jump to s1 (before s2), then stop -- not 22 reads
    assert h.reads == ["s22", "s1"]
    assert reads == 2


def test_add_after_absence_and_delete_at_head() -> None:
    h = History()
    h.commit("alice", {"x": b"1"})
    h.commit("bob", {P: b"v1"})  # s2 add (absent in s1)
    h.commit("carol", {P: None})  # s3 delete
    h.commit("alice", {P: b"v9"})  # s4 add again, new content
    h.commit("bob", {P: None})  # s5 delete at head
    versions, _ = h.blame()
    assert summary(versions) == [
        ("s5", "delete", "bob"),
        ("s4", "add", "alice"),
        ("s3", "delete", "carol"),
        ("s2", "add", "bob"),
    ]


def test_unknown_path_has_no_versions_and_links_compare_by_target() -> None:
    h = History()
    h.commit("alice", {"x": b"1"})
    assert h.blame("nope")[0] == []
    m1 = Manifest.from_entries([Entry("l", target="a", snap=1, user="u")], "s1")
    m2 = Manifest.from_entries([Entry("l", target="b", snap=2, user="v")], "s2")
    m3 = Manifest.from_entries([Entry("l", target="a", snap=3, user="w")], "s3")
    ms = {"s1": m1, "s2": m2, "s3": m3}
    recs = [rec(3, "w"), rec(2, "v"), rec(1, "u")]
    versions, _ = blame("l", recs, ms.__getitem__)
    assert summary(versions) == [("s3", "restore", "w"), ("s2", "modify", "v"), ("s1", "add", "u")]
    assert versions[0].to_dict()["target"] == "a"


def test_chain_link_checks() -> None:
    r1 = rec(1, "alice")
    r2 = rec(2, "bob", r1.chain)
    assert check_link("s1", r1, None, "d1") == []
    assert check_link("s2", r2, r1, "d2") == []
    # a manifest changed after commit
    [p] = check_link("s2", r2, r1, "tampered")
    assert (p.snapshot, p.check) == ("s2", "digest") and "tampered" in p.message
    # a parent link edited: both the link and the chain hash break
    bad = SnapshotRecord(**{**r2.__dict__, "parent": "s7"})
    checks = [p.check for p in check_link("s2", bad, r1, "d2")]
    assert checks == ["parent", "chain"]
    # an edited message breaks the chain hash only
    msg = SnapshotRecord(**{**r2.__dict__, "message": "rewritten"})
    assert [p.check for p in check_link("s2", msg, r1, "d2")] == ["chain"]
    # the chain depends on the parent's chain
    other = rec(1, "mallory")
    assert [p.check for p in check_link("s2", r2, other, "d2")] == ["chain"]


@pytest.mark.parametrize("claimed", ["s3", "s1"])
def test_chain_record_with_wrong_id(claimed: str) -> None:
    r = rec(2, "bob", rec(1, "a").chain)
    wrong = SnapshotRecord(**{**r.__dict__, "id": claimed})
    assert "id" in [p.check for p in check_link("s2", wrong, rec(1, "a"), "d2")]
