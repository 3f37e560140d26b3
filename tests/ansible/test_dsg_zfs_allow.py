"""Unit tests for roles/dsg_access/library/dsg_zfs_allow.py: parsing, planning, rendering."""

from __future__ import annotations

import pytest

from tests.ansible._load import load

m = load("dsg_access/library/dsg_zfs_allow.py")

DS = "tank/dsg/proj"

# Output shape from OpenZFS's `zfs allow`: the dataset's own block, then its ancestors'.
SAMPLE = f"""\
---- Permissions on {DS} ---------------------------------------------
Permission sets:
\t@snapper hold,snapshot
Create time permissions:
\tdestroy
Local permissions:
\tuser alice send
\tgroup staff hold
Descendent permissions:
\tuser bob rollback
Local+Descendent permissions:
\tuser alice snapshot,userprop
\teveryone diff
---- Permissions on tank/dsg -----------------------------------------
Local+Descendent permissions:
\tuser mallory destroy,mount
"""


def test_parse_keeps_only_the_datasets_own_block():
    p = m.parse_allow(SAMPLE, DS)
    assert ("user", "mallory", "local") not in p["grants"]
    assert p["sets"] == {"@snapper": frozenset({"hold", "snapshot"})}
    assert p["create"] == frozenset({"destroy"})
    assert p["grants"][("user", "alice", "local")] == frozenset({"send", "snapshot", "userprop"})
    assert p["grants"][("user", "alice", "descendent")] == frozenset({"snapshot", "userprop"})
    assert p["grants"][("group", "staff", "local")] == frozenset({"hold"})
    assert p["grants"][("user", "bob", "descendent")] == frozenset({"rollback"})
    assert ("user", "bob", "local") not in p["grants"]
    assert p["grants"][("everyone", "", "local")] == frozenset({"diff"})
    assert p["grants"][("everyone", "", "descendent")] == frozenset({"diff"})


def test_parse_ancestor_only_and_empty_output():
    only_parent = "---- Permissions on tank/dsg ----\nLocal permissions:\n\tuser x send\n"
    assert m.parse_allow(only_parent, DS) == m.empty_perms()
    assert m.parse_allow("", DS) == m.empty_perms()


def test_parse_unknown_uid():
    text = f"---- Permissions on {DS} ----\nLocal permissions:\n\tuser (unknown: 1001) send\n"
    assert m.parse_allow(text, DS)["grants"] == {("user", "1001", "local"): frozenset({"send"})}


@pytest.mark.parametrize(
    "text",
    [
        f"---- Permissions on {DS} ----\nWeird header:\n\tuser a send\n",
        f"---- Permissions on {DS} ----\nLocal permissions:\n\tuser a b send\n",
        f"---- Permissions on {DS} ----\n\tuser a send\n",
    ],
)
def test_parse_refuses_what_it_does_not_understand(text):
    with pytest.raises(m.AllowError):
        m.parse_allow(text, DS)


def test_desired_expands_local_plus_descendent():
    d = m.desired_perms(users={"alice": ["snapshot", "send"]})
    assert d["grants"] == {
        ("user", "alice", "local"): frozenset({"send", "snapshot"}),
        ("user", "alice", "descendent"): frozenset({"send", "snapshot"}),
    }
    assert m.desired_perms(users={"alice": ["send"]}, scope="local")["grants"] == {
        ("user", "alice", "local"): frozenset({"send"})
    }


def test_desired_drops_empty_and_names_sets():
    d = m.desired_perms(users={"carol": []}, sets={"snapper": ["snapshot"]})
    assert d["grants"] == {}
    assert d["sets"] == {"@snapper": frozenset({"snapshot"})}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"users": {"alice": ["send,destroy"]}},
        {"users": {"al ice": ["send"]}},
        {"users": {"alice": ["send; rm"]}},
        {"everyone": [""]},
        {"scope": "sideways"},
        {"users": ["alice"]},
    ],
)
def test_desired_rejects_bad_input(kwargs):
    with pytest.raises(m.AllowError):
        m.desired_perms(**kwargs)


def test_plan_is_empty_when_equal():
    cur = m.parse_allow(SAMPLE, DS)
    assert m.plan(cur, cur, DS) == []


def test_plan_from_nothing_combines_scopes():
    want = m.desired_perms(users={"bob": ["snapshot", "hold"]}, groups={"g": ["send"]})
    assert m.plan(m.empty_perms(), want, DS) == [
        ["allow", "-ld", "-g", "g", "send", DS],
        ["allow", "-ld", "-u", "bob", "hold,snapshot", DS],
    ]


def test_plan_removes_every_extra_and_adds_missing():
    cur = m.parse_allow(SAMPLE, DS)
    want = m.desired_perms(users={"alice": ["snapshot", "hold"]})
    cmds = m.plan(cur, want, DS)
    assert ["unallow", "-l", "-u", "alice", "send", DS] in cmds
    assert ["unallow", "-ld", "-u", "alice", "userprop", DS] in cmds
    assert ["unallow", "-d", "-u", "bob", "rollback", DS] in cmds
    assert ["unallow", "-l", "-g", "staff", "hold", DS] in cmds
    assert ["unallow", "-ld", "-e", "diff", DS] in cmds
    assert ["allow", "-ld", "-u", "alice", "hold", DS] in cmds
    assert ["unallow", "-c", "destroy", DS] in cmds
    assert cmds[-1] == ["unallow", "-s", "@snapper", DS]
    # removals come before additions, so a grant moving between scopes never overlaps
    first_allow = next(i for i, c in enumerate(cmds) if c[0] == "allow")
    assert all(c[0] == "unallow" for c in cmds[:first_allow])


def test_plan_then_apply_converges():
    """Simulate ZFS: applying the plan to the parsed state gives the declared state."""
    cur = m.parse_allow(SAMPLE, DS)
    want = m.desired_perms(
        users={"alice": ["hold"], "dave": ["send"]},
        everyone=["diff"],
        create_time=["snapshot"],
        sets={"@snapper": ["snapshot"]},
    )
    state = {
        "grants": {k: set(v) for k, v in cur["grants"].items()},
        "create": set(cur["create"]),
        "sets": {k: set(v) for k, v in cur["sets"].items()},
    }
    flags = {"-u": "user", "-g": "group", "-e": "everyone"}
    for verb, *args, ds in m.plan(cur, want, DS):
        assert ds == DS
        if args[0] == "-c":
            getattr(state["create"], "update" if verb == "allow" else "difference_update")(
                args[1].split(",")
            )
            continue
        if args[0] == "-s":
            name = args[1]
            perms = set(args[2].split(",")) if len(args) > 2 else None
            if verb == "allow":
                state["sets"].setdefault(name, set()).update(perms)
            elif perms is None:
                del state["sets"][name]
            else:
                state["sets"][name] -= perms
            continue
        scope_flag, who_flag, *rest = args
        kind = flags[who_flag]
        who = "" if kind == "everyone" else rest.pop(0)
        perms = set(rest[0].split(","))
        scopes = {"-l": ["local"], "-d": ["descendent"], "-ld": ["local", "descendent"]}
        for scope in scopes[scope_flag]:
            bucket = state["grants"].setdefault((kind, who, scope), set())
            bucket.update(perms) if verb == "allow" else bucket.difference_update(perms)
    final = {
        "grants": {k: frozenset(v) for k, v in state["grants"].items() if v},
        "create": frozenset(state["create"]),
        "sets": {k: frozenset(v) for k, v in state["sets"].items() if v},
    }
    assert final == want


def test_render_round_trips_through_parse():
    cur = m.parse_allow(SAMPLE, DS)
    assert m.parse_allow(m.render(cur, DS), DS) == cur
    assert "no delegated permissions" in m.render(m.empty_perms(), DS)


@pytest.mark.parametrize(
    ("stderr", "unsupported"),
    [
        ("internal error: /usr/lib/zfs/pyzfs.py not found", True),
        ("cannot open 'x': dataset does not exist", False),
        ("", False),
    ],
)
def test_unsupported_detection(stderr, unsupported):
    assert m.is_unsupported(stderr) is unsupported
