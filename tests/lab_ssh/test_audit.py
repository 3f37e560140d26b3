"""The server's audit trail, written by real agents over the lab sshd."""

from __future__ import annotations

import grp
import json
import os
import subprocess
from pathlib import Path

import pytest

from dsg.core.errors import DsgError
from tests.helpers import empty_stored_object
from tests.lab_ssh.space import AGENT, A, repo_on_disk

pytestmark = pytest.mark.ssh


def audit_records(space) -> list[dict]:
    path = space.base / "logs" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def provision_like_the_role(space) -> Path:
    """What roles/dsg_server does: root:<group> 0620, append-only."""
    path = space.base / "logs" / "audit.jsonl"
    path.touch()
    os.chown(path, 0, grp.getgrnam(space.lab.group).gr_gid)
    path.chmod(0o620)
    proc = subprocess.run(["chattr", "+a", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"chattr +a is not supported here: {proc.stderr.strip()}")
    return path


def release(path: Path) -> None:
    subprocess.run(["chattr", "-a", str(path)], check=False)


def test_denied_attempt_sync_and_clone_are_audited_without_contents(ssh_space) -> None:
    ssh_space.grant("proj", alice="write", bob="write", carol="read")
    audit = provision_like_the_role(ssh_space)
    try:
        alice = ssh_space.researcher("alice")
        alice.write(A, "SECRET-CONTENT-7f3a\n")
        alice.write("task1/input/secret-name-91c2.csv", "x\n")
        alice.init("first")
        bob = ssh_space.researcher("bob")
        bob.clone()
        bob.write("task1/output/bob.txt", "bob\n")
        bob.sync(message="bob's change")

        # carol may read: her attempt to write is denied and audited
        carol = ssh_space.researcher("carol")
        carol.clone()
        carol.write(A, "carol\n")
        with pytest.raises(DsgError, match="read access"):
            carol.sync()
        # dave has no access at all (he is not even a lab user: use bob's key on another
        # project instead, which bob has no role in)
        ssh_space.grant("other", alice="admin")
        stranger = ssh_space.researcher("bob", project="other", name="bob-other")
        assert stranger.cli("clone", "--json").returncode == 1

        recs = audit_records(ssh_space)
        commits = [r for r in recs if r["action"] == "sync.commit"]
        assert [(c["login"], c["snapshot"], c.get("parent")) for c in commits] == [
            ("alice", "s1", None),
            ("bob", "s2", "s1"),
        ]
        assert commits[1]["files_put"] == 1 and commits[1]["bytes_in"] == len("bob\n")
        assert all(c["project"] == "proj" and c["tx"].startswith("tx-") for c in commits)

        denied = [r for r in recs if r["action"] == "access.denied"]
        assert {(d["login"], d["project"], d["request"]) for d in denied} >= {
            ("carol", "proj", "lock"),
            ("bob", "other", "hello"),
        }
        assert all(d["client"] == "127.0.0.1" for d in denied)

        closes = [r for r in recs if r["action"] == "session.close" and r["login"] == "carol"]
        assert any(c["files_read"] == 3 and "s2" in c["snapshots_read"] for c in closes), closes
        opens = {r["login"] for r in recs if r["action"] == "session.open"}
        assert opens == {"alice", "bob", "carol"}

        text = audit.read_text()
        assert "SECRET-CONTENT" not in text and "secret-name" not in text

        # per-transaction metrics come from the same records
        proc = subprocess.run(
            [str(AGENT), "admin", "metrics", "--access-file", str(ssh_space.access_file),
             "--audit-log", str(audit)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert 'dsg_transactions_total{project="proj",outcome="committed"} 2' in lines
        assert 'dsg_access_denied_total{project="proj"} 1' in lines
        assert 'dsg_access_denied_total{project="other"} 1' in lines
        assert 'dsg_transaction_files_changed_total{project="proj"} 3' in lines
    finally:
        release(audit)


def test_audit_log_is_append_only_for_researchers(ssh_space, ssh_team) -> None:
    audit = provision_like_the_role(ssh_space)
    try:
        alice, _ = ssh_team
        alice.write(A, "v2\n")
        alice.sync()
        before = audit.read_bytes()
        assert b'"action":"sync.commit"' in before
        for attempt in (": > {f}", "echo forged > {f}", "rm -f {f}", "cat {f}"):
            proc = subprocess.run(
                ["runuser", "-u", "alice", "--", "sh", "-c", attempt.format(f=audit)],
                capture_output=True,
                text=True,
            )
            assert proc.returncode != 0, f"alice could run {attempt!r} on the audit log"
        assert audit.read_bytes() == before
    finally:
        release(audit)


def test_unwritable_audit_log_refuses_the_session_and_moves_nothing(ssh_space, ssh_team) -> None:
    _, bob = ssh_team
    audit = ssh_space.base / "logs" / "audit.jsonl"
    assert audit.exists()  # created by the first agent (an unprovisioned log directory)
    head = repo_on_disk(ssh_space).head()
    audit.chmod(0o600)  # e.g. a botched manual rotation: root-only
    os.chown(audit, 0, 0)
    bob.write("task1/output/new.txt", "new\n")
    proc = bob.cli("sync", "--json")
    assert proc.returncode == 1, proc.stdout
    err = json.loads(proc.stdout)["error"]
    assert "cannot write the audit log" in err["message"]
    assert "0620" in err["hint"]
    assert repo_on_disk(ssh_space).head() == head
    # fixed by the admin: the same sync goes through
    os.chown(audit, 0, grp.getgrnam(ssh_space.lab.group).gr_gid)
    audit.chmod(0o620)
    bob.sync()
    assert repo_on_disk(ssh_space).head() != head


def test_a_replaced_damaged_object_is_reported(ssh_space, ssh_team) -> None:
    """A commit that replaces a stored object which no longer hashed to its name says so:
    a warning in the agent's log (with the object) and a count in the audit trail."""
    audit = provision_like_the_role(ssh_space)
    try:
        _, bob = ssh_team
        content = bob.read(A)
        obj = empty_stored_object(repo_on_disk(ssh_space).root, content)
        bob.write("task1/input/same-again.csv", content)
        bob.sync(message="the same content again")
        assert obj.read_bytes() == content
        replaced = [r for r in audit_records(ssh_space) if r["action"] == "repo.objects-replaced"]
        assert [(r["login"], r["count"]) for r in replaced] == [("bob", 1)]
        logs = b"".join(p.read_bytes() for p in (ssh_space.base / "logs").iterdir() if p != audit)
        assert b"damaged-objects-replaced" in logs and obj.name.encode() in logs
    finally:
        release(audit)
