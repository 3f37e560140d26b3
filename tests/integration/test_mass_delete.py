"""The mass-delete guard, on both sides: an `rm -rf` here must not empty the repository, and a
colleague's must not empty this copy, without --allow-mass-delete. Limits from .dsgconfig.yml."""

from __future__ import annotations

import json
import shutil

import pytest

from dsg.core.errors import EXIT_MASS_DELETE, MassDelete
from dsg.core.plan import Action
from dsg.workcopy.config import ProjectConfig, SafetyRules, load_project_config
from tests.helpers import Researcher

N = 60  # over the default count (50) and, of 63 files, over the default share (20%)


@pytest.fixture
def big_team(make_researcher):
    alice = make_researcher("alice")
    for i in range(N):
        alice.write(f"task1/input/big/f{i:03}.csv", f"{i}\n")
    alice.write("task1/output/keep.txt", "k\n")
    alice.write("task2/input/keep.csv", "k\n")
    alice.write("task2/output/keep.csv", "k\n")
    alice.init()
    bob = make_researcher("bob")
    bob.clone()
    return alice, bob


def test_rm_rf_here_stops_before_the_repository_loses_the_files(big_team) -> None:
    alice, _ = big_team
    shutil.rmtree(alice.path("task1/input/big"))
    head = alice.repo.head()
    with pytest.raises(MassDelete) as exc:
        alice.sync()
    msg = exc.value.message
    assert f"delete {N} of the {N + 3} files in the repository" in msg
    assert msg.startswith("this sync would delete")
    assert "all in task1/input/big/;" in msg and "task1/input/big/f000.csv" in msg
    assert "missing from this working copy" in msg
    d = exc.value.details["deletions"][0]
    assert d["side"] == "remote" and d["count"] == N and d["total"] == N + 3
    assert alice.repo.head() == head  # nothing committed
    # status says so before any sync is tried, as text and as JSON
    proc = alice.cli("status")
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert "'dsg sync' would stop here (mass-delete guard)" in said, said
    assert f"delete {N} of the {N + 3} files in the repository" in said
    proc = alice.cli("status", "--json")
    guard = json.loads(proc.stdout)["mass_delete"]
    assert guard["kind"] == "mass_delete" and guard["details"]["deletions"][0]["count"] == N
    # the fix it suggests: restore brings them back, and there is nothing to sync
    proc = alice.cli("restore", "task1/input/big", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(json.loads(proc.stdout)["restored"]) == N
    assert alice.sync().plan.is_noop
    assert "mass_delete" not in json.loads(alice.cli("status", "--json").stdout)


def test_allow_mass_delete_commits_and_the_receiver_is_guarded_too(big_team) -> None:
    alice, bob = big_team
    shutil.rmtree(alice.path("task1/input/big"))
    res = alice.sync(allow_mass_delete=True)
    assert res.committed is not None and len(res.plan.by_action(Action.delete_remote)) == N
    assert len(alice.repo.manifest(res.committed.id)) == 3
    # Bob's copy would lose 60 of its 63 files: his sync stops too, and changes nothing
    proc = bob.cli("sync", "--json")
    assert proc.returncode == EXIT_MASS_DELETE == 4, proc.stdout + proc.stderr
    err = json.loads(proc.stdout)["error"]
    assert err["kind"] == "mass_delete"
    assert "deleted in the repository" in err["message"]
    assert err["details"]["deletions"][0]["side"] == "local"
    assert bob.path("task1/input/big/f000.csv").exists()
    human = bob.cli("sync")
    assert human.returncode == 4 and "--allow-mass-delete" in human.stderr
    # with the flag, he takes the deletion
    proc = bob.cli("sync", "--allow-mass-delete", "--json")
    assert proc.returncode == 0, proc.stdout
    assert not bob.path("task1/input/big").exists() or not any(
        bob.path("task1/input/big").iterdir()
    )


def test_below_either_limit_there_is_no_question(big_team) -> None:
    alice, _ = big_team
    for i in range(50):  # 50 is not more than 50
        alice.delete(f"task1/input/big/f{i:03}.csv")
    assert len(alice.sync().plan.by_action(Action.delete_remote)) == 50


def test_limits_come_from_the_project_config(big_team, tmp_path) -> None:
    alice, _ = big_team
    cfg = alice.root / ".dsgconfig.yml"
    text = cfg.read_text() + "safety:\n  max_delete_count: 5\n  max_delete_share: 0.05\n"
    cfg.write_text(text)
    loaded = load_project_config(cfg)
    assert loaded.safety == SafetyRules(max_delete_count=5, max_delete_share=0.05)
    for i in range(6):
        alice.delete(f"task1/input/big/f{i:03}.csv")
    alice.config = loaded  # the in-process researcher reads its config object
    with pytest.raises(MassDelete):
        alice.sync()
    proc = alice.cli("sync", "--json")  # the CLI reads the file
    assert (
        proc.returncode == 4
        and json.loads(proc.stdout)["error"]["details"]["max_delete_count"] == 5
    )
    # the defaults are not written out; a bad limit is a config error naming the field
    assert "safety" not in ProjectConfig(name="p", repository=alice.config.repository).to_yaml()
    cfg.write_text(text.replace("0.05", "1.5"))
    proc = alice.cli("status", "--json")
    assert proc.returncode == 1 and "max_delete_share" in proc.stdout


def test_a_small_project_can_be_emptied_without_the_flag(make_researcher) -> None:
    """Count AND share: deleting all of 10 files is not 'more than 50'."""
    alice: Researcher = make_researcher("alice")
    for i in range(10):
        alice.write(f"task1/input/f{i}.csv", f"{i}\n")
    alice.init()
    shutil.rmtree(alice.path("task1/input"))
    assert alice.sync().committed is not None
