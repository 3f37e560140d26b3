"""The file watcher (`dsg watch`, workcopy/watch.py) with real inotify and real processes: a
watched clean copy answers a status without walking the tree; every kind of change moves the
token and the status is exactly the full scan's; events lost to an overflow, a watcher
killed, files changed while no watcher ran, and hostile or silent sockets all fall back to
the walk, never to a wrong answer."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import orjson
import pytest

import dsg.workcopy.workspace
from dsg.sync import ops
from dsg.workcopy import stamp as stamp_mod
from dsg.workcopy import watch
from tests.helpers import DSG, Researcher, project_config, settle, small_project

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only"),
    pytest.mark.skipif(not Path(DSG).exists(), reason=f"{DSG} is missing"),
]

QUEUE = Path("/proc/sys/fs/inotify/max_queued_events")
ROOT_ONLY = "writing /proc/sys/fs/inotify/max_queued_events (a real overflow) needs root"


@pytest.fixture
def ana(tmp_path: Path) -> Researcher:
    return small_project(tmp_path)


class Running:
    """A watcher process for a working copy, stopped (and reaped) at the end."""

    def __init__(self, r: Researcher, argv: list[str] | None = None, **kw: object) -> None:
        self.r = r
        self.proc = subprocess.Popen(
            argv or [DSG, "watch"],
            cwd=r.root,
            env={**os.environ, "DSG_CONFIG_HOME": str(r.cfg_home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,  # type: ignore[arg-type]
        )
        deadline = time.monotonic() + 30
        while watch.token(self.state) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the watcher did not start: {self.proc.communicate()}")
            time.sleep(0.02)

    @property
    def state(self) -> Path:
        return self.r.root / ".dsg"

    def status(self) -> dict:
        reply = watch.request(self.state, "status")
        assert reply is not None and reply["ok"] is True
        return reply

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def watcher(ana: Researcher) -> Iterator[Running]:
    w = Running(ana)
    yield w
    w.stop()


def quick_status(r: Researcher) -> ops.Result:
    with closing(r.repo) as repo:
        return ops.status(r.ws, repo)


def quick_actions(r: Researcher) -> dict[str, str]:
    return {it.path: it.action.value for it in quick_status(r).plan.items}


def full_status(r: Researcher) -> dict[str, str]:
    return {it.path: it.action.value for it in r.status().plan.items if it.action != "none"}


def stamp_token(r: Researcher) -> str | None:
    found = stamp_mod.read(r.root / ".dsg")
    assert found is not None
    return found[0].watch


def stamped(r: Researcher) -> str:
    """A status that leaves a stamp holding the watcher's token (the tree settled first)."""
    settle()
    quick_status(r)
    tok = stamp_token(r)
    assert tok is not None and tok == watch.token(r.root / ".dsg")
    return tok


WALK = dsg.workcopy.workspace.walk


def epoch(tok: str | None) -> str:
    assert tok is not None
    return tok.split(".")[2]


def same_size_and_mtime(p: Path, text: str) -> None:
    st = p.stat()
    assert len(text) == st.st_size
    p.write_text(text)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


# --- the quick path -------------------------------------------------------------------------
def test_a_watched_clean_copy_answers_without_walking(ana: Researcher, watcher: Running) -> None:
    stamped(ana)
    times = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dsg.workcopy.workspace, "walk", lambda *a, **k: pytest.fail("walked"))
        for _ in range(5):
            t = time.perf_counter()
            assert ana.ws.scan(quick=True).clean
            times.append(time.perf_counter() - t)
        result = quick_status(ana)
    assert result.plan.items == [] and result.plan.unchanged == 40
    assert statistics.median(times) < 0.1, times  # a socket round trip, not a walk
    # the command line too (`dsg status` without --json takes the quick path)
    r = ana.cli("status")
    assert r.returncode == 0 and "Up to date (40 files unchanged)" in r.stdout, r.stdout + r.stderr
    status = watcher.status()
    assert status["healthy"] and status["changes"] == 0 and status["overflows"] == 0


def test_the_command_line_stamps_the_token_taken_before_its_walk(
    ana: Researcher, watcher: Running
) -> None:
    """`dsg status` scans in a forked child (prescan.py) started before the command asks for
    a token: the stamp gets the token asked before that child's walk, or, when the walk found
    the stamp's tree, the stamp takes the new watcher's token (no walk next time)."""
    settle()
    for _ in range(2):
        r = ana.cli("status")
        assert r.returncode == 0 and "Up to date" in r.stdout, r.stdout + r.stderr
        assert stamp_token(ana) == watch.token(watcher.state)


@pytest.mark.parametrize(
    "change", ["content", "create", "delete", "rename", "new nested dir", "chmod", "dir rename"]
)
def test_each_change_moves_the_token_and_status_is_exact(
    ana: Researcher, watcher: Running, change: str
) -> None:
    before = stamped(ana)
    p = ana.path("task0/input/d0/f0.csv")
    expected: dict[str, str]
    if change == "content":
        same_size_and_mtime(p, "row X\n")
        expected = {"task0/input/d0/f0.csv": "upload"}
    elif change == "create":
        ana.write("task0/input/d0/new.csv", "new\n")
        expected = {"task0/input/d0/new.csv": "upload"}
    elif change == "delete":
        p.unlink()
        expected = {"task0/input/d0/f0.csv": "delete_remote"}
    elif change == "rename":
        p.rename(p.with_name("g0.csv"))
        expected = {"task0/input/d0/f0.csv": "delete_remote", "task0/input/d0/g0.csv": "upload"}
    elif change == "new nested dir":
        d = ana.path("task0/input/d0/a/b/c")
        d.mkdir(parents=True)
        (d / "x.csv").write_text("x\n")  # at once: before the watcher can have watched c
        expected = {"task0/input/d0/a/b/c/x.csv": "upload"}
    elif change == "chmod":
        p.chmod(0o600)  # dsg records no mode: the status is the same, but it was walked
        expected = {}
    else:
        ana.path("task1/input/d0").rename(ana.path("task1/input/e0"))
        expected = {f"task1/input/d0/f{i}.csv": "delete_remote" for i in range(1, 20, 2)}
        expected |= {f"task1/input/e0/f{i}.csv": "upload" for i in range(1, 20, 2)}
    after = watch.token(watcher.state)
    assert after is not None and after != before and epoch(after) == epoch(before)
    assert quick_actions(ana) == expected == full_status(ana)


def test_new_and_renamed_directories_are_watched(ana: Researcher, watcher: Running) -> None:
    """A change deep in a directory that appeared (or moved) after the watcher started is
    seen: the watcher watched it as it appeared."""
    d = ana.path("task0/input/new/a/b")
    d.mkdir(parents=True)
    (d / "x.csv").write_text("x1\n")
    ana.sync(message="new dir")
    stamped(ana)
    for step in range(2):
        x = d / "x.csv"
        same_size_and_mtime(x, f"x{step + 2}\n")
        rel = str(x.relative_to(ana.root))
        assert not ana.ws.scan(quick=True).clean
        assert quick_actions(ana) == {rel: "upload"} == full_status(ana)
        ana.sync(message=f"step {step}")
        stamped(ana)
        # move the directory: the watches follow it under its new name
        new = ana.path(f"task0/input/moved{step}")
        (d.parent.parent if step == 0 else d.parent).rename(new)
        d = new / "a" / "b" if step == 0 else new / "b"
        ana.sync(message=f"moved {step}")
        stamped(ana)
    assert watcher.status()["healthy"]


# --- the fallbacks --------------------------------------------------------------------------
@contextlib.contextmanager
def small_queue(events: int) -> Iterator[None]:
    """inotify instances made inside get a queue of `events`: the limit is taken at init."""
    old = QUEUE.read_text()
    try:
        QUEUE.write_text(f"{events}\n")
        yield
    finally:
        QUEUE.write_text(old)


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_ONLY)
def test_overflow_gives_a_new_epoch_and_an_exact_status(ana: Researcher) -> None:
    with small_queue(16):
        fd = watch.inotify_init()  # then the limit is restored at once
    try:
        code = (
            "import sys; from pathlib import Path; from dsg.workcopy.watch import Watcher; "
            "Watcher(Path(sys.argv[1]), inotify_fd=int(sys.argv[2])).run()"
        )
        w = Running(ana, [sys.executable, "-c", code, str(ana.root), str(fd)], pass_fds=(fd,))
    finally:
        os.close(fd)
    try:
        before = stamped(ana)
        os.kill(w.proc.pid, signal.SIGSTOP)  # it reads nothing while the queue fills
        try:
            for i in range(100):
                ana.write(f"task1/input/d0/b{i}.csv", f"{i}\n")
            same_size_and_mtime(ana.path("task0/input/d0/f0.csv"), "row Y\n")
        finally:
            os.kill(w.proc.pid, signal.SIGCONT)
        after = watch.token(w.state)
        status = w.status()
        assert status["overflows"] >= 1 and status["rewatches"] >= 1, status
        assert after is not None and epoch(after) != epoch(before)
        expected = {f"task1/input/d0/b{i}.csv": "upload" for i in range(100)}
        expected["task0/input/d0/f0.csv"] = "upload"
        assert quick_actions(ana) == expected == full_status(ana)
        # the new instance (with the default queue) watches the tree as before
        ana.sync(message="burst")
        again = stamped(ana)
        assert epoch(again) == epoch(after)
        ana.path("task1/input/d0/b0.csv").unlink()
        assert watch.token(w.state) != again
        assert quick_actions(ana) == {"task1/input/d0/b0.csv": "delete_remote"}
        assert full_status(ana) == {"task1/input/d0/b0.csv": "delete_remote"}
    finally:
        w.stop()


def test_a_killed_watcher_means_a_walk(ana: Researcher, watcher: Running, monkeypatch) -> None:
    stamped(ana)
    watcher.proc.kill()
    watcher.proc.wait()
    assert (watcher.state / watch.SOCKET).exists()  # stale: nobody listens
    t = time.perf_counter()
    assert watch.token(watcher.state) is None
    assert time.perf_counter() - t < 0.5
    walks = []
    monkeypatch.setattr(
        dsg.workcopy.workspace, "walk", lambda *a, **k: walks.append(1) or WALK(*a, **k)
    )
    assert quick_actions(ana) == {} == full_status(ana)
    assert walks  # no token: the stamp's blocks were checked by a walk
    same_size_and_mtime(ana.path("task1/input/d0/f1.csv"), "row Z\n")
    assert quick_actions(ana) == {"task1/input/d0/f1.csv": "upload"} == full_status(ana)
    # a new watcher takes the stale socket's place
    w = Running(ana)
    try:
        assert w.status()["pid"] == w.proc.pid
    finally:
        w.stop()


def test_changes_while_no_watcher_ran_are_seen(ana: Researcher) -> None:
    w = Running(ana)
    before = stamped(ana)
    r = ana.cli("watch", "--stop", "--json")
    assert r.returncode == 0 and orjson.loads(r.stdout)["stopped"] is True, r.stdout + r.stderr
    w.proc.wait(10)
    w.stop()
    assert not (ana.root / ".dsg" / watch.SOCKET).exists()
    same_size_and_mtime(ana.path("task0/input/d0/f0.csv"), "row W\n")
    ana.path("task1/input/d0/f1.csv").unlink()
    w = Running(ana)
    try:
        after = watch.token(w.state)
        assert epoch(after) != epoch(before) and stamp_token(ana) == before
        expected = {"task0/input/d0/f0.csv": "upload", "task1/input/d0/f1.csv": "delete_remote"}
        assert quick_actions(ana) == expected == full_status(ana)
    finally:
        w.stop()


def test_one_watcher_per_working_copy(ana: Researcher, watcher: Running) -> None:
    r = ana.cli("watch", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    doc = orjson.loads(r.stdout)
    assert doc["error"]["kind"] == "working_copy"
    assert f"pid {watcher.proc.pid}" in doc["error"]["message"]
    r = ana.cli("watch", "--status", "--json")
    assert r.returncode == 0
    doc = orjson.loads(r.stdout)
    assert doc["running"] is True and doc["healthy"] is True and doc["watches"] >= 7
    mode = (watcher.state / watch.SOCKET).stat().st_mode & 0o777
    assert mode == 0o600
    watcher.stop()
    r = ana.cli("watch", "--status", "--json")
    assert r.returncode == 1 and orjson.loads(r.stdout)["running"] is False


def test_a_long_path_is_reached_through_proc(tmp_path: Path) -> None:
    """sockaddr_un holds 108 bytes: a deeper working copy binds and connects through
    /proc/self/fd."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    (deep / "repos").mkdir(parents=True)
    r = Researcher("ana", deep / "ana", tmp_path / "cfg", project_config("p", deep / "repos"))
    r.write("input/f.csv", "1\n")
    settle()
    r.init()
    assert len(str(r.root / ".dsg" / watch.SOCKET)) > 108
    w = Running(r)
    try:
        stamped(r)
        r.write("input/g.csv", "2\n")
        assert quick_actions(r) == {"input/g.csv": "upload"}
    finally:
        w.stop()


# --- hostile or silent sockets ----------------------------------------------------------------
def fake_server(state: Path, answer: Callable[[socket.socket], None]) -> Callable[[], None]:
    """A listener at .dsg/watch.sock that answers each client with `answer`."""
    state.mkdir(exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(state / watch.SOCKET))
    s.listen(4)
    done = threading.Event()

    def serve() -> None:
        s.settimeout(0.1)
        while not done.is_set():
            try:
                c, _ = s.accept()
            except TimeoutError:
                continue
            with c, contextlib.suppress(OSError):
                c.settimeout(2)
                c.recv(watch.MAX_REQUEST)  # the request, as a watcher reads it
                answer(c)

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def stop() -> None:
        done.set()
        t.join(5)
        s.close()

    return stop


def _silent(c: socket.socket) -> None:
    time.sleep(watch.TIMEOUT + 0.5)


def _garbage(c: socket.socket) -> None:
    c.sendall(b"\x00\xff garbage\n")


def _endless(c: socket.socket) -> None:
    with contextlib.suppress(OSError):
        for _ in range(10):
            c.sendall(b"{" * 1000)


def _other_tree(c: socket.socket) -> None:
    c.sendall(b'{"ok":true,"token":"1.2.' + b"0" * 32 + b'.0"}\n')


@pytest.mark.parametrize(
    "answer", [_silent, _garbage, _endless, _other_tree], ids=lambda f: f.__name__[1:]
)
def test_a_bad_peer_gives_no_token(tmp_path: Path, answer: Callable) -> None:
    state = tmp_path / "p" / ".dsg"
    state.mkdir(parents=True)
    stop = fake_server(state, answer)
    try:
        t = time.perf_counter()
        assert watch.token(state) is None
        assert time.perf_counter() - t < watch.TIMEOUT + 0.3
    finally:
        stop()


def test_a_good_fake_peer_is_believed(tmp_path: Path) -> None:
    """The counterpart of the tests above: the same server with a well-formed answer for this
    tree does give a token (so those fail for the reason they name)."""
    state = tmp_path / "p" / ".dsg"
    state.mkdir(parents=True)
    st = state.parent.stat()
    tok = watch.make_token((st.st_dev, st.st_ino), "a" * 32, 3)
    stop = fake_server(state, lambda c: c.sendall(orjson.dumps({"ok": True, "token": tok}) + b"\n"))
    try:
        assert watch.token(state) == tok
    finally:
        stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a socket of another user needs root")
def test_another_users_socket_or_peer_gives_no_token(tmp_path: Path) -> None:
    state = tmp_path / "p" / ".dsg"
    state.mkdir(parents=True)
    st = state.parent.stat()
    good = orjson.dumps(
        {"ok": True, "token": watch.make_token((st.st_dev, st.st_ino), "b" * 32, 0)}
    )
    stop = fake_server(state, lambda c: c.sendall(good + b"\n"))
    try:
        assert watch.token(state) is not None
        os.chown(state / watch.SOCKET, 65534, 65534)  # the file is another user's
        assert watch.token(state) is None
    finally:
        stop()
    (state / watch.SOCKET).unlink()
    # our own socket file, but the process listening on it runs as another user
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(state / watch.SOCKET))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            s.listen(4)  # SO_PEERCRED gives the credentials of listen()
            os.write(w, b"l")
            while True:
                c, _ = s.accept()
                c.recv(64)
                c.sendall(good + b"\n")
                c.close()
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"l"
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(state / watch.SOCKET))
        assert watch.peer_uid(probe) == 65534  # the server answers, as another user
        probe.close()
        assert watch.token(state) is None
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        s.close()


def test_not_a_socket_gives_no_token(tmp_path: Path) -> None:
    state = tmp_path / "p" / ".dsg"
    state.mkdir(parents=True)
    (state / watch.SOCKET).write_text("not a socket\n")
    assert watch.token(state) is None
    (state / watch.SOCKET).unlink()
    (state / watch.SOCKET).symlink_to("/nonexistent")
    assert watch.token(state) is None


def test_other_systems_have_no_watcher(ana: Researcher, monkeypatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert watch.token(ana.root / ".dsg") is None
    with pytest.raises(watch.WatchError, match="Linux-only"):
        watch.Watcher(ana.root).run()
