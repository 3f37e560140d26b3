"""A project member with the write role (a careless colleague, or a stolen laptop key) against
the real agent: what they commit must never reach a colleague's machine outside the data
dirs, delete the project, flood the audit log, or pass for someone else's work.
Each test reproduces one defect of dsg 0.5.0 (issue 19) and shows it refused now."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from dsg.core.manifest import SnapshotRecord
from tests.security.agentpeer import ME, Host, tree_outside_data

A = "task1/input/a.csv"


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    h = Host(tmp_path / "host")
    monkeypatch.setenv("DSG_SSH_COMMAND", str(h.fake_ssh))
    h.grant("proj", "write")
    return h


@pytest.fixture
def team(host: Host):
    """ana made the project through the agent (so it records its shape); ben cloned it."""
    ana = host.researcher("ana")
    ana.write(A, "a\n")
    ana.write("task1/output/r.txt", "r\n")
    ana.init("first")
    ben = host.researcher("ben")
    ben.write("Makefile", "all:\n\techo ben's own\n")  # ben's code, outside the data dirs
    ben.path(".git").mkdir()
    ben.write(".git/config", "[core]\n\tbare = false\n")
    ben.clone()
    return ana, ben


OUTSIDE = [
    ".git/config",
    ".dsgconfig.yml",
    "Makefile",
    ".dsg/base.manifest.gz",
    "task1/src/clean.py",  # a directory that is not a data dir
    "task1/input/.hidden",
    "task1/.git/hooks/post-checkout",
]


@pytest.mark.parametrize("path", OUTSIDE)
def test_the_agent_refuses_paths_outside_the_projects_shape(team, host: Host, path: str) -> None:
    repo = host.repo()
    head = repo.head()
    peer = host.session()
    peer.begin(head)
    resp = peer.put_file(path, b"[core]\n\tfsmonitor = touch /tmp/pwned\n")
    assert resp["ok"] is False, resp
    assert resp["error"]["kind"] in ("path", "protocol"), resp
    assert peer.call({"op": "abort"})["ok"]  # the session goes on after a refusal
    peer.close()
    assert repo.head() == head
    assert all(not p.startswith(".") for p in repo.manifest(head).paths)


def test_a_link_put_outside_the_shape_is_refused_too(team, host: Host) -> None:
    peer = host.session()
    peer.begin(host.repo().head())
    resp = peer.call({"op": "put_link", "path": "Makefile", "target": "task1/input/a.csv"})
    assert resp["ok"] is False and "outside" in resp["error"]["message"]
    peer.close()


def test_a_legacy_repository_without_a_shape_cannot_reach_a_colleagues_code(host: Host) -> None:
    """A repository made before shapes were recorded accepts what the old rules accepted;
    the colleague's dsg still applies nothing outside its own data dirs, and says so."""
    peer = host.session()
    assert peer.call({"op": "create"})["ok"]  # an old client: no shape
    peer.begin(None)
    assert peer.put_file(A, b"a\n")["ok"]
    assert peer.commit()["ok"]
    peer.close()
    ben = host.researcher("ben")
    ben.write("Makefile", "all:\n\techo mine\n")
    ben.clone()
    before = tree_outside_data(ben.root)

    mallory = host.session()
    mallory.begin("s1")
    for path in ("Makefile", "task1/src/clean.py"):
        assert mallory.put_file(path, b"evil\n")["ok"]  # the old rules let these in
    assert mallory.commit()["ok"]
    mallory.close()

    result = ben.sync()
    assert sorted(result.plan.untracked) == ["Makefile", "task1/src/clean.py"]
    assert tree_outside_data(ben.root) == before
    out = ben.cli("status")
    assert "not synced here" in out.stdout and "Makefile" in out.stdout
    checked = orjson.loads(ben.cli("validate-snapshot", "--json").stdout)
    assert checked["outside_shape"] == [] and checked["outside_shape_count"] == 0  # no shape,
    # no hidden names: the legacy repository's paths are reported only by a colleague's rules


def test_a_colleagues_copy_is_byte_identical_outside_its_data_dirs_after_a_sync(
    team, host: Host
) -> None:
    _, ben = team
    before = tree_outside_data(ben.root)
    mallory = host.session()
    mallory.begin(host.repo().head())
    refused = [p for p in OUTSIDE if not mallory.put_file(p, b"evil\n")["ok"]]
    assert refused == OUTSIDE
    assert mallory.put_file("task1/input/b.csv", b"b\n")["ok"]  # a legitimate change
    assert mallory.commit()["ok"]
    mallory.close()
    ben.sync()
    assert ben.read("task1/input/b.csv") == b"b\n"
    assert tree_outside_data(ben.root) == before


def test_a_changed_data_dirs_is_not_a_deletion(team, host: Host) -> None:
    """A typo in data_dirs (issue 20): the files it drops are reported, never deleted from
    the repository nor, through it, from colleagues' copies."""
    ana, ben = team
    ana.config = ana.config.model_copy(update={"data_dirs": ["inputt", "output"]})
    (ana.root / ".dsgconfig.yml").write_text(ana.config.to_yaml())
    result = ana.sync()
    assert result.committed is None
    assert A in result.plan.untracked
    assert A in host.repo().manifest(host.repo().head()).paths
    ben.sync()
    assert ben.read(A) == b"a\n"


def test_case_twins_are_refused_at_the_agent(team, host: Host) -> None:
    peer = host.session()
    peer.begin(host.repo().head())
    resp = peer.put_file("task1/input/A.csv", b"twin\n")
    assert resp["ok"] is False and "letter case" in resp["error"]["message"]
    # within one transaction too
    assert peer.put_file("task1/input/New.csv", b"1\n")["ok"]
    assert peer.put_file("task1/input/new.csv", b"2\n")["ok"] is False
    # a rename by case (delete the old, put the new) is fine
    assert peer.call({"op": "delete", "path": A})["ok"]
    assert peer.put_file("task1/input/A.csv", b"renamed\n")["ok"]
    assert peer.commit()["ok"]
    peer.close()


def test_destroy_new_from_another_session_is_refused(team, host: Host) -> None:
    repo = host.repo()
    assert repo.head() == "s1"
    peer = host.session()
    resp = peer.call({"op": "destroy_new"})
    assert resp["ok"] is False and resp["error"]["kind"] == "permission_denied"
    peer.begin("s1")  # even under the lock
    assert peer.call({"op": "destroy_new"})["ok"] is False
    peer.close()
    assert repo.exists() and repo.head() == "s1"


def test_destroy_new_undoes_only_the_creating_sessions_own_init(host: Host) -> None:
    host.grant("fresh", "write")
    peer = host.session("fresh")
    assert peer.call({"op": "create"})["ok"]
    peer.begin(None)
    assert peer.put_file(A, b"a\n")["ok"]
    assert peer.commit()["ok"]
    assert peer.call({"op": "destroy_new"})["ok"]  # its own s1, under its lock
    peer.close()
    assert not host.repo("fresh").exists()
    audit = b"".join(f.read_bytes() for f in host.logs.glob("audit*") if f.is_file())
    assert b"project.destroy-new" in audit


@pytest.mark.parametrize("field", ["client", "repo_path"])
def test_oversized_hello_fields_are_refused_and_the_audit_log_stays_bounded(
    team, host: Host, field: str
) -> None:
    before = host.audit_bytes()
    peer = host.session(**{field: "A" * 500_000})
    assert peer.hello["ok"] is False
    assert peer.hello["error"]["kind"] == "protocol"
    peer.close()
    assert host.audit_bytes() - before < 4096


def test_the_authenticated_login_is_recorded_beside_the_claimed_author(team, host: Host) -> None:
    _, ben = team
    peer = host.session()
    peer.begin("s1")
    assert peer.put_file("task1/input/b.csv", b"b\n")["ok"]
    resp = peer.commit(message="fix\x1b]0;owned\x07\x1b[2K typo", author="director@hrdag.org")
    assert resp["ok"], resp
    peer.close()
    rec = SnapshotRecord.from_dict(resp["record"])
    assert rec.login == ME and rec.author == "director@hrdag.org"
    assert rec.message == "fix typo"
    assert host.repo().record("s2").expected_chain(host.repo().record("s1").chain) == rec.chain
    out = ben.cli("log")
    assert out.returncode == 0, out.stderr
    assert f"login {ME}" in out.stdout and "\x1b" not in out.stdout
    doc = orjson.loads(ben.cli("log", "--json").stdout)
    assert doc["snapshots"][0]["login"] == ME


def test_a_silent_lock_holder_is_cut_off(team, host: Host) -> None:
    host.limits = {"lock_idle_seconds": 1}
    host.grant("proj", "write")
    peer = host.session()
    peer.begin("s1")
    assert peer.put_file("task1/input/b.csv", b"b\n")["ok"]
    time.sleep(2.5)
    assert peer.proc.wait(timeout=10) == 1
    peer.close()
    audit = "".join(f.read_text() for f in host.logs.glob("audit*") if f.is_file())
    assert "lock.idle-timeout" in audit
    other = host.session()
    other.begin("s1")  # the lock is free again, and nothing was left staged
    other.close()
    assert not any((host.top / "repos" / "proj" / "txn").iterdir())


def test_uploads_per_transaction_are_capped(team, host: Host) -> None:
    host.limits = {"max_uploads": 2, "max_staged_bytes": 10}
    host.grant("proj", "write")
    peer = host.session()
    peer.begin("s1")
    assert peer.put_file("task1/input/b.csv", b"b\n")["ok"]
    big = peer.put_file("task1/input/big.csv", b"x" * 20)
    assert big["ok"] is False and "max_staged_bytes" in big["error"]["hint"]
    assert peer.put_file("task1/input/c.csv", b"c\n")["ok"]
    third = peer.put_file("task1/input/d.csv", b"d\n")
    assert third["ok"] is False and "max_uploads" in third["error"]["hint"]
    peer.close()


def test_a_read_member_cannot_write_anything(team, host: Host) -> None:
    host.grant("proj", "read")
    peer = host.session()
    for msg in ({"op": "create"}, {"op": "destroy_new"},
                {"op": "lock", "owner": {"user": "x@y.org", "tx": "tx-abcdef"}, "timeout": 1}):  # fmt: skip
        resp = peer.call(msg)
        assert resp["ok"] is False and resp["error"]["kind"] == "permission_denied", resp
    peer.close()
    assert host.repo().head() == "s1"


def test_an_admin_records_the_shape_of_a_legacy_repository(host: Host) -> None:
    """`dsg admin set-shape` on the host closes the legacy gap; a member cannot widen it."""
    import subprocess

    from tests.helpers import DSG

    peer = host.session()
    assert peer.call({"op": "create"})["ok"]  # made by an old client: no shape
    peer.begin(None)
    assert peer.put_file("Makefile", b"committed before the shape\n")["ok"]
    assert peer.commit()["ok"]
    peer.close()

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DSG, "admin", "set-shape", "proj", "--access-file", str(host.access_file),
             "--log-dir", str(host.logs), "--json", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    shown = orjson.loads(admin().stdout)
    assert shown["shape"] is None
    done = admin("--data-dir", "input", "--data-dir", "output")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["shape"]["data_dirs"] == ["input", "output"]
    assert b"project.set-shape" in (host.logs / "audit.jsonl").read_bytes()
    bad = admin("--data-dir", "../x")
    assert bad.returncode == 1 and "not a plain directory name" in bad.stdout

    from dsg.admin.validate import validate_snapshot

    assert validate_snapshot(host.repo(), "s1", None).outside_shape == ["Makefile"]
    mallory = host.session()
    mallory.begin("s1")
    assert mallory.put_file("Makefile", b"evil\n")["ok"] is False
    assert mallory.put_file("task1/frozen/x.csv", b"x\n")["ok"] is False  # not in this shape
    assert mallory.put_file(A, b"a\n")["ok"]
    mallory.close()


def test_a_repository_dsg_creates_is_closed_to_others(team, host: Host) -> None:
    """Only the project's group enters a repository the agent created (a read group gets in
    by the ACL dsg_access sets on a mountpoint the admin made)."""
    import stat

    mode = stat.S_IMODE((host.top / "repos" / "proj").stat().st_mode)
    assert mode & 0o007 == 0, oct(mode)
    assert mode & 0o070 == 0o070 and mode & stat.S_ISGID


def test_a_local_repository_takes_nothing_outside_its_shape_either(tmp_path: Path) -> None:
    """Without an agent in between, the client keeps to the repository's shape: a data dir
    one member adds to their own .dsgconfig.yml is not uploaded, and says why."""
    from tests.helpers import Researcher, project_config

    (tmp_path / "repos").mkdir()
    ana = Researcher("ana", tmp_path / "ana" / "proj", tmp_path / "cfg",
                     project_config("proj", tmp_path / "repos"))  # fmt: skip
    ana.write(A, "a\n")
    ana.init("first")
    ana.config = ana.config.model_copy(update={"data_dirs": ["input", "output", "frozen", "raw"]})
    (ana.root / ".dsgconfig.yml").write_text(ana.config.to_yaml())
    ana.write("task1/raw/secret.csv", "x\n")
    result = ana.sync()
    assert result.committed is None
    assert result.plan.untracked == ["task1/raw/secret.csv"]
    assert "task1/raw/secret.csv" not in ana.repo.manifest(ana.repo.head()).paths
