"""Project groups, users, forced-command keys and /etc/dsg/access.yml, against the inventory."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.infra import declared as decl
from tests.infra.conftest import check_path, need_group, report


def getent(host: Any, db: str, name: str) -> list[str] | None:
    r = host.run("getent %s %s", db, name)
    return r.stdout.strip().split(":") if r.rc == 0 else None


def test_project_groups_have_exactly_their_members(host, declared):
    need_group(declared, "dsg_servers")
    problems: list[str] = []
    for user in declared["access"]["users"]:
        if not decl.present(user):
            continue
        entry = getent(host, "passwd", user["name"])
        if entry is None:
            problems.append(f"user {user['name']}: missing")
        elif user.get("uid") is not None and int(entry[2]) != int(user["uid"]):
            problems.append(f"user {user['name']}: uid is {entry[2]}, expected {user['uid']}")
    groups = [
        (p["group"], decl.group_members(declared, p), p.get("gid"), f"project {p['name']}")
        for p in declared["access"]["projects"]
    ]
    groups += [
        (decl.read_group(p), decl.read_members(declared, p), p.get("read_gid"),
         f"readers of {p['name']}")
        for p in declared["access"]["projects"]
    ]  # fmt: skip
    groups.append((declared["access"]["users_group"], decl.active_users(declared), None, "all"))
    for group, members, gid, why in groups:
        entry = getent(host, "group", group)
        if entry is None:
            problems.append(f"group {group}: missing ({why})")
            continue
        if gid is not None and int(entry[2]) != int(gid):
            problems.append(f"group {group}: gid is {entry[2]}, expected {gid} ({why})")
        have = {m for m in entry[3].split(",") if m}
        if extra := sorted(have - set(members)):
            problems.append(f"group {group}: members not in the inventory: {extra} ({why})")
        if missing := sorted(set(members) - have):
            problems.append(f"group {group}: declared members missing: {missing} ({why})")
    report(problems, "project groups and users")


def test_authorized_keys_only_run_the_agent(host, declared):
    need_group(declared, "dsg_servers")
    access = declared["access"]
    keydir = access["authorized_keys_dir"].rstrip("/")
    prefix = f'command="{access["agent_command"]}",restrict '
    problems: list[str] = []
    check_path(problems, host, keydir, "directory", "root", "root", 0o755)
    active = set(decl.active_users(declared))
    listing = host.run("find %s -mindepth 1 -maxdepth 1 -printf '%%f\\n'", keydir)
    for name in sorted(set(listing.stdout.split()) - active):
        problems.append(f"{keydir}/{name}: key file of a user without dsg access")
    for user in access["users"]:
        if user["name"] not in active:
            continue
        path = f"{keydir}/{user['name']}"
        check_path(problems, host, path, "regular", "root", "root", 0o644)
        f = host.file(path)
        if not f.exists:
            continue
        want = [decl.key_line(declared, k) for k in user.get("ssh_keys") or []]
        lines = [
            (n, line.strip())
            for n, line in enumerate(f.content_string.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        for n, line in lines:
            if not line.startswith(prefix):
                problems.append(
                    f"{path} line {n}: {line[:60]!r}... does not carry exactly "
                    f"{prefix.strip()!r} (the key could do more than run the dsg agent)"
                )
            elif line not in want:
                problems.append(f"{path} line {n}: key not in the inventory: {line[:80]!r}...")
        for key in want:
            if key not in [line for _, line in lines]:
                problems.append(f"{path}: declared key missing: {key[:80]!r}...")
    report(problems, "the dsg authorized_keys")


def test_access_file_matches_inventory(host, declared):
    need_group(declared, "dsg_servers")
    access = declared["access"]
    path = access["file"]
    problems: list[str] = []
    check_path(problems, host, path, "regular", "root", access["users_group"], 0o640)
    f = host.file(path)
    if f.exists:
        got = yaml.safe_load(f.content_string) or {}
        want = decl.access_document(declared)
        got_p, want_p = got.get("projects") or {}, want["projects"]
        for extra in sorted(set(got) - {"projects"}):
            problems.append(f"{path}: unexpected top-level key {extra!r}")
        for name in sorted(set(got_p) | set(want_p)):
            if name not in want_p:
                problems.append(f"{path}: project {name} is not (or no longer) in the inventory")
            elif name not in got_p:
                problems.append(f"{path}: project {name} is missing")
            elif got_p[name] != want_p[name]:
                problems.append(
                    f"{path}: project {name} is {json.dumps(got_p[name], sort_keys=True)}, "
                    f"the inventory gives {json.dumps(want_p[name], sort_keys=True)}"
                )
    report(problems, "the access file")


def test_readers_enter_projects_by_acl_only(host, declared):
    """The read group has r-x on its project's mountpoint and nothing else there; without
    ACLs (dsg_access_read_acl false) readers are in the project group instead."""
    need_group(declared, "dsg_servers")
    access = declared["access"]
    if not access["read_acl"]:
        pytest.skip("dsg_access_read_acl is false on this host (no POSIX ACLs)")
    root = access["mountpoint_root"].rstrip("/")
    problems: list[str] = []
    for project in access["projects"]:
        if not decl.present(project):
            continue
        path = f"{root}/{project['name']}"
        r = host.run("getfacl -cp -- %s", path)
        if r.rc != 0:
            problems.append(f"{path}: getfacl failed: {r.stderr.strip()[-200:]}")
            continue
        entries = {line.split("#")[0].strip() for line in r.stdout.splitlines()} - {""}
        named = {e for e in entries if e.split(":")[1] and not e.startswith("default:")}
        want = {f"group:{decl.read_group(project)}:r-x"}
        if named != want:
            problems.append(
                f"{path}: named ACL entries are {sorted(named)}, expected {sorted(want)}"
            )
        if "other::---" not in entries:
            problems.append(f"{path}: others may enter ({sorted(entries)})")
    report(problems, "the read groups' ACLs")


def test_offboarded_users_are_locked_without_keys(host, declared):
    need_group(declared, "dsg_servers")
    access = declared["access"]
    if not access["offboard_accounts"]:
        pytest.skip("dsg_access_offboard_accounts is false")
    problems: list[str] = []
    # A host with no offboarded user passes: there is nothing that could still log in.
    for name in decl.absent_users(declared):
        entry = getent(host, "passwd", name)
        if entry is None:
            continue  # never had an account here
        if entry[6] != access["offboard_shell"]:
            problems.append(f"user {name}: shell {entry[6]}, expected {access['offboard_shell']}")
        shadow = getent(host, "shadow", name) or []
        if len(shadow) < 8 or not shadow[1].startswith("!"):
            problems.append(f"user {name}: password not locked")
        if len(shadow) < 8 or not shadow[7].isdigit() or int(shadow[7]) > 1:
            problems.append(f"user {name}: account not expired (expiry {shadow[7:8]})")
        for keys in ("authorized_keys", "authorized_keys2"):
            if host.file(f"{entry[5]}/.ssh/{keys}").exists:
                problems.append(f"user {name}: {entry[5]}/.ssh/{keys} still exists")
    report(problems, "offboarded accounts")
