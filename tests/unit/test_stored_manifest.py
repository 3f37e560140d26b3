"""StoredManifest: a commit's manifest spliced from the parent's lines is byte for byte the
one apply_changes serializes, refuses the same shapes, and a damaged file is an error."""

from __future__ import annotations

import gzip
import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsg.core.changes import Change, apply_changes
from dsg.core.errors import ManifestError
from dsg.core.manifest import Entry, Manifest
from dsg.core.stored import StoredManifest

# Names that sort around "/" ("a b", "a.csv", "a-x" sort before "a/x"; "a0" after) and
# that are files in some manifests and directories in others.
NAMES = ["t/a", "t/a b", "t/a.csv", "t/a/x", "t/a/y/z", "t/a0", "t/b", "t/b/c", "t/é", "u"]
HASHES = [bytes([i]) * 16 for i in range(3)]


@st.composite
def entries_for(draw: st.DrawFn, path: str, snap: int) -> Entry:
    if draw(st.booleans()):
        return Entry(path, 0, 0, None, draw(st.sampled_from(["a.csv", "b"])), snap, "bob@x.org")
    size = draw(st.integers(0, 10**12))
    return Entry(
        path,
        size,
        draw(st.integers(0, 2**62)),
        draw(st.sampled_from(HASHES)),
        None,
        snap,
        "bob@x.org",
    )


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    chosen = draw(st.sets(st.sampled_from(NAMES)))
    entries = [draw(entries_for(p, 2)) for p in sorted(chosen)]
    try:
        return Manifest.from_entries(entries, "s2")
    except ManifestError:  # a file that is also a directory: keep the files only
        leaves = [e for e in entries if not any(o.path.startswith(e.path + "/") for o in entries)]
        return Manifest.from_entries(leaves, "s2")


@st.composite
def change_lists(draw: st.DrawFn) -> list[Change]:
    out = []
    for p in draw(st.lists(st.sampled_from(NAMES), max_size=6)):
        entry = None if draw(st.booleans()) else draw(entries_for(p, 0))
        out.append(Change(p, entry))
    return out


def vouched_for(body: bytes) -> StoredManifest:
    """Entry lines as a file whose header's count and digest vouch for them, whatever
    they hold."""
    header = {"format": "dsg-manifest/1", "snapshot": "s1", "count": body.count(b"\n")}
    header["digest"] = hashlib.sha256(body).hexdigest()
    return StoredManifest.from_bytes(gzip.compress(orjson.dumps(header) + b"\n" + body))


def stored(m: Manifest) -> StoredManifest:
    return StoredManifest.from_bytes(m.to_bytes(), origin="test manifest")


@settings(max_examples=400, deadline=None)
@given(manifests(), change_lists())
def test_splice_is_apply_changes(parent: Manifest, changes: list[Change]) -> None:
    try:
        want = apply_changes(parent, changes, 3, "alice@x.org")
    except ManifestError as e:
        assert "is a file or link but" in str(e)
        last = {c.path: c for c in changes}
        with pytest.raises(ManifestError, match="is a file or link but"):
            stored(parent)._spliced(last, 3, "alice@x.org")
        with pytest.raises(ManifestError, match="is a file or link but"):
            stored(parent)._rebuilt(changes, 3, "alice@x.org")
        return
    s = stored(parent)
    last = {c.path: c for c in changes}
    # both ways `edit` takes: splicing lines (a few changes) and rebuilding (many)
    for new, delta in (s._spliced(last, 3, "alice@x.org"), s._rebuilt(changes, 3, "alice@x.org")):
        assert new.body == want.body()
        assert new.digest == want.digest()
        assert len(new) == len(want)
        assert new.snapshot == want.snapshot == "s3"
        assert delta == want.total_bytes() - parent.total_bytes()
        # the file form reads back as the same manifest
        back = Manifest.from_bytes(new.to_bytes())
        assert [e.row() for e in back] == [e.row() for e in want]


@settings(max_examples=200, deadline=None)
@given(manifests(), st.sampled_from([*NAMES, "", "t", "t/", "zz", "t/a/"]))
def test_get_finds_exactly_the_entry(m: Manifest, path: str) -> None:
    got = stored(m).get(path)
    want = m.get(path)
    assert (got.row() if got else None) == (want.row() if want else None)


def test_an_initial_upload_is_rebuilt_and_a_few_changes_spliced() -> None:
    m = Manifest([Entry(f"d/f{i:05}", 1, 1, HASHES[0]) for i in range(10_000)], "s1")
    s = stored(m)
    many = [Change(f"e/g{i:05}", Entry(f"e/g{i:05}", 2, 1, HASHES[1])) for i in range(5_000)]
    new, delta = s.edit(many, 2, "a@x.org")
    assert len(new) == 15_000 and delta == 10_000
    assert new.body == apply_changes(m, many, 2, "a@x.org").body()


def test_a_manifest_of_many_lines_is_searched_not_parsed() -> None:
    entries = [Entry(f"d{i // 100:04}/f{i:06}", i, i, HASHES[i % 3]) for i in range(20_000)]
    m = Manifest(entries, "s1")
    s = stored(m)
    assert s.get("d0150/f015042").size == 15042  # type: ignore[union-attr]
    assert s.get("d0150/f015042x") is None
    new, delta = s.edit(
        [Change("d0150/f015042", None), Change("d0150/new", Entry("d0150/new", 7, 1, HASHES[0]))],
        2,
        "a@x.org",
    )
    assert len(new) == 20_000 and delta == 7 - 15042
    assert (
        new.body
        == apply_changes(
            m,
            [
                Change("d0150/f015042", None),
                Change("d0150/new", Entry("d0150/new", 7, 1, HASHES[0])),
            ],
            2,
            "a@x.org",
        ).body()
    )


def test_a_damaged_file_is_an_error_never_empty() -> None:
    m = Manifest([Entry("a", 1, 1, HASHES[0]), Entry("b", 2, 2, HASHES[1])], "s1")
    raw = gzip.decompress(m.to_bytes())
    header, body = raw.split(b"\n", 1)
    with pytest.raises(ManifestError, match="digest"):
        StoredManifest.from_bytes(gzip.compress(header + b"\n" + body.replace(b'"a"', b'"c"')))
    h = orjson.loads(header)
    h["count"] = 3
    with pytest.raises(ManifestError, match="count"):
        StoredManifest.from_bytes(gzip.compress(orjson.dumps(h) + b"\n" + body))
    with pytest.raises(ManifestError):
        StoredManifest.from_bytes(b"not gzip")
    # a line that is not an entry, with a digest that vouches for it: found when searched
    s = vouched_for(b'{"x": 1}\n' + body)
    with pytest.raises(ManifestError, match="malformed entry"):
        s.get("a")


def test_an_entry_with_a_hostile_path_is_refused_where_it_is_read() -> None:
    s = vouched_for(orjson.dumps(["../etc/passwd", "f", 1, 1, "00" * 16, 1, "x"]) + b"\n")
    with pytest.raises(ManifestError):
        s.get("../etc/passwd")
