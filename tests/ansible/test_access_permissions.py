"""dsg_access run for real on this host: read groups, offboarding and key rotation.

A throwaway playbook applies the role as deploy-dsg.yml does (main, the project mountpoint
as dsg_datasets makes it, then the delegation entry point) to users, groups and paths of
its own (`dsgt<tag>...`, a directory under /var/tmp on a filesystem with POSIX ACLs), so
the lab's users and /etc/dsg stay as they are. Then, as the real users (runuser):

- a writer creates repository files the way the agent does (umask 002); a reader can enter,
  list and read them and can write, rename or delete none; a non-member cannot enter;
- a user set to `state: absent` is locked, expired, given nologin, loses their keys (the
  dsg key file and ~/.ssh/authorized_keys) and every group, and a throwaway sshd that
  accepted their key before refuses it after; a writer whose key list changed keeps only
  the new key (rotation);
- every run after the first changes nothing.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.ansible.conftest import sh

pytestmark = pytest.mark.ansible

PLAYBOOK = """
- name: dsg_access as deploy-dsg.yml runs it
  hosts: all
  gather_facts: false
  tasks:
    - name: Groups, users, keys and the access file
      ansible.builtin.import_role:
        name: dsg_access
    - name: The project mountpoint, as dsg_datasets makes it
      ansible.builtin.file:
        path: "{{ dsg_access_mountpoint_root }}/{{ item.name }}"
        state: directory
        owner: root
        group: "{{ item.group }}"
        mode: "2770"
      loop: "{{ dsg_access_projects }}"
    - name: Delegation and read groups
      ansible.builtin.import_role:
        name: dsg_access
        tasks_from: delegation
"""


def as_user(user: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", "sh", "-c", script],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh_login(tmp: Path, user: str, key: Path) -> tuple[bool, str]:
    """Log in to a throwaway sshd with the default key policy (~/.ssh/authorized_keys), as
    sshd treats a user outside the dsg users group. True when a shell command ran."""
    if not (tmp / "hk").exists():
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "hk")])
    port = free_port()
    config = tmp / "sshd_config"
    log = tmp / f"sshd-{port}.log"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {tmp / 'hk'}\nPidFile {tmp / 'sshd.pid'}\n"
        f"UsePAM no\nAllowUsers {user}\nAuthenticationMethods publickey\n"
        "PasswordAuthentication no\nAuthorizedKeysFile .ssh/authorized_keys\nStrictModes no\n"
    )
    (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {(tmp / 'hk.pub').read_text()}")
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log)])
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        proc = subprocess.run(
            ["ssh", "-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes",
             "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={tmp / 'known_hosts'}",
             "-o", "StrictHostKeyChecking=yes", f"{user}@127.0.0.1", "echo SHELL-REACHED"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)
    return "SHELL-REACHED" in proc.stdout, log.read_text() + proc.stderr


def run_role(ansible_tools, work: Path, extra: dict) -> dict[str, int]:
    (work / "vars.json").write_text(json.dumps(extra))
    run = ansible_tools.run(
        "ansible-playbook", "-i", "localhost,", "-c", "local",
        "-e", "ansible_python_interpreter=/usr/bin/python3",
        "-e", f"@{work / 'vars.json'}", str(work / "play.yml"),
    )  # fmt: skip
    assert run.returncode == 0, run.explain()
    return run.recap()["localhost"]


def members(group: str) -> set[str]:
    return set(grp.getgrnam(group).gr_mem)


@pytest.mark.slow  # four playbook runs and two sshd logins: about three minutes
def test_read_groups_offboarding_and_key_rotation(ansible_tools, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("creating users and groups needs root")
    for tool in ("runuser", "setfacl", "/usr/sbin/sshd", "ssh-keygen"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    tag = uuid.uuid4().hex[:6]
    writer, reader, leaver = f"dsgt{tag}w", f"dsgt{tag}r", f"dsgt{tag}x"
    users_group, group = f"dsgt{tag}-users", f"dsgt{tag}-p"
    read_group = f"{group}-read"
    work = Path(tempfile.mkdtemp(prefix="dsg-access-", dir="/var/tmp"))
    work.chmod(0o755)  # the test users must reach the repositories below
    repos = work / "repos"
    repos.mkdir(mode=0o755)
    probe = repos / "acl-probe"
    probe.touch()
    if subprocess.run(["setfacl", "-m", "u:root:r", str(probe)]).returncode != 0:
        shutil.rmtree(work)
        pytest.skip(f"{repos}: the filesystem has no POSIX ACLs")
    probe.unlink()
    (work / "play.yml").write_text(PLAYBOOK)
    keys = {}
    for name in ("k1", "k2", "k3"):
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(work / name)])
        keys[name] = (work / f"{name}.pub").read_text().strip()
    mount = repos / "proj"
    base = {
        "dsg_access_users_group": users_group,
        "dsg_access_config_dir": str(work / "etc"),
        "dsg_access_file": str(work / "etc" / "access.yml"),
        "dsg_access_authorized_keys_dir": str(work / "etc" / "authorized_keys"),
        "dsg_access_manage_sshd": False,
        "dsg_access_zfs_allow": "skip",
        "dsg_access_manage_parent_delegation": False,
        "dsg_access_dataset_parent": "nopool/dsg",
        "dsg_access_mountpoint_root": str(repos),
        "dsg_access_projects": [
            {
                "name": "proj",
                "group": group,
                "users": {writer: "write", reader: "read", leaver: "admin"},
            }
        ],
    }
    before = dict(
        base,
        dsg_access_users=[
            {"name": writer, "ssh_keys": [keys["k1"]]},
            {"name": reader, "ssh_keys": [keys["k3"]]},
            {"name": leaver, "ssh_keys": [keys["k3"]]},
        ],
    )
    after = dict(
        base,
        dsg_access_users=[
            {"name": writer, "ssh_keys": [keys["k2"]]},  # k1 rotated out
            {"name": reader, "ssh_keys": [keys["k3"]]},
            {"name": leaver, "ssh_keys": [keys["k3"]], "state": "absent"},
        ],
    )
    try:
        first = run_role(ansible_tools, work, before)
        assert first["changed"] > 0
        assert run_role(ansible_tools, work, before)["changed"] == 0

        # --- groups and the mountpoint's ACL
        assert members(group) == {writer, leaver}
        assert members(read_group) == {reader}
        assert members(users_group) == {writer, reader, leaver}
        acl = sh(["getfacl", "-cp", str(mount)]).split()
        assert f"group:{read_group}:r-x" in acl and "other::---" in acl, acl

        # --- a writer makes repository files as the agent does (umask 002)
        made = as_user(
            writer,
            f"umask 002 && cd {mount} && mkdir -p objects/ab snapshots/s1 && "
            "printf data > objects/ab/cd && chmod 0444 objects/ab/cd && "
            "printf s1 > HEAD && printf lock > lock",
        )
        assert made.returncode == 0, made.stderr
        # ...which the reader can read, and not change in any way
        read = as_user(reader, f"cd {mount} && ls -a . objects/ab && cat HEAD objects/ab/cd")
        assert read.returncode == 0 and "s1data" in read.stdout, read
        for attempt in (
            "printf s9 > HEAD",
            "printf x > lock",
            "printf x > new-file",
            "mkdir objects/zz",
            "printf x > objects/ab/new",
            "rm -f objects/ab/cd",
            "mv HEAD HEAD.old",
            "chmod 0666 objects/ab/cd",
            "rm -rf snapshots/s1",
        ):
            r = as_user(reader, f"cd {mount} && {attempt}")
            assert r.returncode != 0, f"a reader could run {attempt!r}"
        assert (mount / "HEAD").read_text() == "s1"
        assert (mount / "objects" / "ab" / "cd").read_text() == "data"
        assert (mount / "snapshots" / "s1").is_dir() and (mount / "lock").read_text() == "lock"
        # ...and a user in neither group cannot even enter
        assert as_user("nobody", f"ls {mount}").returncode != 0
        # the writer still can write (the group's, not only the owner's, permission)
        wrote = as_user(leaver, f"cd {mount} && printf s2 > HEAD.new && mv HEAD.new HEAD")
        assert wrote.returncode == 0, wrote.stderr

        # --- offboarding and key rotation
        home = Path(pwd.getpwnam(leaver).pw_dir)
        (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
        (home / ".ssh" / "authorized_keys").write_text(keys["k3"] + "\n")
        shutil.chown(home / ".ssh", leaver)
        shutil.chown(home / ".ssh" / "authorized_keys", leaver)
        ok, log = ssh_login(tmp_path, leaver, work / "k3")
        assert ok, log  # the home key works while the account is open: the test can fail

        changed = run_role(ansible_tools, work, after)["changed"]
        assert changed > 0
        assert run_role(ansible_tools, work, after)["changed"] == 0

        entry = pwd.getpwnam(leaver)
        assert entry.pw_shell == "/usr/sbin/nologin"
        shadow = sh(["getent", "shadow", leaver]).strip().split(":")
        assert shadow[1].startswith("!"), "password not locked"
        assert shadow[7] == "1", f"account expiry is {shadow[7]!r}, expected day 1"
        assert not (home / ".ssh" / "authorized_keys").exists()
        assert not (work / "etc" / "authorized_keys" / leaver).exists()
        assert leaver not in members(group) | members(read_group) | members(users_group)
        access = yaml.safe_load((work / "etc" / "access.yml").read_text())
        assert leaver not in json.dumps(access) and writer in json.dumps(access)
        # the key that worked before opens nothing now, even if put back by hand
        (home / ".ssh" / "authorized_keys").write_text(keys["k3"] + "\n")
        ok, log = ssh_login(tmp_path, leaver, work / "k3")
        assert not ok, log
        assert "locked" in log or "expired" in log, log

        lines = [
            ln
            for ln in (work / "etc" / "authorized_keys" / writer).read_text().splitlines()
            if ln and not ln.startswith("#")
        ]
        assert lines == [f'command="/usr/local/bin/dsg serve",restrict {keys["k2"]}']
    finally:
        for user in (writer, reader, leaver):
            subprocess.run(["userdel", "-r", user], capture_output=True)
        for g in (group, read_group, users_group):
            subprocess.run(["groupdel", g], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def test_role_refuses_write_permissions_for_readers(ansible_tools, tmp_path):
    """Delegating a write permission to the read role fails the run before any change."""
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    extra = {
        "dsg_access_users": [{"name": "nobody"}],
        "dsg_access_projects": [{"name": "p", "group": "dsgt-never", "users": {"nobody": "read"}}],
        "dsg_access_zfs_role_permissions": {"read": ["send", "snapshot"], "write": [], "admin": []},
        "dsg_access_dataset_parent": "nopool/dsg",
        "dsg_access_mountpoint_root": str(tmp_path),
    }
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    run = ansible_tools.run(
        "ansible-playbook", "-i", "localhost,", "-c", "local", "--check",
        "-e", "ansible_python_interpreter=/usr/bin/python3",
        "-e", f"@{tmp_path / 'vars.json'}", str(tmp_path / "play.yml"),
    )  # fmt: skip
    assert run.returncode != 0, run.explain()
    assert "the read role may only be delegated" in run.stdout + run.stderr, run.explain()
    assert subprocess.run(["getent", "group", "dsgt-never"]).returncode != 0
