"""Pull backups, the pure parts: the forced command's request checks, the primary's
snapshot list as the backup host reads it, the resume decision, hold tags and metric files
per named target."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsg.admin import backup as b
from dsg.admin import pull as p
from dsg.core.errors import RepositoryError

PROJECTS = {"alpha": "tank/dsg/alpha", "beta.2": "tank/dsg/beta.2"}
TOKEN = "1-e604ea4bf-e0-789c63a2" + "0" * 40


def req(text: str) -> p.Request:
    return p.parse_request(text, PROJECTS)


def test_requests_that_are_answered() -> None:
    assert req("dsg-backup-1 projects") == p.Request("projects")
    assert req("dsg-backup-1 list alpha") == p.Request("list", "alpha")
    assert req("dsg-backup-1 send alpha s1") == p.Request("send", "alpha", "s1")
    assert req("dsg-backup-1 send beta.2 s12 s3") == p.Request("send", "beta.2", "s12", "s3")
    assert req("dsg-backup-1 hold alpha s4") == p.Request("hold", "alpha", "s4")
    assert req("dsg-backup-1 release alpha s3") == p.Request("release", "alpha", "s3")
    assert req(f"dsg-backup-1 resume alpha {TOKEN}") == p.Request("resume", "alpha", token=TOKEN)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   ",
        "zfs destroy -r tank/dsg/alpha",
        "dsg-backup-1 destroy alpha s1",
        "dsg-backup-1 rollback alpha s1",
        "dsg-backup-1 send gamma s1",  # not a project of this key
        "dsg-backup-1 send tank/dsg/alpha s1",  # a dataset, not a project name
        "dsg-backup-1 send alpha autosnap_2024-01-01",  # not dsg's snapshot
        "dsg-backup-1 send alpha s0",
        "dsg-backup-1 send alpha s01",
        "dsg-backup-1 send alpha s2 s2",  # base not older
        "dsg-backup-1 send alpha s2 s5",
        "dsg-backup-1 send alpha s2 s1 s0",
        "dsg-backup-1 send alpha",
        "dsg-backup-1 send alpha -Rs1",
        "dsg-backup-1 send alpha s1;id",
        "dsg-backup-1 send alpha s1 && id",
        "dsg-backup-1 send alpha $(id)",
        "dsg-backup-1 send alpha s1\nid",
        "dsg-backup-1  send alpha s1",  # double space: an empty word
        "dsg-backup-1 list alpha extra",
        "dsg-backup-1 list ../alpha",
        "dsg-backup-1 resume alpha not-a-token",
        "dsg-backup-1 resume alpha 1-aa-bb-" + "c" * 9000,  # too long
        "dsg-backup-1 hold alpha @s1",
        "dsg-backup-0 list alpha",
        "dsg-backup-1 list álpha",
        "dsg-backup-1 projects now",
    ],
)
def test_anything_else_is_refused(text: str | None) -> None:
    with pytest.raises(p.RequestRefused):
        req(text)  # type: ignore[arg-type]


def test_forced_command_projects() -> None:
    assert p.parse_projects(["alpha=tank/dsg/alpha", "b=t/b"]) == {
        "alpha": "tank/dsg/alpha",
        "b": "t/b",
    }
    for bad in ["alpha", "=tank/x", "al pha=tank/x", "alpha=/tank", "alpha=-tank", "a=t@s1"]:
        with pytest.raises(ValueError):
            p.parse_projects([bad])


def listing(**over: object) -> dict:
    doc = {
        "project": "alpha",
        "dataset": "tank/dsg/alpha",
        "encrypted": False,
        "resume": True,
        "snapshots": [
            {"name": "s1", "guid": "123", "creation": 1700000000},
            {"name": "s2", "guid": "456", "creation": 1700000100},
        ],
    }
    return {**doc, **over}


def test_the_primarys_list_is_checked() -> None:
    got = p.parse_listing(listing(), "alpha")
    assert got["snapshots"] == [
        b.SnapInfo("s1", "123", 1700000000),
        b.SnapInfo("s2", "456", 1700000100),
    ]
    assert got["resume"] is True and got["encrypted"] is False
    # only a literal true counts
    assert p.parse_listing(listing(encrypted="yes", resume=1), "alpha")["resume"] is False
    bad = [
        listing(project="beta"),
        listing(snapshots="s1"),
        listing(snapshots=[{"name": "s1;rm", "guid": "1", "creation": 1}]),
        listing(snapshots=[{"name": "s1", "guid": "12ab", "creation": 1}]),
        listing(snapshots=[{"name": "s1", "guid": "1", "creation": "1"}]),
        listing(dataset="-rf"),
        listing(dataset=None),
        ["alpha"],
    ]
    for doc in bad:
        with pytest.raises((RepositoryError, ValueError)):
            p.parse_listing(doc, "alpha")


def test_remote_source_requests_are_one_word_line() -> None:
    src = p.RemoteSource("dsgpull@primary", ssh_command="ssh -i /k")
    argv = src.send_argv("alpha", b.Step("s3", "s2"), raw=True)
    assert argv[0:3] == ["ssh", "-i", "/k"]
    assert argv[-2:] == ["dsgpull@primary", "dsg-backup-1 send alpha s3 s2"]
    assert src.send_argv("alpha", b.Step("s1", None), raw=False)[-1] == "dsg-backup-1 send alpha s1"
    assert src.resume_argv("alpha", TOKEN)[-1] == f"dsg-backup-1 resume alpha {TOKEN}"
    # whatever the backup host asks for is a request the primary's parser accepts
    for argv in (src.send_argv("alpha", b.Step("s3", "s2"), raw=False),
                 src.resume_argv("alpha", TOKEN)):  # fmt: skip
        assert p.parse_request(argv[-1], PROJECTS).project == "alpha"
    for host in ("", "-oProxyCommand=x", "a b"):
        with pytest.raises(ValueError):
            p.RemoteSource(host)


def test_resume_decision() -> None:
    assert b.decide_resume(None, True, True).action == "none"
    assert b.decide_resume(TOKEN, True, True).action == "resume"
    stuck = b.decide_resume(TOKEN, True, False)
    assert stuck.action == "stuck" and "cannot resume" in (stuck.message or "")
    for token in (None, TOKEN):
        d = b.decide_resume(token, False, True)
        assert d.action == "unsupported" and "zfs-fuse" in (d.message or "")


def test_hold_tags_and_metric_files_per_target() -> None:
    assert b.hold_tag("backup/dsg") == "dsg-backup-backup"
    assert b.hold_tag("backup/dsg", "offsite") == "dsg-backup-offsite"
    for bad in ("Off", "-x", "a_b", "x" * 33, "a/b", ""):
        with pytest.raises(ValueError):
            b.hold_tag("backup/dsg", bad or "@")
    d = Path("/t")
    assert b.backup_metric_path(d, "alpha") == d / "dsg_backup_alpha.prom"
    assert b.backup_metric_path(d, "alpha", "offsite") == d / "dsg_backup_alpha@offsite.prom"
    assert b.drill_metric_path(d, "alpha", "onsite") == d / "dsg_restore_drill_alpha@onsite.prom"
    # two (project, target) pairs never share a file
    assert b.backup_metric_path(d, "a-b", "c") != b.backup_metric_path(d, "a", "b-c")


def test_resume_token_shape() -> None:
    from dsg.zfs.ops import check_resume_token

    assert check_resume_token(TOKEN) == TOKEN
    for bad in ("", "1-2-3", "1-zz-3-4", "-1-2-3-4", TOKEN + " x", "1-2-3-" + "a" * 8200):
        with pytest.raises(ValueError):
            check_resume_token(bad)


def test_resume_token_contents_are_read_from_a_dry_run() -> None:
    out = (
        "resume token contents:\nnvlist version: 0\n\tfromguid = 0x1\n\tobject = 0x3\n"
        "\toffset = 0x0\n\tbytes = 0x0\n\ttoguid = 0x2\n\ttoname = tank/dsg/alpha@s3\n"
    )
    assert p.RESUME_TONAME_RE.search(out).group(1) == "tank/dsg/alpha@s3"  # type: ignore[union-attr]
