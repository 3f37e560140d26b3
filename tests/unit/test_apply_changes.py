"""apply_changes (the manifest after a sync's changes, computed alike by client and server)
checks only what the changes add, so it must agree with building the whole manifest anew:
the same entries and attribution, and the same refusals (a file that is also a directory,
a path twice)."""

from __future__ import annotations

import random

import pytest

from dsg.core.changes import Change, apply_changes, set_aside_after
from dsg.core.errors import ManifestError
from dsg.core.manifest import Entry, Manifest, set_aside

NAMES = ["a", "b", "a.csv", "a-b", "a0", "b/c"]  # "a-b" and "a0" sort either side of "a/"


def entry(path: str, rng: random.Random) -> Entry:
    if rng.random() < 0.1:
        return Entry(path, target="x")
    return Entry(path, rng.randrange(100), rng.randrange(10**9), rng.randbytes(16), None, 1, "u")


def random_paths(rng: random.Random, n: int) -> set[str]:
    out: set[str] = set()
    for _ in range(n):
        out.add("/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 4))))
    return out


def valid_parent(rng: random.Random) -> Manifest:
    """A manifest with no clash: leaves that are nobody's directory."""
    paths = sorted(random_paths(rng, 30))
    dirs = {p[:i] for p in paths for i in range(len(p)) if p[i] == "/"}
    return Manifest.from_entries([entry(p, rng) for p in paths if p not in dirs], "s1")


def reference(parent: Manifest, changes: list[Change], snap: int, user: str) -> Manifest:
    by_path = {c.path: c for c in changes}
    out = [e for e in parent.entries if e.path not in by_path]
    out += [c.entry.with_attribution(snap, user) for c in by_path.values() if c.entry]
    return Manifest.from_entries(out, f"s{snap}")


def outcome(fn) -> object:
    try:
        m = fn()
    except ManifestError as e:
        return ("refused", "file or link" in e.message or "duplicate" in e.message)
    rows = [(e.path, e.size, e.hash, e.target, e.snap, e.user) for e in m.entries]
    return (rows, m.snapshot, m.paths == [e.path for e in m.entries])


@pytest.mark.parametrize("seed", range(300))
def test_agrees_with_building_the_manifest_anew(seed: int) -> None:
    rng = random.Random(seed)
    parent = valid_parent(rng)
    existing = [e.path for e in parent.entries]
    changes = []
    for _ in range(rng.randint(0, 6)):
        kind = rng.random()
        if kind < 0.3 and existing:
            changes.append(Change(rng.choice(existing), None))  # a deletion
        elif kind < 0.6 and existing:
            p = rng.choice(existing)
            changes.append(Change(p, entry(p, rng)))  # a new version
        else:
            p = rng.choice(sorted(random_paths(rng, 1)))
            changes.append(Change(p, entry(p, rng)))  # maybe new, maybe a clash
    got = outcome(lambda: apply_changes(parent, changes, 2, "bob"))
    assert got == outcome(lambda: reference(parent, changes, 2, "bob"))


def test_a_clash_either_way_is_refused() -> None:
    rng = random.Random(1)
    parent = Manifest.from_entries([entry("a/b", rng), entry("c", rng)], "s1")
    with pytest.raises(ManifestError, match="'c' is a file or link but 'c/d' is inside it"):
        apply_changes(parent, [Change("c/d", entry("c/d", rng))], 2, "bob")
    with pytest.raises(ManifestError, match="'a' is a file or link but 'a/b' is inside it"):
        apply_changes(parent, [Change("a", entry("a", rng))], 2, "bob")
    # Deleting the file first makes room for the directory.
    m = apply_changes(parent, [Change("c", None), Change("c/d", entry("c/d", rng))], 2, "bob")
    assert m.paths == ["a/b", "c/d"]


# --- set_aside_after: what a spliced base sets aside, from the changes alone ------------------

ODD_NAMES = [*NAMES, ".hidden", "A", "B.csv", "x\u200by", "l"]  # hidden, case twins, invisible


TARGETS = ["x", "../a", "../../../etc/passwd", "/etc/passwd", "b/c", "l/x"]


def odd_entry(path: str, rng: random.Random) -> Entry:
    if rng.random() < 0.15:
        return Entry(path, target=rng.choice(TARGETS))
    return entry(path, rng)


def loaded(entries: list[Entry]) -> Manifest:
    """A manifest as a load makes it: its `suspect` found from its file."""
    m = Manifest(entries, "s1")
    return Manifest.from_bytes(m.to_bytes())


def odd_parent(rng: random.Random) -> Manifest:
    paths = set()
    for _ in range(rng.randint(1, 25)):
        paths.add("/".join(rng.choice(ODD_NAMES) for _ in range(rng.randint(1, 3))))
    dirs = {p[:i] for p in paths for i in range(len(p)) if p[i] == "/"}
    entries = [odd_entry(p, rng) for p in sorted(paths) if p not in dirs]
    try:
        return loaded(entries)
    except ManifestError:  # a link the load refuses: no parent is stored with one
        return loaded([e for e in entries if e.target is None])


@pytest.mark.parametrize("seed", range(600))
def test_set_aside_after_agrees_with_checking_the_result_whole(seed: int) -> None:
    rng = random.Random(seed)
    parent = odd_parent(rng) if rng.random() < 0.5 else loaded(valid_parent(rng).entries)
    if rng.random() < 0.6:  # without links, the changes alone may tell
        parent = loaded([e for e in parent.entries if e.target is None])
    existing = [e.path for e in parent.entries]
    changes = []
    for _ in range(rng.randint(0, 5)):
        kind = rng.random()
        if kind < 0.3 and existing:
            changes.append(Change(rng.choice(existing), None))
        elif kind < 0.8 and existing:
            p = rng.choice(existing)
            changes.append(Change(p, odd_entry(p, rng)))
        else:
            p = "/".join(rng.choice(ODD_NAMES) for _ in range(rng.randint(1, 3)))
            changes.append(Change(p, odd_entry(p, rng)))
    try:
        result = apply_changes(parent, changes, 2, "bob")
    except ManifestError:
        return
    known = set_aside_after(parent, changes, 2)
    if known is not None:
        assert known == set_aside(result)
        assert known == Manifest.from_bytes(result.to_bytes()).suspect


def test_set_aside_after_knows_the_common_case() -> None:
    rng = random.Random(7)
    parent = loaded([entry(f"t/input/f{i}.csv", rng) for i in range(10)])
    parent = loaded([e for e in parent.entries if e.target is None])  # links: checked whole
    edit = [Change("t/input/f3.csv", Entry("t/input/f3.csv", 5, 1, rng.randbytes(16)))]
    assert set_aside_after(parent, [*edit, Change("t/input/f4.csv", None)], 2) == {}
    added = [Change("t/input/F3.csv", Entry("t/input/F3.csv", 5, 1, rng.randbytes(16)))]
    assert set_aside_after(parent, added, 2) is None  # an added path may be a case twin
    link = [Change("t/input/f3.csv", Entry("t/input/f3.csv", target="f4.csv"))]
    assert set_aside_after(parent, link, 2) is None
    hidden = [Change("t/input/.f3", None)]
    assert set_aside_after(parent, hidden, 2) is None  # not the common case of a path
