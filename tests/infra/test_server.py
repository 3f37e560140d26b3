"""The engine (pinned version, agent handshake), its logs and the sanoid retention config."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.infra import declared as decl
from tests.infra.conftest import check_path, need_group, report

PROTOCOL_VERSION = 1  # engine/dsg/protocol.py


def test_installed_dsg_is_the_pinned_version(host, declared):
    need_group(declared, "dsg_servers")
    srv = declared["server"]
    want = srv["version"]
    problems: list[str] = []
    r = host.run(
        "%s -c %s", f"{srv['venv']}/bin/python",
        'import importlib.metadata as m; print(m.version("dsg"))',
    )  # fmt: skip
    got = r.stdout.strip() if r.rc == 0 else f"not installed ({r.stderr.strip()[-200:]})"
    if got != want:
        problems.append(f"{srv['venv']}: dsg {got}, the inventory pins {want}")
    link = host.file(srv["bin_link"])
    if not link.is_symlink or link.linked_to != host.file(f"{srv['venv']}/bin/dsg").linked_to:
        problems.append(f"{srv['bin_link']}: not a link to {srv['venv']}/bin/dsg")
    r = host.run("%s --version", srv["bin_link"])
    if r.rc != 0 or want not in r.stdout:
        problems.append(f"`{srv['bin_link']} --version` says {r.stdout.strip() or r.stderr!r}")
    report(problems, "the dsg install")


def test_release_is_current_and_hash_checked(host, declared):
    """Method release: the current link points at /opt/dsg/venvs/<release> of the inventory's
    release directory, that venv carries its release.json (wheel sha256 and all), the PATH
    link goes through the current link, and at most dsg_server_keep_releases are kept."""
    need_group(declared, "dsg_servers")
    srv = declared["server"]
    if srv["install_method"] != "release":
        pytest.skip(f"dsg_server_install_method is {srv['install_method']}, not release")
    manifest_path = Path(srv["release_dir"]) / "release.json"
    if not manifest_path.is_file():
        pytest.fail(f"{manifest_path} (dsg_server_release_dir) does not exist on the controller")
    manifest = json.loads(manifest_path.read_text())
    venv = f"{srv['venvs_dir'].rstrip('/')}/{manifest['release']}"
    problems: list[str] = []
    current = host.file(srv["current_link"])
    target = host.run("readlink %s", srv["current_link"]).stdout.strip()
    if not current.is_symlink or target != venv:
        problems.append(f"{srv['current_link']}: points at {target or '(nothing)'}, not {venv}")
    marker = host.file(f"{venv}/.dsg-release.json")
    if not marker.exists:
        problems.append(f"{venv}/.dsg-release.json: missing (the install did not finish)")
    else:
        installed = json.loads(marker.content_string)
        for key in ("release", "version"):
            if installed.get(key) != manifest[key]:
                problems.append(
                    f"{venv}: {key} {installed.get(key)!r}, release.json {manifest[key]!r}"
                )
        if installed.get("wheel", {}).get("sha256") != manifest["wheel"]["sha256"]:
            problems.append(f"{venv}: installed from another dsg wheel than release.json names")
    bin_target = host.run("readlink %s", srv["bin_link"]).stdout.strip()
    if bin_target != f"{srv['current_link']}/bin/dsg":
        problems.append(
            f"{srv['bin_link']}: points at {bin_target}, not {srv['current_link']}/bin/dsg"
        )
    previous = host.run("readlink %s", srv["previous_link"]).stdout.strip()
    if previous and not host.file(f"{previous}/.dsg-release.json").exists:
        problems.append(f"{srv['previous_link']} -> {previous}: not an installed release")
    kept = [line for line in host.run("ls -1 %s", srv["venvs_dir"]).stdout.split() if line.strip()]
    if len(kept) > srv["keep_releases"]:
        problems.append(
            f"{srv['venvs_dir']}: {len(kept)} releases kept, at most {srv['keep_releases']}"
        )
    report(problems, "the dsg release")


def handshake(host: Any, agent: str, user: str, project: str) -> dict[str, Any]:
    """Run `<agent> serve` as `user`, send hello, return the reply (one J frame)."""
    hello = json.dumps({"op": "hello", "version": PROTOCOL_VERSION, "project": project})
    frame = struct.pack(">IB", len(hello), ord("J")) + hello.encode()
    r = host.run(
        "printf %%s %s | base64 -d | runuser -u %s -- %s serve | base64 -w0",
        base64.b64encode(frame).decode(), user, agent,
    )  # fmt: skip
    reply = base64.b64decode(r.stdout.strip() or b"")
    assert len(reply) >= 5, f"`dsg serve` as {user} answered nothing: {r.stderr.strip()}"
    length, kind = struct.unpack(">IB", reply[:5])
    assert chr(kind) == "J" and len(reply) >= 5 + length, f"bad reply frame {reply[:80]!r}"
    return json.loads(reply[5 : 5 + length])


def test_agent_answers_hello_for_each_project(host, declared):
    need_group(declared, "dsg_servers")
    srv = declared["server"]
    projects = [
        (p, decl.project_members(declared, p))
        for p in declared["access"]["projects"]
        if decl.present(p)
    ]
    projects = [(p, m) for p, m in projects if m]
    if not projects:
        pytest.skip("no present project has a present member to connect as")
    problems: list[str] = []
    for project, members in projects:
        user = members[0]
        role = project["users"][user]
        reply = handshake(host, srv["bin_link"], user, project["name"])
        want = {
            "ok": True, "version": PROTOCOL_VERSION, "server": f"dsg {srv['version']}",
            "login": user, "role": role, "type": "zfs",
        }  # fmt: skip
        diff = {k: reply.get(k) for k, v in want.items() if reply.get(k) != v}
        if diff:
            problems.append(
                f"hello from {user} for {project['name']}: got {json.dumps(reply)}, "
                f"expected {json.dumps(want)}"
            )
    report(problems, "the agent's hello")


def test_log_directory_and_logrotate(host, declared):
    need_group(declared, "dsg_servers")
    srv = declared["server"]
    group, log_dir = srv["users_group"], srv["log_dir"].rstrip("/")
    problems: list[str] = []
    # members append to the files; they cannot create, rename or delete any
    check_path(problems, host, log_dir, "directory", "root", group, 0o750)
    for name in srv["log_files"]:
        check_path(problems, host, f"{log_dir}/{name}", "regular", "root", group, 0o660)
    for name in srv["log_files"]:
        if name == srv["audit_file"]:
            continue  # test_audit_log_is_append_only
        rotated = host.run("find %s -maxdepth 1 -name %s -perm /0222", log_dir, f"{name}.*")
        for path in rotated.stdout.split():
            problems.append(f"{path}: a rotated log is still writable (logrotate makes it 0440)")
    conf = "/etc/logrotate.d/dsg"
    check_path(problems, host, conf, "regular", "root", "root", 0o644)
    f = host.file(conf)
    text = f.content_string if f.exists else ""
    audit = f"{log_dir}/{srv['audit_file']}"
    for needle in (
        *(f"{log_dir}/{name}" for name in srv["log_files"] if name != srv["audit_file"]),
        f"{audit} {{",
        "create 0620 root",
        f"    {srv['logrotate_frequency']}\n",
        f"rotate {srv['logrotate_keep']}\n",
        f"create 0660 root {group}\n",
        f"su root {group}\n",
    ):
        if f.exists and needle not in text:
            problems.append(f"{conf}: no {needle.strip()!r}")
    if f.exists:
        r = host.run("logrotate --debug %s", conf)
        if r.rc != 0:
            problems.append(f"{conf}: `logrotate --debug` fails: {r.stderr.strip()[-300:]}")
    report(problems, "the dsg logs")


def test_audit_log_is_append_only(host, declared):
    need_group(declared, "dsg_servers")
    srv = declared["server"]
    audit = f"{srv['log_dir'].rstrip('/')}/{srv['audit_file']}"
    problems: list[str] = []
    check_path(problems, host, audit, "regular", "root", srv["users_group"], 0o620)
    if srv["audit_append_only"] and host.file(audit).exists:
        r = host.run("lsattr -d %s", audit)
        flags = r.stdout.split()[0] if r.rc == 0 and r.stdout.split() else ""
        if "a" not in flags:
            problems.append(
                f"{audit}: not append-only (lsattr: {flags or r.stderr.strip()!r}); "
                "a researcher could truncate the audit trail"
            )
    report(problems, "the audit log")


def parse_sanoid(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
        else:
            raise AssertionError(f"sanoid.conf: cannot parse {raw!r}")
    return sections


def sanoid_value(v: Any) -> str:
    return "yes" if v is True else "no" if v is False else str(v)


def test_retention_config_has_declared_templates(host, declared):
    need_group(declared, "dsg_servers", "dsg_backup_hosts")
    ret = declared["retention"]
    path = f"{ret['conf_dir'].rstrip('/')}/sanoid.conf"
    problems: list[str] = []
    check_path(problems, host, path, "regular", "root", "root", 0o644)
    f = host.file(path)
    if not f.exists:
        report(problems, "the retention config")
    got = parse_sanoid(f.content_string)
    want: dict[str, dict[str, str]] = {}
    for name, settings in ret["templates"].items():
        want[f"template_{name}"] = {k: sanoid_value(v) for k, v in settings.items()}
    for project in ret["projects"]:
        if decl.present(project):
            want[f"{ret['dataset_parent']}/{project['name']}"] = {
                "use_template": project.get("retention") or ret["default_template"],
                "recursive": "no",
            }
    for ds in ret["extra_datasets"]:
        want[ds["name"]] = {
            "use_template": ds["template"],
            "recursive": sanoid_value(ds.get("recursive", "no")),
            **{k: sanoid_value(v) for k, v in (ds.get("settings") or {}).items()},
        }
    for section in sorted(set(got) | set(want)):
        if section not in want:
            problems.append(f"{path}: [{section}] is not in the inventory")
        elif section not in got:
            problems.append(f"{path}: [{section}] is missing")
        elif got[section] != want[section]:
            problems.append(f"{path}: [{section}] is {got[section]}, expected {want[section]}")
    for section, body in got.items():
        template = body.get("use_template")
        if template and f"template_{template}" not in got:
            problems.append(f"{path}: [{section}] uses undefined template {template}")
    if not host.exists("sanoid"):
        problems.append("sanoid is not installed")
    report(problems, "the retention config")
