"""Tags name snapshots and never move; on every backend and over the CLI."""

from __future__ import annotations

import json

import pytest


def test_tag_head_and_past_snapshot(team) -> None:
    alice, bob = team
    bob.write("task1/input/a.csv", "v2\n")
    bob.sync(message="v2")
    proc = alice.cli("tag", "v1.0", "-m", "first release", "--snapshot", "s1", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["snapshot"] == "s1"
    assert bob.cli("tag", "report-2026", "--json").returncode == 0  # the head
    doc = json.loads(bob.cli("tags", "--json").stdout)
    got = {t["name"]: (t["snapshot"], t["created_by"]) for t in doc["tags"]}
    assert got == {"v1.0": ("s1", "alice@hrdag.org"), "report-2026": ("s2", "bob@hrdag.org")}


@pytest.mark.parametrize("backend", ["posix"])
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["v1.0"], "never move"),
        (["Bad Name"], "invalid tag name"),
        (["x", "--snapshot", "s9"], "s9"),
    ],
)
def test_tag_errors(team, args, needle) -> None:
    alice, _ = team
    assert alice.cli("tag", "v1.0").returncode == 0
    proc = alice.cli("tag", *args, "--json")
    assert proc.returncode in (1, 2)
    assert needle in json.loads(proc.stdout)["error"]["message"]
    assert [t["name"] for t in json.loads(alice.cli("tags", "--json").stdout)["tags"]] == ["v1.0"]
