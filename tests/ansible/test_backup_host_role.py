"""Pull mode's roles on the lab host, for real (zfs-fuse; the OpenZFS run with `zfs allow`
and a real pull is tests/vm/test_site_playbook_backup_pull.py).

`operations.yml --tags backup` with a pull declared on lab-zfs1 (it is both server and backup
host in inventories/lab): dsg_backup_host makes the backup account, the backup parent
dataset, an ed25519 key, the pinned host key and the cron lines of the pull and its drill;
dsg_backup makes the pull account with its root-owned authorized_keys forcing that key to
`dsg admin send-for-backup`. zfs-fuse has no `zfs allow`, so delegation is skipped with a
message (mode auto). A second run changes nothing, a `--check --diff` run changes nothing,
and the pull removed again removes the schedule. What the test creates is removed after.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.ansible.conftest import sh

pytestmark = [pytest.mark.ansible, pytest.mark.zfs]

HOST = "lab-zfs1"
BACKUP_USER = "dsgbk-t"
PULL_USER = "dsgpull-t"
TO = "dsgbackup/pull-t"
KEY_DIR = Path("/etc/dsg/backup-pull-t")
PULL_HOME = Path("/var/lib/dsgpull-t")
CRON = Path("/etc/cron.d/dsg-backup-host-t")
LAB = Path(__file__).resolve().parents[2] / ".lab"


def extra(pulls: bool) -> dict:
    host_key = " ".join((LAB / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()[:2])
    return {
        "dsg_backup_host_user": BACKUP_USER,
        "dsg_backup_host_home": f"/var/lib/{BACKUP_USER}",
        "dsg_backup_host_key_dir": str(KEY_DIR),
        "dsg_backup_host_cron_file": str(CRON),
        "dsg_backup_host_scheduler": "cron",
        "dsg_backup_host_pulls": [
            {
                "name": "labt",
                "from": "127.0.0.1",
                "port": 2222,
                "user": PULL_USER,
                "to": TO,
                "host_key": host_key,
                "projects": ["lab-alpha"],
                "schedule": "7 * * * *",
            }
        ]
        if pulls
        else [],
        "dsg_backup_pull_user": PULL_USER,
        "dsg_backup_pull_home": str(PULL_HOME),
        "dsg_backup_pull_keys": [{"name": "labt", "from_host": HOST}],
        "dsg_access_extra_delegations": {PULL_USER: ["hold", "release", "send"]},
    }


def play(ansible_tools, tmp_path: Path, pulls: bool, *args: str):
    path = tmp_path / "extra.json"
    path.write_text(json.dumps(extra(pulls)))
    run = ansible_tools.playbook("lab", "operations.yml", "--tags", "backup", "-e", f"@{path}",
                                 *args)  # fmt: skip
    recap = run.recap()
    assert run.returncode == 0, run.explain()
    assert recap[HOST]["failed"] == 0, run.explain()
    return run, recap[HOST]


def cleanup() -> None:
    for user in (BACKUP_USER, PULL_USER):
        subprocess.run(["userdel", user], capture_output=True)
    subprocess.run(["zfs", "destroy", "-r", TO], capture_output=True)
    subprocess.run(["rm", "-rf", str(KEY_DIR), str(PULL_HOME), str(CRON),
                    f"/var/lib/{BACKUP_USER}"])  # fmt: skip


@pytest.mark.slow  # the extended tier: three converges of both backup roles: 2-5 min
def test_pull_roles_converge_idempotent_check_safe(ansible_tools, ansible_lab, tmp_path) -> None:
    if not (LAB / "sshd" / "ssh_host_ed25519_key.pub").exists():
        pytest.skip("the lab sshd's host key is missing (scripts/lab/sshd up)")
    cleanup()
    try:
        first, recap = play(ansible_tools, tmp_path, True)
        assert recap["changed"] > 0, first.explain()
        assert "ZFS delegation not managed" in first.stdout or "zfs allow is not managed" in (
            first.stdout
        ), first.explain()  # zfs-fuse: skipped, saying so

        # the backup host's side
        assert sh(["getent", "passwd", BACKUP_USER]).strip().endswith(":/usr/sbin/nologin")
        assert sh(["zfs", "list", "-H", "-o", "name", TO]).strip() == TO
        assert oct(KEY_DIR.stat().st_mode & 0o777) == "0o700"
        key = KEY_DIR / "labt"
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        known = (KEY_DIR / "known_hosts").read_text()
        assert "[127.0.0.1]:2222 ssh-ed25519 " in known, known
        lines = [ln for ln in CRON.read_text().splitlines() if ln.startswith(("7 ", "53 "))]
        assert len(lines) == 2, CRON.read_text()  # the pull and the drill of lab-alpha
        assert "/run/lock/dsg-pull-labt.lock" in lines[0]
        assert f"--to-prefix 'runuser -u {BACKUP_USER} --'" in lines[0], lines[0]
        assert "admin restore-drill lab-alpha --from dsgbackup/pull-t" in lines[1], lines[1]

        # the server's side: the key behind the forced command, nobody else's to change
        ak = PULL_HOME / ".ssh" / "authorized_keys"
        assert ak.stat().st_uid == 0 and oct(ak.stat().st_mode & 0o777) == "0o644"
        assert PULL_HOME.stat().st_uid == 0 and (PULL_HOME / ".ssh").stat().st_uid == 0
        pub = key.with_name("labt.pub").read_text().split()
        (line,) = [ln for ln in ak.read_text().splitlines() if not ln.startswith("#")]
        opts, _, rest = line.rpartition('" ')
        assert opts.startswith('restrict,command="/usr/local/bin/dsg admin send-for-backup '
                               '--name labt --project lab-alpha=dsglab/dsg/lab-alpha')  # fmt: skip
        assert rest.split()[:2] == pub[:2], (rest, pub)
        forced = shlex.split(line.split('"')[1])
        assert forced[1:5] == ["admin", "send-for-backup", "--name", "labt"]

        # idempotent, and a check run changes nothing
        again, recap = play(ansible_tools, tmp_path, True)
        assert recap["changed"] == 0, again.explain()
        before = (ak.read_text(), CRON.read_text(), (KEY_DIR / "known_hosts").read_text())
        check, recap = play(ansible_tools, tmp_path, True, "--check", "--diff")
        assert recap["changed"] == 0, check.explain()
        assert (ak.read_text(), CRON.read_text(), (KEY_DIR / "known_hosts").read_text()) == before

        # no pulls: the schedule goes (the accounts and the copy stay: data is never removed)
        gone, _ = play(ansible_tools, tmp_path, False)
        assert not CRON.exists(), gone.explain()
        assert sh(["zfs", "list", "-H", "-o", "name", TO]).strip() == TO
    finally:
        cleanup()
