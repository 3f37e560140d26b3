"""The server's access file: what it grants, and how a broken one is reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsg.core.errors import ConfigError
from dsg.server.access import allows, load_access

GOOD = """\
projects:
  killings:
    group: proj-killings
    dataset: tank/dsg/killings
    mountpoint: /var/repos/dsg/killings
    users: {ana: write, ben: read, root: admin}
  sandbox:
    mountpoint: /srv/dsg/sandbox
    users:
      ana: admin
  empty:
    type: posix
    mountpoint: /srv/dsg/empty
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "access.yml"
    p.write_text(text, encoding="utf-8")
    return p


def test_a_good_file_grants_what_it_says(tmp_path: Path) -> None:
    access = load_access(_write(tmp_path, GOOD))
    k, s, e = (access.projects[n] for n in ("killings", "sandbox", "empty"))
    assert (k.type, k.pool, k.group) == ("zfs", "tank", "proj-killings")
    assert (s.type, s.pool, s.dataset) == ("posix", None, None)
    assert e.users == {}
    assert access.role("killings", "ben") == "read"
    assert access.role("killings", "eve") is None
    assert access.role("nope", "ana") is None
    assert allows(access.role("killings", "ana"), "write")
    assert not allows(access.role("killings", "ben"), "write")
    assert not allows(None, "read")


def test_an_empty_file_grants_nothing(tmp_path: Path) -> None:
    assert load_access(_write(tmp_path, "")).projects == {}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("project: {}\n", "project (line 1): unknown key"),
        ("projects: [a, b]\n", "projects (line 1): expected a mapping"),
        ("projects:\n  a: /srv/a\n", "projects.a (line 2): expected a mapping"),
        ("projects:\n  a:\n    users: {}\n", "projects.a (line 2): 'mountpoint' is required"),
        ("projects:\n  a:\n    mountpoint: srv/a\n", "projects.a.mountpoint (line 3): mountpoint"),
        ("projects:\n  a:\n    type: zfs\n    mountpoint: /a\n", "needs 'dataset'"),
        (
            "projects:\n  a:\n    type: nfs\n    mountpoint: /a\n",
            "projects.a.type (line 3): expected zfs or posix",
        ),
        (
            "projects:\n  a:\n    mountpoint: /a\n    owner: x\n",
            "projects.a.owner (line 4): unknown key",
        ),
        (
            "projects:\n  a:\n    mountpoint: /a\n    group: 12\n",
            "projects.a.group (line 4): expected a string",
        ),
        (
            "projects:\n  a:\n    mountpoint: /a\n    users:\n      ana: read\n      ben: rw\n",
            "projects.a.users.ben (line 6): expected read, write or admin, not 'rw'",
        ),
        (
            "projects:\n  a:\n    mountpoint: /a\n    users: {ana: [read]}\n",
            "projects.a.users.ana (line 4): expected read, write or admin",
        ),
        (
            "projects:\n  a:\n    mountpoint: [/a]\n    type: [zfs]\n",
            "projects.a.mountpoint (line 3): expected a string",
        ),
        (
            "projects:\n  a:\n    mountpoint: /a\n    users: [ana]\n",
            "projects.a.users (line 4): expected a mapping",
        ),
        (
            "projects:\n  a:\n    mountpoint: /a\n    users: {1: read}\n",
            "projects.a.users.1 (line 4): a login must be",
        ),
    ],
)
def test_a_broken_file_names_the_key_and_its_line(tmp_path: Path, text: str, want: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as e:
        load_access(_write(tmp_path, text))
    assert want in str(e.value), str(e.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = "projects:\n  a:\n    mountpoint: a\n  b:\n    mountpoint: /b\n    users: {c: god}\n"
    with pytest.raises(ConfigError) as e:
        load_access(_write(tmp_path, text))
    assert len(e.value.details) == 2, e.value.details


def test_no_file_says_who_provisions_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no access file") as e:
        load_access(tmp_path / "missing.yml")
    assert "dsg_access" in (e.value.hint or "")


def test_the_agent_loads_without_pydantic() -> None:
    """The agent starts for every SSH session: it must not pay pydantic's ~0.1 s import."""
    code = "import sys, dsg.server.agent; print(sorted(m for m in sys.modules if 'pydantic' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
