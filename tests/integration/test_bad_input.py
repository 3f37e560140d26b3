"""Bad names in a working copy: a clear error naming them, and nothing changes."""

from __future__ import annotations

import json
import os
import unicodedata

import pytest

from dsg.core.errors import PathError, ScanBlocked
from tests.helpers import manifest_content, tree_content

# Name checks happen in the scanner, before any backend is involved.
pytestmark = pytest.mark.parametrize("backend", ["posix"])


def blocked(r, needle: str) -> None:
    before_head = r.repo.head()
    before = tree_content(r.root)
    with pytest.raises(ScanBlocked) as e:
        r.sync()
    assert needle in e.value.message
    assert r.repo.head() == before_head
    assert tree_content(r.root) == before
    proc = r.cli("sync", "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["error"]["kind"] == "scan_blocked"


def test_non_nfc_name_is_refused(team) -> None:
    _, bob = team
    nfd = unicodedata.normalize("NFD", "task1/input/café.csv")
    bob.write(nfd, "x")
    blocked(bob, "NFC")


def test_case_only_twins_are_refused(team) -> None:
    _, bob = team
    bob.write("task1/input/Data.csv", "1")
    bob.write("task1/input/data.csv", "2")
    blocked(bob, "letter case")


@pytest.mark.parametrize("target", ["../../../etc/passwd", "/etc/passwd", "../../.."])
def test_escaping_symlinks_are_refused_with_a_message(team, target: str) -> None:
    _, bob = team
    bob.link("task1/input/evil", target)
    blocked(bob, "task1/input/evil")


def test_newline_in_name_is_refused_and_shown_escaped(team) -> None:
    _, bob = team
    bob.write("task1/input/two\nlines.csv", "x")
    blocked(bob, "two\\nlines.csv")


def test_spaces_quotes_and_unicode_sync_fine(team) -> None:
    alice, bob = team
    names = [
        "task1/input/with space.csv",
        'task1/input/it\'s "quoted".csv',
        "task1/input/$(touch pwned);`x`.csv",
        "task1/input/naïve – 東京.csv",
        "task1/input/-rf",
    ]
    for i, n in enumerate(names):
        bob.write(n, f"{i}\n")
    bob.sync()
    alice.sync()
    for i, n in enumerate(names):
        assert alice.read(n) == f"{i}\n".encode()
    assert not os.path.exists("pwned")
    assert manifest_content(alice.repo.manifest(alice.repo.head())) == tree_content(alice.root)


def test_internal_symlinks_are_kept_as_links(team) -> None:
    alice, bob = team
    bob.link("task1/output/latest.csv", "../input/a.csv")
    bob.link("task1/output/dangling", "../input/not-yet")
    bob.sync()
    alice.sync()
    assert os.readlink(alice.path("task1/output/latest.csv")) == "../input/a.csv"
    assert os.readlink(alice.path("task1/output/dangling")) == "../input/not-yet"


def test_ignore_rules_and_hidden_files(team) -> None:
    alice, _bob = team
    alice.config = alice.config.model_copy(
        update={
            "ignore": alice.config.ignore.model_copy(
                update={"paths": ["task1/input/private"], "names": ["scratch"]}
            )
        }
    )
    alice.write("task1/input/private/secret.csv", "s")
    alice.write("task1/input/scratch/tmp.csv", "s")
    alice.write("task1/input/x.tmp", "s")
    alice.write("task1/input/.hidden", "s")
    alice.write("task1/src/code.py", "c")
    plan = alice.status().plan
    assert [it.path for it in plan.items if it.action.value != "none"] == []


def test_file_where_repository_has_a_directory(team) -> None:
    alice, bob = team
    alice.write("task1/input/thing/inner.csv", "dir\n")
    alice.sync()
    bob.write("task1/input/thing", "file\n")
    with pytest.raises(PathError, match=r"thing/inner\.csv"):
        bob.sync()
    assert bob.read("task1/input/thing") == b"file\n"
    assert alice.repo.head() == "s2"


def test_bad_directory_name_inside_data_is_reported_once(team) -> None:
    _, bob = team
    bob.write("task1/input/bad\tdir/one.csv", "1")
    bob.write("task1/input/bad\tdir/two.csv", "2")
    with pytest.raises(ScanBlocked) as e:
        bob.sync()
    assert e.value.message.count("bad\\tdir") == 1
