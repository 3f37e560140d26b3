"""The agent log directory as dsg_server makes it: members append, and delete nothing.

The role's logrotate template is rendered by Ansible for a throwaway log directory
(`root:<group> 0750` under /var/tmp) and run by the real logrotate; then a throwaway member
of the group (runuser) appends to the live logs and fails to delete, rename, overwrite or
create anything. A control directory with the former mode (2770, rotated file 0660) shows
that the same attempts succeed there, so the checks can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.ansible.conftest import REPO, sh

pytestmark = pytest.mark.ansible


def as_user(user: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", "sh", "-c", script],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


ATTEMPTS = (
    "rm -f agent.jsonl.1",
    "mv agent.jsonl.1 gone",
    "printf x > agent.jsonl.1",
    "mv agent.jsonl gone",
    "printf x > planted",
)


def test_members_append_to_logs_and_delete_nothing(ansible_tools):
    if os.geteuid() != 0:
        pytest.skip("creating a user and root-owned logs needs root")
    for tool in ("runuser", "logrotate", "chattr"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"{tool} is not installed")
    tag = uuid.uuid4().hex[:6]
    group, member = f"dsgt{tag}-users", f"dsgt{tag}m"
    work = Path(tempfile.mkdtemp(prefix="dsg-logs-", dir="/var/tmp"))
    work.chmod(0o755)
    logs, control = work / "log", work / "control"
    try:
        sh(["groupadd", group])
        sh(["useradd", "-M", "-N", "-g", group, "-s", "/bin/sh", member])
        conf = work / "logrotate.conf"
        extra = {
            "dsg_server_log_dir": str(logs),
            "dsg_server_log_files": ["agent.jsonl"],
            "dsg_server_audit_file": "audit.jsonl",
            "dsg_server_users_group": group,
            "dsg_server_logrotate_frequency": "weekly",
            "dsg_server_logrotate_keep": 4,
            "dsg_server_audit_rotate_frequency": "monthly",
            "dsg_server_audit_keep": 120,
            "dsg_server_audit_append_only": True,
        }
        (work / "vars.json").write_text(json.dumps(extra))
        run = ansible_tools.run(
            "ansible", "localhost", "-c", "local", "-i", "localhost,",
            "-e", "ansible_python_interpreter=/usr/bin/python3", "-e", f"@{work / 'vars.json'}",
            "-m", "ansible.builtin.template",
            "-a", f"src={REPO}/roles/dsg_server/templates/logrotate-dsg.j2 dest={conf} mode=0644",
        )  # fmt: skip
        assert run.returncode == 0, run.explain()

        # the directory and files as roles/dsg_server/tasks/config.yml makes them
        for d, mode in ((logs, 0o750), (control, 0o2770)):
            d.mkdir()
            shutil.chown(d, "root", group)
            d.chmod(mode)
            for name, fmode in (("agent.jsonl", 0o660), ("audit.jsonl", 0o620)):
                (d / name).write_text('{"event": "old"}\n')
                shutil.chown(d / name, "root", group)
                (d / name).chmod(fmode)
        sh(["chattr", "+a", str(logs / "audit.jsonl")])
        proc = subprocess.run(
            ["logrotate", "-f", "-s", str(work / "state"), str(conf)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        rotated = logs / "agent.jsonl.1"
        assert stat.S_IMODE(rotated.stat().st_mode) == 0o440, oct(rotated.stat().st_mode)
        assert stat.S_IMODE((logs / "agent.jsonl").stat().st_mode) == 0o660
        assert [p.name for p in logs.glob("audit.jsonl-*")], list(logs.iterdir())

        # the member appends to both live logs...
        appended = as_user(
            member, f"cd {logs} && printf new >> agent.jsonl && printf new >> audit.jsonl"
        )
        assert appended.returncode == 0, appended.stderr
        # ...and can neither truncate the audit log nor touch anything else
        for attempt in (*ATTEMPTS, ": > audit.jsonl", "rm -f audit.jsonl-*"):
            r = as_user(member, f"cd {logs} && {attempt}")
            assert r.returncode != 0, f"a member could run {attempt!r} in {logs}"
        assert rotated.read_text() == '{"event": "old"}\n'

        # the former layout lets a member do every one of them
        for attempt in ATTEMPTS:
            for name in ("agent.jsonl", "agent.jsonl.1"):
                (control / name).write_text("old\n")
                shutil.chown(control / name, "root", group)
                (control / name).chmod(0o660)
            r = as_user(member, f"cd {control} && {attempt}")
            assert r.returncode == 0, f"control: {attempt!r} failed: {r.stderr}"
    finally:
        subprocess.run(["chattr", "-a", *map(str, logs.glob("audit.jsonl*"))], capture_output=True)
        subprocess.run(["userdel", member], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
