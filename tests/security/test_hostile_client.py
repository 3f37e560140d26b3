"""A hostile or careless project member, seen from a colleague's machine (issue 19, the
client and path side): what one member commits or plants must not reach outside the data
dirs of anyone else's working copy, run a command, or drive their terminal.

Each test runs the real engine (a posix repository, working copies, the `dsg` console
script where the attack goes through it) and fails on dsg 0.5.0, where each attack worked:
- refused name classes: dot names (`.git/config`), bidi and zero-width characters,
  fullwidth and other look-alikes of `/`, `\\` and `..`, case twins in a peer's manifest;
- links resolved, not read as text (`x/l1 -> ..` and `esc -> x/l1/x/l1/../../../../etc/passwd`);
- nothing dsg writes in a working copy follows a link planted at its temp name;
- `repository.remote_command` in the committed `.dsgconfig.yml` is never run;
- terminal escapes in messages and authors are shown escaped by `dsg log`, `blame`,
  `list-files` and `tags`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from dsg.core.errors import ScanBlocked, WorkingCopyError
from dsg.core.manifest import Entry, Manifest
from dsg.core.paths import link_problems, path_problem, show_text
from dsg.core.plan import make_plan
from dsg.workcopy.config import UserConfig
from tests.helpers import DSG, tree_content

A = "task1/input/a.csv"
ESC = "\x1b"
TERMINAL_ATTACK = "\x1b]0;pwned\x07\x1b[2K\x1b[1A\rfake line\x9b2J"

# --- 1. names a member may not commit ----------------------------------------------------

REFUSED = {
    "dot name: git config": ".git/config",
    "dot name: project file": ".dsgconfig.yml",
    "dot name: dsg state": "task1/input/.dsg/base.json",
    "dot name in a data dir": "task1/input/.hidden.csv",
    "bidi override": "task1/input/invoice\u202efdp.exe",
    "bidi isolate": "task1/input/a\u2066b.csv",
    "left-to-right mark": "task1/input/a\u200eb.csv",
    "arabic letter mark": "task1/input/a\u061cb.csv",
    "zero-width space": "task1/input/a\u200b.csv",
    "zero-width joiner": "task1/input/a\u200db.csv",
    "zero-width non-joiner between Latin letters": "task1/input/inv\u200coice.csv",
    "zero-width non-joiner ending a Persian name": "task1/input/\u0645\u06cc\u200c",
    "zero-width joiner between Cyrillic letters": "task1/input/\u043e\u0442\u200d\u0447\u0435\u0442.csv",
    "zero-width non-joiner between Greek letters": "task1/input/\u03b1\u200c\u03b2.csv",
    "zero-width joiner between Persian letters": "task1/input/\u0645\u200d\u06cc.csv",
    "word joiner": "task1/input/a\u2060b.csv",
    "byte order mark": "task1/input/\ufeffa.csv",
    "soft hyphen": "task1/input/a\u00adb.csv",
    "line separator": "task1/input/a\u2028b.csv",
    "fullwidth solidus": "task1/input/etc\uff0fpasswd",
    "fullwidth reverse solidus": "task1/input/a\uff3cb",
    "fullwidth dot-dot": "task1/input/\uff0e\uff0e",
    "small full stops": "task1/input/\ufe52\ufe52",
    "two dot leader": "task1/input/\u2025",
    "one dot leader as a hidden name": "task1/input/\u2024git",
    "an ellipsis as a hidden name": "task1/input/\u2026git",
    "division slash": "task1/input/etc\u2215passwd",
    "fraction slash": "task1/input/etc\u2044passwd",
    "big solidus": "task1/input/etc\u29f8passwd",
}


@pytest.mark.parametrize("path", REFUSED.values(), ids=REFUSED.keys())
def test_refused_name_classes(path: str) -> None:
    """Refused for every new path; in a peer's manifest (an old repository) set aside as
    suspect, so the repository still loads, and never applied (see below)."""
    assert path_problem(path) is not None
    e = Entry(path, 1, 1, b"\x01" * 16)
    m = Manifest.from_bytes(Manifest([e]).to_bytes(), origin="manifest from a peer")
    assert path in m.suspect
    plan = make_plan(Manifest.empty(), Manifest.empty(), m)
    assert plan.items == [] and plan.untracked == [path]


@pytest.mark.parametrize(
    "path",
    [
        "task1/input/café.csv",
        "task1/input/naïve 東京 – x.csv",
        "task1/input/a..b.csv",
        "task1/input/Draft\u2026 v2.docx",  # an ellipsis, as macOS types "..."
        "task1/input/\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.csv",  # Persian, with ZWNJ
        "task1/input/\u0915\u094d\u200d\u0937.txt",  # Devanagari: virama, ZWJ, consonant
    ],
)
def test_ordinary_names_still_pass(path: str) -> None:
    assert path_problem(path) is None


def test_a_peer_manifest_with_case_twins_is_set_aside_on_load() -> None:
    twins = [Entry(p, 1, 1, b"\x01" * 16) for p in ("task1/input/A.csv", "task1/input/a.csv")]
    m = Manifest.from_bytes(Manifest(twins).to_bytes(), origin="manifest from a peer")
    assert "letter case" in m.suspect["task1/input/a.csv"]
    plan = make_plan(Manifest.empty(), Manifest.empty(), m)
    assert plan.items == [] and sorted(plan.untracked) == ["task1/input/A.csv", "task1/input/a.csv"]


def test_hidden_names_in_a_working_copy_are_skipped_silently(team) -> None:
    _, bob = team
    bob.write("task1/input/.secret-notes.txt", "mine\n")
    bob.write("task1/input/.cache/x.bin", "x")
    result = bob.status()
    assert result.problems == []
    assert all(".secret" not in it.path and ".cache" not in it.path for it in result.plan.items)


def test_a_bidi_name_in_a_working_copy_blocks_the_sync(team) -> None:
    _, bob = team
    head = bob.repo.head()
    bob.write("task1/input/invoice\u202efdp.exe", "x")
    with pytest.raises(ScanBlocked, match="direction-changing"):
        bob.sync()
    assert bob.repo.head() == head


# --- 2. links resolved, not read as text -------------------------------------------------

DEPTH = 24  # enough ".." to reach / from any temp directory


def escape_chain() -> dict[str, str]:
    """`x/l1 -> ..` and a target that is contained as text but, through l1, reaches
    /etc/passwd; all inside the data dir task1/input."""
    return {
        "task1/input/x/l1": "..",
        "task1/input/esc": "x/l1/" * (DEPTH // 2) + "../" * (DEPTH + 2) + "etc/passwd",
    }


def test_a_link_through_another_link_is_refused_by_the_scan(team) -> None:
    _, bob = team
    for path, target in escape_chain().items():
        bob.link(path, target)
    # The attack is real: the kernel resolves it to /etc/passwd.
    assert os.path.realpath(bob.path("task1/input/esc")) == "/etc/passwd"
    head, before = bob.repo.head(), tree_content(bob.root)
    with pytest.raises(ScanBlocked) as e:
        bob.sync()
    assert "task1/input/esc" in e.value.message and "another link" in e.value.message
    assert bob.repo.head() == head and tree_content(bob.root) == before
    proc = bob.cli("status")
    assert "task1/input/esc" in proc.stdout and "passes through another link" in proc.stdout


def test_a_peer_manifest_with_a_link_through_a_link_is_set_aside_on_load() -> None:
    entries = [Entry(p, target=t) for p, t in sorted(escape_chain().items())]
    m = Manifest.from_bytes(Manifest(entries).to_bytes(), origin="manifest from a peer")
    assert any("passes through another link" in why for why in m.suspect.values())
    plan = make_plan(Manifest.empty(), Manifest.empty(), m)
    assert not any(it.path in m.suspect for it in plan.items)


def test_links_that_leave_the_data_dirs_are_refused_and_cross_data_dir_links_kept(team) -> None:
    alice, bob = team
    bob.link("task1/input/code", "../src/analysis.R")  # outside every data dir
    with pytest.raises(ScanBlocked, match="outside the data directories"):
        bob.sync()
    bob.delete("task1/input/code")
    bob.link("task1/output/latest.csv", "../input/a.csv")  # data dir to data dir: fine
    bob.link("task2/input/a.csv", "../../task1/input/a.csv")  # task to task: fine
    bob.sync()
    alice.sync()
    assert alice.read("task2/input/a.csv") == b"a,1\n"


@pytest.mark.parametrize(
    ("links", "bad"),
    [
        (escape_chain(), ["task1/input/esc"]),
        ({"t/input/l": "../../../x"}, ["t/input/l"]),  # above the project
        ({"t/input/l": "../../.git/config"}, ["t/input/l"]),  # into a hidden name
        ({"t/input/d": "../output", "t/input/l": "d/x.csv"}, ["t/input/l"]),
        ({"t/input/l": "../output/x.csv"}, []),
        ({"t/input/a": "b", "t/input/b": "../output/c"}, []),  # a chain, each link checked
        ({"t/input/l": "../src/x.R"}, ["t/input/l"]),  # outside the data dirs
    ],
)
def test_link_problems(links: dict[str, str], bad: list[str]) -> None:
    assert [p for p, _ in link_problems(links, None, {"input", "output"})] == bad


# --- 3. nothing dsg writes follows a planted link ----------------------------------------


def plant(link: Path, victim: Path) -> None:
    victim.write_text("precious\n")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, link)


def test_snapfetch_does_not_write_through_a_link_at_its_temp_name(team, tmp_path) -> None:
    alice, _ = team
    out = tmp_path / "fetched" / "a.csv"
    victim = tmp_path / "bashrc"
    plant(out.parent / ".a.csv.dsg-tmp", victim)  # dsg 0.5.0's temp name
    proc = alice.cli("snapfetch", A, "-s", "s1", "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert victim.read_text() == "precious\n"
    assert out.read_bytes() == b"a,1\n"
    leftovers = [p.name for p in out.parent.iterdir() if p.name != ".a.csv.dsg-tmp"]
    assert leftovers == ["a.csv"]


def test_atomic_writes_in_the_working_copy_do_not_follow_a_planted_link(team, tmp_path) -> None:
    alice, bob = team
    victim = tmp_path / "bashrc"
    for name in ("base.json", "base.manifest.gz", "hashcache.bin", "clean.json"):
        plant(bob.root / ".dsg" / f".{name}.tmp", tmp_path / f"victim-{name}")
    plant(bob.root / ".dsg" / ".base.json.tmp2", victim)
    alice.write(A, "changed\n")
    alice.sync()
    bob.sync()
    assert bob.read(A) == b"changed\n"
    for p in tmp_path.glob("victim-*"):
        assert p.read_text() == "precious\n", p
    assert victim.read_text() == "precious\n"


def test_a_download_does_not_write_through_a_link_at_its_temp_name(
    team, tmp_path, monkeypatch
) -> None:
    """The tx id is in the lock file and logs others read: a planted link at
    `.name.dsg-tmp-<tx>` made dsg 0.5.0 write a large download through it."""
    alice, bob = team
    big = "task1/input/big.bin"
    alice.write(big, os.urandom((1 << 20) + 10))  # streamed, not written whole
    alice.sync()
    from dsg.sync import ops

    monkeypatch.setattr(ops, "new_tx", lambda: "tx-0123456789ab")
    victim = tmp_path / "bashrc"
    plant(bob.path("task1/input/.big.bin.dsg-tmp-tx-0123456789ab"), victim)
    small = tmp_path / "victim-small"
    plant(bob.path("task1/input/.b.csv.dsg-tmp-tx-0123456789ab"), small)
    alice.write("task1/input/b.csv", "b,changed\n")
    alice.sync()
    bob.sync()
    assert bob.read(big) == alice.read(big)
    assert bob.read("task1/input/b.csv") == b"b,changed\n"
    assert victim.read_text() == "precious\n" and small.read_text() == "precious\n"


def test_the_gitignore_update_does_not_write_through_a_link_committed_to_git(tmp_path) -> None:
    """A member commits `..gitignore.dsg-tmp -> ~/.bashrc` to git (git keeps links); the
    colleague's `dsg clone` then updates .gitignore: never through that link."""
    from dsg.workcopy.git import BEGIN, ensure_gitignore

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("*.log\n")
    victim = tmp_path / "bashrc"
    plant(root / "..gitignore.dsg-tmp", victim)  # the name dsg used before
    res = ensure_gitignore(root, ["input", "output"])
    assert res.written and res.changed, res
    assert victim.read_text() == "precious\n"
    gi = root / ".gitignore"
    assert not gi.is_symlink() and gi.read_text().startswith("*.log\n")
    assert BEGIN in gi.read_text()


def test_a_dsg_state_dir_that_is_a_link_is_refused(make_researcher, team, tmp_path) -> None:
    """`.dsg -> elsewhere` committed to git: the colleague's `dsg clone` would write its
    state (manifests, hash cache, logs) into the link's target."""
    carol = make_researcher("carol")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, carol.root / ".dsg")
    with pytest.raises(WorkingCopyError, match="not a directory"):
        carol.clone()
    proc = carol.cli("clone")
    assert proc.returncode != 0 and "not a directory" in proc.stderr, proc.stdout + proc.stderr
    assert list(elsewhere.iterdir()) == []


def test_the_event_log_does_not_append_through_a_planted_link(team, tmp_path) -> None:
    alice, bob = team
    victim = tmp_path / "bashrc"
    log = bob.root / ".dsg" / "log" / "dsg.jsonl"
    log.unlink(missing_ok=True)  # bob's log so far; a git checkout puts the link there
    plant(log, victim)
    alice.write(A, "changed\n")
    alice.sync()
    bob.sync()
    assert bob.read(A) == b"changed\n"
    assert victim.read_text() == "precious\n"


# --- 4. remote_command from the project file is never run --------------------------------


def ssh_recorder(tmp_path: Path) -> tuple[str, Path]:
    """An ssh stand-in that records its argv (one JSON line per run) and fails."""
    log = tmp_path / "ssh-argv.jsonl"
    script = tmp_path / "fake-ssh"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(255)\n"
    )
    script.chmod(0o755)
    return str(script), log


def remote_project(tmp_path: Path, remote_command: str) -> tuple[Path, Path]:
    from dsg.fs.durable import write_manifest

    root = tmp_path / "proj"
    (root / ".dsg").mkdir(parents=True)
    (root / ".dsgconfig.yml").write_text(
        "name: proj\nrepository:\n  type: posix\n  host: far.example\n"
        f"  mountpoint: /srv/dsg\n  remote_command: {json.dumps(remote_command)}\n"
    )
    write_manifest(root / ".dsg" / "base.manifest.gz", Manifest.empty())
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "dsg.yml").write_text("user_name: Ann\nuser_id: ann@hrdag.org\n")
    return root, cfg


def run_dsg(root: Path, cfg: Path, ssh: str, *args: str, **env: str):
    full = {**os.environ, "DSG_CONFIG_HOME": str(cfg), "DSG_SSH_COMMAND": ssh, **env}
    full.pop("DSG_REMOTE_COMMAND", None) if "DSG_REMOTE_COMMAND" not in env else None
    return subprocess.run(
        [DSG, *args], cwd=root, env=full, capture_output=True, text=True, timeout=60
    )


def recorded(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("command", ["status", "sync", "log", "list-files"])
def test_remote_command_in_the_project_file_is_never_run(tmp_path, command) -> None:
    marker = f"/tmp/pwned-{uuid.uuid4().hex}"
    root, cfg = remote_project(tmp_path, f"touch {marker}")
    ssh, log = ssh_recorder(tmp_path)
    proc = run_dsg(root, cfg, ssh, command)
    runs = recorded(log)
    if command != "list-files":  # list-files reads the local base only
        assert runs, proc.stdout + proc.stderr
    for argv in runs:
        assert not any("pwned" in a or "touch" in a for a in argv), argv
        assert argv[-1] == "dsg serve"
    assert not os.path.exists(marker)
    assert "ignoring repository.remote_command" in proc.stderr


def test_remote_command_comes_from_the_users_own_config_or_environment(tmp_path) -> None:
    root, cfg = remote_project(tmp_path, "touch /tmp/pwned-never")
    ssh, log = ssh_recorder(tmp_path)
    (cfg / "dsg.yml").write_text(
        "user_name: Ann\nuser_id: ann@hrdag.org\n"
        "remote_command: {far.example: /opt/dsg/bin/dsg serve --log-dir /var/log/dsg}\n"
    )
    run_dsg(root, cfg, ssh, "status")
    assert {shlex.join(a[-1:]) for a in recorded(log)} == {
        shlex.join(["/opt/dsg/bin/dsg serve --log-dir /var/log/dsg"])
    }
    log.unlink()
    run_dsg(root, cfg, ssh, "status", DSG_REMOTE_COMMAND="/usr/local/bin/dsg serve")
    assert {a[-1] for a in recorded(log)} == {"/usr/local/bin/dsg serve"}


# --- 5. terminal escapes are shown escaped -----------------------------------------------


def test_escapes_in_messages_authors_and_tags_reach_no_terminal(team) -> None:
    alice, bob = team
    bob.user = UserConfig(user_name=f"Eve{TERMINAL_ATTACK}", user_id="eve@hrdag.org")
    bob.write(A, "evil\n")
    bob.sync(message=f"harmless{TERMINAL_ATTACK}")
    alice.sync()
    with closing(bob.repo) as repo:
        repo.add_tag("v1", "s2", f"tag{TERMINAL_ATTACK}", "eve@hrdag.org")
    for args in (["log"], ["blame", A], ["list-files"], ["tags"]):
        proc = alice.cli(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert ESC not in proc.stdout and "\x07" not in proc.stdout, args
        assert "\x9b" not in proc.stdout, args
    log = alice.cli("log").stdout
    assert "harmless\\x1b]0;pwned\\x07" in log and "fake line" in log


def test_show_text() -> None:
    assert show_text("plain text, ünïcödé 東京") == "plain text, ünïcödé 東京"
    assert show_text("a\x1b[2Kb\nc\u202ed") == "a\\x1b[2Kb\\nc\\u202ed"
