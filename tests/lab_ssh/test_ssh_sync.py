"""Researchers syncing over real SSH (the lab sshd) through the dsg agent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from dsg.core.errors import ConflictsBlocked, PermissionDenied
from tests.helpers import (
    manifest_content,
    tree_content,
)
from tests.lab_ssh.space import A, repo_on_disk

pytestmark = pytest.mark.ssh


def test_two_users_clone_status_sync(ssh_space, ssh_team) -> None:
    alice, bob = ssh_team
    assert tree_content(bob.root) == tree_content(alice.root)
    bob.write("task1/input/bob.csv", "bob\n")
    proc = bob.cli("sync", "-m", "bob over ssh", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["committed"]["id"] == "s2"
    alice.write(A, "alice v2\n")
    alice.sync(message="alice over ssh")
    bob.sync()
    assert tree_content(bob.root) == tree_content(alice.root)
    repo = repo_on_disk(ssh_space)
    assert repo.head() == "s3"
    assert manifest_content(repo.manifest("s3")) == tree_content(alice.root)
    log = json.loads(bob.cli("log", "--json").stdout)["snapshots"]
    assert [(s["id"], s["author"]) for s in log] == [
        ("s3", "alice@hrdag.org"),
        ("s2", "bob@hrdag.org"),
        ("s1", "alice@hrdag.org"),
    ]
    # files in the shared repository belong to the login that wrote them, group-shared
    st = (repo.snapshot_path("s2") / "task1/input/bob.csv").stat()
    assert st.st_uid == __import__("pwd").getpwnam("bob").pw_uid
    status = json.loads(alice.cli("status", "--json").stdout)
    assert status["remote_head"] == "s3" and status["counts"] == {"none": 3}
    # snapfetch over ssh
    out = ssh_space.tmp / "old-a.csv"
    proc = bob.cli("snapfetch", A, "--snapshot", "s1", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b"a\n"
    # history and integrity commands over ssh
    blame = json.loads(bob.cli("blame", A, "--json").stdout)
    assert [(v["snapshot"], v["event"], v["user"]) for v in blame["versions"]] == [
        ("s3", "modify", "alice@hrdag.org"),
        ("s1", "add", "alice@hrdag.org"),
    ]
    assert bob.cli("validate-snapshot", "--json").returncode == 0
    assert bob.cli("validate-chain", "--json").returncode == 0


def test_conflict_over_ssh(ssh_team) -> None:
    alice, bob = ssh_team
    alice.write(A, "alice\n")
    alice.sync()
    bob.write(A, "bob\n")
    with pytest.raises(ConflictsBlocked):
        bob.sync()
    bob.resolve(A, "local")
    bob.sync()
    alice.sync()
    assert alice.read(A) == b"bob\n"


def test_user_without_access_is_refused_before_data_moves(ssh_space, ssh_team) -> None:
    carol = ssh_space.researcher("carol")
    proc = carol.cli("clone", "--json")
    assert proc.returncode == 1
    err = json.loads(proc.stdout)["error"]
    assert err["kind"] == "permission_denied"
    assert "permission denied for project proj" in err["message"]
    assert tree_content(carol.root) == {}
    logs = (ssh_space.base / "logs" / "agent.jsonl").read_text()
    assert '"event":"denied"' in logs and '"login":"carol"' in logs


def test_read_only_user_can_clone_and_status_but_not_sync_up(ssh_space, ssh_team) -> None:
    ssh_space.grant("proj", carol="read")
    carol = ssh_space.researcher("carol")
    carol.clone()
    assert tree_content(carol.root)[A]
    assert carol.cli("status").returncode == 0
    carol.write(A, "carol's change\n")
    with pytest.raises(PermissionDenied, match="read access"):
        carol.sync()
    assert repo_on_disk(ssh_space).head() == "s1"
    assert carol.read(A) == b"carol's change\n"


def test_connection_starts_before_the_scan(ssh_space, ssh_team, monkeypatch) -> None:
    """sync and status start ssh (handshake, agent start) before scanning the working
    copy, so the two overlap; the hello's answer is read only at the first request."""
    from dsg.backends.ssh import SshRepository
    from dsg.workcopy import workspace

    _, bob = ssh_team
    seen: list[tuple[bool, bool]] = []
    real_scan = workspace.Workspace.scan

    def scan(self, *a, **kw):
        repo = opened[-1]
        seen.append((repo.proc is not None and repo.proc.poll() is None, repo._hello_pending))
        return real_scan(self, *a, **kw)

    opened: list[SshRepository] = []
    real_init = SshRepository.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        opened.append(self)

    monkeypatch.setattr(workspace.Workspace, "scan", scan)
    monkeypatch.setattr(SshRepository, "__init__", init)
    bob.write("task1/input/early.csv", "e\n")
    assert bob.sync(message="early connect").committed.id == "s2"
    assert bob.status().plan.counts() is not None
    assert seen == [(True, True), (True, True)]


def test_filesystem_error_on_the_host_is_reported_not_a_lost_connection(
    ssh_space, ssh_team
) -> None:
    """Permissions changed under the repository: the agent names the failure (instead of
    dying, which the client could only report as a lost connection), nothing is committed
    or lost, and the next sync after the repair goes through."""
    import os

    _, bob = ssh_team
    txn = ssh_space.base / "repos" / "proj" / "txn"
    bob.write("task1/input/blocked.csv", "b\n")
    st = txn.stat()
    os.chown(txn, 0, 0)
    txn.chmod(0o555)
    try:
        proc = bob.cli("sync", "-m", "blocked", "--json")
    finally:
        os.chown(txn, st.st_uid, st.st_gid)
        txn.chmod(st.st_mode & 0o7777)
    assert proc.returncode == 1, proc.stdout
    err = json.loads(proc.stdout)["error"]
    assert err["kind"] == "repository", err
    assert "Permission denied" in err["message"] and str(txn) in err["message"], err
    assert "permissions" in err["hint"]
    assert repo_on_disk(ssh_space).head() == "s1"
    assert bob.read("task1/input/blocked.csv") == b"b\n"
    assert bob.sync(message="after the repair").committed.id == "s2"


def test_unknown_host_key_stops_with_the_fingerprint(ssh_space, ssh_team, monkeypatch) -> None:
    _, bob = ssh_team
    empty = ssh_space.tmp / "empty_known_hosts"
    empty.write_text("")
    lab = ssh_space.lab
    monkeypatch.setenv(
        "DSG_SSH_COMMAND",
        f"ssh -F {lab.ssh_config} -o UserKnownHostsFile={empty} -o GlobalKnownHostsFile=/dev/null",
    )
    proc = bob.cli("status", "--json")
    assert proc.returncode == 1
    err = json.loads(proc.stdout)["error"]
    assert "host key" in err["message"] and "SHA256:" in err["message"]
    assert "ssh-keyscan" in err["hint"]


# --- hostile or broken clients talking straight to the agent ---------------------------------


def frame(kind: str, payload: bytes) -> bytes:
    import struct

    return struct.pack(">IB", len(payload), ord(kind)) + payload


def jframe(msg: dict) -> bytes:
    return frame("J", json.dumps(msg).encode())


def read_msgs(data: bytes) -> list[dict]:
    import struct

    out, i = [], 0
    while i + 5 <= len(data):
        n, k = struct.unpack(">IB", data[i : i + 5])
        if chr(k) == "J":
            out.append(json.loads(data[i + 5 : i + 5 + n]))
        i += 5 + n
    return out


def talk(space, login: str, payload: bytes, timeout: float = 30) -> list[dict]:
    proc = space.lab.run(login, space.agent_argv(), input=payload, text=False, timeout=timeout)
    return read_msgs(proc.stdout)


def hello(project: str = "proj", version: int = 1) -> bytes:
    return jframe({"op": "hello", "version": version, "project": project})


@pytest.mark.parametrize(
    "path",
    ["../../../../etc/passwd", "/etc/passwd", "task1/../../x", "task1/input/a.csv\n", "a//b"],
)
def test_agent_refuses_hostile_paths(ssh_space, ssh_team, path: str) -> None:
    msgs = talk(
        ssh_space, "alice", hello() + jframe({"op": "open_file", "snapshot": "s1", "path": path})
    )
    assert msgs[0]["ok"] is True
    assert msgs[1]["ok"] is False
    assert "root:" not in json.dumps(msgs)


def test_agent_refuses_hostile_writes_and_keeps_the_repository(ssh_space, ssh_team) -> None:
    owner = {"user": "alice@hrdag.org", "tx": "tx-abcdef12"}
    body = b"evil\n"
    import xxhash

    h = xxhash.xxh3_128_hexdigest(body)
    msgs = talk(
        ssh_space,
        "alice",
        hello()
        + jframe({"op": "lock", "owner": owner, "timeout": 5})
        + jframe({"op": "begin", "parent": "s1", "tx": "tx-abcdef12"})
        + jframe({"op": "put_file", "path": "../escape.csv", "size": 5, "mtime_ns": 1, "hash": h})
        + frame("D", body)
        + frame("E", b""),
    )
    assert [m["ok"] for m in msgs[:3]] == [True, True, True]
    assert msgs[3]["ok"] is False
    repo = repo_on_disk(ssh_space)
    assert repo.head() == "s1"
    assert not (ssh_space.base / "repos" / "escape.csv").exists()


def test_agent_refuses_wrong_version_and_oversize_messages(ssh_space, ssh_team) -> None:
    msgs = talk(ssh_space, "alice", hello(version=99))
    assert msgs and msgs[0]["ok"] is False and "version" in msgs[0]["error"]["message"]
    import struct

    huge = struct.pack(">IB", 64 << 20, ord("J"))
    msgs = talk(ssh_space, "alice", hello() + huge + b"x" * 1024)
    assert msgs[0]["ok"] is True
    assert msgs[1]["ok"] is False and "exceeds" in msgs[1]["error"]["message"]
    msgs = talk(ssh_space, "alice", jframe({"op": "head"}))
    assert msgs[0]["ok"] is False and "hello" in msgs[0]["error"]["message"]
    msgs = talk(ssh_space, "alice", hello() + jframe({"op": "rm", "path": "/"}))
    assert msgs[1]["ok"] is False and "invalid request" in msgs[1]["error"]["message"]


def test_client_disconnecting_mid_file_aborts_cleanly(ssh_space, ssh_team) -> None:
    alice, bob = ssh_team
    owner = {"user": "bob@hrdag.org", "tx": "tx-0000aaaa"}
    body = b"x" * (3 << 20)
    import xxhash

    payload = (
        hello()
        + jframe({"op": "lock", "owner": owner, "timeout": 5})
        + jframe({"op": "begin", "parent": "s1", "tx": "tx-0000aaaa"})
        + jframe(
            {
                "op": "put_file",
                "path": "task1/input/big.bin",
                "size": len(body),
                "mtime_ns": 1,
                "hash": xxhash.xxh3_128_hexdigest(body),
            }
        )
        + frame("D", body[: 1 << 20])  # ... and the client is gone
    )
    talk(ssh_space, "bob", payload)
    repo = repo_on_disk(ssh_space)
    assert repo.head() == "s1"
    # the next sync needs no cleanup by hand: the lock is free and leftovers are removed
    bob.write("task1/input/big.bin", body)
    res = bob.sync(message="after the drop")
    assert res.committed.id == "s2"
    assert not any((ssh_space.base / "repos" / "proj" / "txn").iterdir())
    alice.sync()
    assert alice.read("task1/input/big.bin") == body


def test_forced_command_confines_the_key(ssh_space, ssh_team) -> None:
    """With command="dsg serve",restrict in authorized_keys the key can only talk dsg."""
    lab = ssh_space.lab
    forced = " ".join(ssh_space.agent_argv())
    with lab.authorized_key("bob", f'command="{forced}",restrict') as key:
        argv = lab.key_argv("bob", key, ["cat", "/etc/passwd"])
        proc = subprocess.run(
            argv, input=hello() + jframe({"op": "head"}), capture_output=True, timeout=30
        )
        msgs = read_msgs(proc.stdout)
        assert msgs[0]["ok"] and msgs[1] == {"ok": True, "head": "s1"}
        assert b"root:" not in proc.stdout


def test_four_clients_syncing_at_once(ssh_space) -> None:
    """4 researchers sync disjoint and overlapping changes concurrently, three rounds.
    Every non-conflicting change lands exactly once; conflicts are reported (exit 3)."""
    from concurrent.futures import ThreadPoolExecutor

    # four clients: alice works from two machines (two working copies, same login)
    ssh_space.grant("proj", alice="write", bob="write", carol="write")
    first = ssh_space.researcher("alice")
    first.write("task1/input/shared.csv", "start\n")
    first.init()
    rs = [first] + [
        ssh_space.researcher(login, name=name)
        for login, name in (("bob", "bob"), ("carol", "carol"), ("alice", "alicelaptop"))
    ]
    for r in rs[1:]:
        r.clone()
    expected: dict[str, bytes] = {}
    conflicts = 0
    for rnd in range(3):
        for r in rs:
            path = f"task1/input/{r.name}-{rnd}.csv"
            r.write(path, f"{r.name} round {rnd}\n")
            expected[path] = f"{r.name} round {rnd}\n".encode()
            r.write("task1/input/shared.csv", f"{r.name} wants round {rnd}\n")
        msg = f"round {rnd}"
        with ThreadPoolExecutor(len(rs)) as pool:
            procs = list(pool.map(lambda r, m=msg: r.cli("sync", "-m", f"{r.name} {m}"), rs))
        codes = [p.returncode for p in procs]
        assert set(codes) <= {0, 3}, [p.stderr for p in procs]
        assert codes.count(0) >= 1, "someone always gets through"
        conflicts += codes.count(3)
        for r, p in zip(rs, procs, strict=True):
            if p.returncode == 3:
                assert "task1/input/shared.csv" in p.stderr
                r.resolve("task1/input/shared.csv", "remote")
                r.sync(message=f"{r.name} {rnd} after conflict")
        for r in rs:
            r.sync()
    repo = repo_on_disk(ssh_space)
    head = repo.head()
    records = list(repo.history())
    assert [x.id for x in records] == [f"s{i}" for i in range(len(records), 0, -1)]
    final = repo.manifest(head)
    for path in expected:
        entry = final.get(path)
        assert entry is not None, path
        added_in = [
            rec.id
            for rec in records
            if (e := repo.manifest(rec.id).get(path)) and e.snap == rec.number
        ]
        assert len(added_in) == 1, (path, added_in)
        assert entry.user == f"{path.split('/')[-1].split('-')[0]}@hrdag.org"
    for r in rs:
        assert tree_content(r.root) == manifest_content(final)
        assert r.read(next(iter(expected))) == expected[next(iter(expected))]
    assert conflicts >= 1, "overlapping edits of shared.csv were reported as conflicts"


def test_tags_over_ssh_need_write(ssh_space, ssh_team) -> None:
    alice, bob = ssh_team
    proc = alice.cli("tag", "v1.0", "-m", "first", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tags = json.loads(bob.cli("tags", "--json").stdout)["tags"]
    assert [(t["name"], t["snapshot"]) for t in tags] == [("v1.0", "s1")]
    ssh_space.grant("proj", carol="read")
    carol = ssh_space.researcher("carol")
    proc = carol.cli("tag", "mine", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["kind"] == "permission_denied"
    assert json.loads(carol.cli("tags", "--json").stdout)["tags"][0]["name"] == "v1.0"


def test_list_repos_over_ssh_shows_only_your_projects(ssh_space, ssh_team) -> None:
    ssh_space.grant("other", carol="write")
    ssh_space.grant("proj", carol="read")
    lab = ssh_space.lab
    remote = ssh_space.config("proj", "carol").repository.remote_command
    proc = ssh_space.researcher("carol").cli(
        "list-repos", "--host", lab.alias("carol"), "--remote-command", remote, "--json",
        cwd=ssh_space.tmp,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    repos = {r["name"]: r for r in json.loads(proc.stdout)["repos"]}
    assert set(repos) == {"other", "proj"}
    assert repos["proj"]["role"] == "read" and repos["proj"]["head"] == "s1"
    assert repos["proj"]["files"] == 2 and repos["proj"]["last_sync"]
    assert repos["other"]["head"] is None  # granted but not created yet
    # bob sees only proj; a project session cannot ask for the list
    proc = ssh_space.researcher("bob").cli(
        "list-repos", "--host", lab.alias("bob"), "--remote-command", remote, "--json",
        cwd=ssh_space.tmp,
    )  # fmt: skip
    assert [r["name"] for r in json.loads(proc.stdout)["repos"]] == ["proj"]
    msgs = talk(ssh_space, "bob", hello() + jframe({"op": "list_repos"}))
    assert msgs[1]["ok"] is False


def test_cli_sync_and_status_use_one_agent_session_each(ssh_space, ssh_team) -> None:
    """The `dsg` command, as researchers run it, over the lab sshd: `sync` and `status`
    start ssh before loading the CLI and then use that very session (the agent's log shows
    exactly one session per command, not an early one wasted beside a second)."""
    import os

    from tests.helpers import REPO_ROOT

    _, bob = ssh_team
    log = ssh_space.base / "logs" / "agent.jsonl"

    def sessions() -> int:
        lines = log.read_text().splitlines() if log.exists() else []
        return sum(json.loads(ln).get("event") == "session" for ln in lines)

    def dsg(*args: str) -> dict:
        proc = subprocess.run(
            [str(REPO_ROOT / ".venv" / "bin" / "dsg"), *args, "--json"],
            cwd=bob.root / "task1",
            env={**os.environ, "DSG_CONFIG_HOME": str(bob.cfg_home)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)

    bob.write("task1/input/cli.csv", "from the command line\n")
    before = sessions()
    assert dsg("sync", "-m", "cli")["snapshot"] == "s2"
    assert sessions() == before + 1
    assert dsg("status")["snapshot"] == "s2"
    assert sessions() == before + 2
    assert repo_on_disk(ssh_space).head() == "s2"


def test_a_refused_upload_inside_a_full_window_aborts_cleanly(
    ssh_space, ssh_team, monkeypatch
) -> None:
    """One upload the agent refuses while many later ones are in flight (the sliding window
    is full): the sync names that file, every outstanding answer is collected so the abort
    still reaches the agent, nothing is committed or left behind, and the next sync goes
    through."""
    from dsg.backends.ssh import PUT_WINDOW, SshTransaction
    from dsg.core.errors import IntegrityError

    _, bob = ssh_team
    n = 2 * PUT_WINDOW + 20
    for i in range(n):
        bob.write(f"task1/input/many/f{i:03d}.csv", f"{i}\n")
    bad = "task1/input/many/f070.csv"
    real_put = SshTransaction.put_file

    def put_file(self, path, src, size, mtime_ns, digest) -> None:
        if path == bad:  # as if the file changed after the scan: a wrong expected hash
            digest = bytes(16)
        real_put(self, path, src, size, mtime_ns, digest)

    monkeypatch.setattr(SshTransaction, "put_file", put_file)
    with pytest.raises(IntegrityError, match="f070"):
        bob.sync(message="one refused")
    repo = repo_on_disk(ssh_space)
    assert repo.head() == "s1"
    txn = ssh_space.base / "repos" / "proj" / "txn"
    assert not txn.exists() or list(txn.iterdir()) == []  # the abort was carried out
    monkeypatch.setattr(SshTransaction, "put_file", real_put)
    result = bob.sync(message="all of them")
    assert result.committed is not None and result.committed.id == "s2"
    assert repo_on_disk(ssh_space).manifest("s2").get(bad) is not None


def _batched_snapshot(ssh_team, monkeypatch) -> tuple[object, list[str], str]:
    """bob commits 8 files; downloads are asked for 3 to a request, so reads span batches."""
    import dsg.backends.ssh as ssh_backend

    _, bob = ssh_team
    names = [f"task1/input/batch/f{i}.csv" for i in range(8)]
    for i, p in enumerate(names):
        bob.write(p, f"file {i}\n" * (i + 1))
    head = bob.sync(message="eight").committed.id
    monkeypatch.setattr(ssh_backend, "READ_BATCH", 3)
    return bob, names, head


def test_downloads_span_pipelined_batches_and_an_agent_error_keeps_the_session(
    ssh_team, monkeypatch
) -> None:
    """Batches are asked for ahead of reading them. The agent ends a batch at its first
    bad path; the batch already asked for after it is read past, so the same session goes
    on in step (a stale answer would be taken for the next reply)."""
    from contextlib import closing

    from dsg.core.errors import RepositoryError

    bob, names, head = _batched_snapshot(ssh_team, monkeypatch)
    with closing(bob.repo) as repo:
        got = {p: f.read() for p, f in repo.read_files(head, names)}
        assert got == {p: bob.read(p) for p in names}  # three batches, every byte in order
        proc = repo.proc
        wanted = [names[0], names[1], "task1/input/batch/nope.csv", *names[3:]]
        seen = []
        with pytest.raises(RepositoryError, match=r"nope\.csv"):
            for p, f in repo.read_files(head, wanted):
                seen.append((p, f.read()))
        assert seen == [(p, bob.read(p)) for p in names[:2]]
        assert repo.proc is proc  # not dropped: the stream is still in step
        assert repo.head() == head
        assert [p for p, _ in repo.read_files(head, names[5:])] == names[5:]


def test_a_download_stopped_by_its_reader_drops_the_session_not_the_step(
    ssh_team, monkeypatch
) -> None:
    """A reader that stops mid-batch (a file failed its hash check) leaves answers in the
    pipe: the session is dropped and the next request starts a new one, in step."""
    from contextlib import closing

    bob, names, head = _batched_snapshot(ssh_team, monkeypatch)
    with closing(bob.repo) as repo:
        files = repo.read_files(head, names)
        with closing(files):
            path, f = next(files)
            assert (path, f.read(3)) == (names[0], b"fil")
        old = repo.proc
        assert old is None or old.poll() is not None  # ssh ended, not left streaming
        assert repo.head() == head
        assert repo.proc is not None and repo.proc is not old
        assert {p: f.read() for p, f in repo.read_files(head, names[:4])} == {
            p: bob.read(p) for p in names[:4]
        }


def test_an_agent_that_dies_mid_upload_is_a_lost_connection_and_loses_nothing(
    ssh_space, ssh_team, monkeypatch
) -> None:
    """The agent is killed while buffered uploads are in flight: the client stops with
    "connection lost" (no hang on a buffer it can no longer send), nothing is committed, the
    working copy is untouched, and the next sync finishes without cleanup by hand."""
    from dsg.backends.ssh import SshTransaction
    from dsg.core.errors import TransportError

    alice, bob = ssh_team
    names = [f"task1/input/dies/f{i:03d}.csv" for i in range(300)]
    for i, p in enumerate(names):
        bob.write(p, f"{i}\n" * 100)
    before = tree_content(bob.root)
    real_put = SshTransaction.put_file
    sent = []

    def put_file(self, path, src, size, mtime_ns, digest) -> None:
        sent.append(path)
        if len(sent) == 150:  # the agent dies with uploads buffered and in flight
            subprocess.run(["pkill", "-KILL", "-f", str(ssh_space.access_file)], check=True)
        real_put(self, path, src, size, mtime_ns, digest)

    monkeypatch.setattr(SshTransaction, "put_file", put_file)
    with pytest.raises(TransportError, match="lost"):
        bob.sync(message="never committed")
    assert repo_on_disk(ssh_space).head() == "s1"
    assert tree_content(bob.root) == before
    monkeypatch.setattr(SshTransaction, "put_file", real_put)
    assert bob.sync(message="after the agent died").committed.id == "s2"
    alice.sync()
    assert tree_content(alice.root) == tree_content(bob.root)


def test_answers_held_for_a_window_reach_a_client_that_waits_with_its_pipe_open(
    ssh_space, ssh_team
) -> None:
    """The agent holds answers to pipelined requests and sends them a batch at a time; the
    tail of a window must still go out once no request is waiting, while the client keeps
    its end open and waits (as `dsg` does at the end of a window): no hang, every answer."""
    import select
    import time

    import xxhash

    owner = {"user": "bob@hrdag.org", "tx": "tx-0000bbbb"}
    puts = 40  # more than one held batch (32), not a multiple of it
    payload = hello() + jframe({"op": "lock", "owner": owner, "timeout": 5})
    payload += jframe({"op": "begin", "parent": "s1", "tx": "tx-0000bbbb"})
    for i in range(puts):
        body = f"held {i}\n".encode()
        payload += jframe(
            {
                "op": "put_file",
                "path": f"task1/input/held/f{i}.csv",
                "size": len(body),
                "mtime_ns": 1,
                "hash": xxhash.xxh3_128_hexdigest(body),
            }
        )
        payload += frame("D", body) + frame("E", b"")
    argv = ssh_space.lab.ssh_argv("bob", ssh_space.agent_argv())
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        proc.stdin.write(payload)
        proc.stdin.flush()  # ... and wait with stdin open
        data, want = b"", 3 + puts
        deadline = time.monotonic() + 20
        while len(read_msgs(data)) < want and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    break
                data += chunk
        msgs = read_msgs(data)
        assert len(msgs) == want, f"{len(msgs)} of {want} answers arrived"
        assert all(m["ok"] for m in msgs)
        proc.stdin.write(jframe({"op": "abort"}) + jframe({"op": "bye"}))
        proc.stdin.close()
        proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert repo_on_disk(ssh_space).head() == "s1"


def test_commands_share_a_connection_ssh_keeps_open(ssh_space, ssh_team, monkeypatch) -> None:
    """The user guide's tip: with ControlMaster/ControlPersist in the user's ssh settings,
    commands after the first ride the connection ssh keeps open, and each still gets its
    own agent session and transaction."""
    import tempfile

    alice, bob = ssh_team
    sock_dir = tempfile.mkdtemp(prefix="dsg-cm-", dir="/tmp")  # short: a socket path <108
    sock = f"{sock_dir}/%C"  # one per login and host: alice never rides bob's connection
    ssh = f"ssh -F {ssh_space.lab.ssh_config}"
    mux = f"-o ControlMaster=auto -o ControlPath={sock} -o ControlPersist=60"
    monkeypatch.setenv("DSG_SSH_COMMAND", f"{ssh} {mux}")
    log = ssh_space.base / "logs" / "agent.jsonl"

    def sessions() -> int:
        return sum(json.loads(ln).get("event") == "session" for ln in log.read_text().splitlines())

    try:
        bob.write("task1/input/one.csv", "1\n")
        assert bob.sync(message="first").snapshot == "s2"
        assert len(os.listdir(sock_dir)) == 1, "ssh left its shared connection open"
        master = subprocess.run(
            [*ssh.split(), "-o", f"ControlPath={sock}", "-O", "check", "lab-bob"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert master.returncode == 0, master.stderr
        before = sessions()
        bob.write("task1/input/two.csv", "2\n")
        assert bob.sync(message="second").snapshot == "s3"
        assert sessions() == before + 1
        alice.sync()  # her own connection, as alice
        assert alice.read("task1/input/two.csv") == b"2\n"
        assert len(os.listdir(sock_dir)) == 2
        assert repo_on_disk(ssh_space).head() == "s3"
    finally:
        for login in ("lab-alice", "lab-bob"):
            subprocess.run(
                [*ssh.split(), "-o", f"ControlPath={sock}", "-O", "exit", login],
                capture_output=True, timeout=30,
            )  # fmt: skip
        shutil.rmtree(sock_dir, ignore_errors=True)
