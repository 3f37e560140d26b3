"""A real run of the toolkit against the lab: site.yml on the lab sshd host with zfs-fuse pools.

One test, in order (each step needs the previous): converge, converge again with changed=0,
check the host, drift two things by hand and see `--check --diff` report them without
changing anything, then converge to repair. Timings are printed (pytest -s) and written to
<lab>/ansible-timings.txt.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.ansible.conftest import REPO, sh

pytestmark = pytest.mark.ansible

POOL = "dsglab"
PARENT = "dsglab/dsg"
PROJECTS = {
    "lab-alpha": ("dsg-lab-alpha", {"alice": "admin", "bob": "write", "carol": "read"}),
    "lab-beta": ("dsg-lab-beta", {"bob": "admin", "carol": "write"}),
}


def zget(prop: str, dataset: str) -> str:
    return sh(["zfs", "get", "-H", "-p", "-o", "value", prop, dataset]).strip()


def members(group: str) -> set[str]:
    return set(grp.getgrnam(group).gr_mem)


def converge(ansible_tools, *args):
    run = ansible_tools.playbook("lab", "site.yml", *args)
    assert run.returncode == 0, run.explain()
    recap = run.recap()
    assert set(recap) == {"lab-zfs1"}, run.explain()
    assert recap["lab-zfs1"]["failed"] == 0, run.explain()
    assert recap["lab-zfs1"]["unreachable"] == 0, run.explain()
    return run, recap["lab-zfs1"]


def check_host(lab_dir: Path) -> None:
    mnt_root = lab_dir / "zfs" / "mnt" / POOL / "dsg"
    assert zget("mountpoint", PARENT) == str(mnt_root)
    assert zget("compression", PARENT) == "on"
    assert zget("atime", PARENT) == "off"
    assert zget("quota", f"{PARENT}/lab-alpha") == str(256 * 1024**2)
    for name, (group, users) in PROJECTS.items():
        ds = f"{PARENT}/{name}"
        assert zget("dsg:project", ds) == name
        st = (mnt_root / name).stat()
        assert grp.getgrgid(st.st_gid).gr_name == group
        assert stat.S_IMODE(st.st_mode) == 0o2770, oct(st.st_mode)
        # zfs-fuse has no ACLs (dsg_access_read_acl false): readers stay in the project group
        assert members(group) == set(users)
        assert members(f"{group}-read") == {u for u, r in users.items() if r == "read"}
        lock = mnt_root / ".dsg-locks" / f"{name}.lock"
        st = lock.stat()
        assert grp.getgrgid(st.st_gid).gr_name == group and stat.S_IMODE(st.st_mode) == 0o660
    assert members("dsg-users") == {"alice", "bob", "carol"}

    access = yaml.safe_load(Path("/etc/dsg/access.yml").read_text())
    assert access == {
        "projects": {
            name: {
                "group": group,
                "dataset": f"{PARENT}/{name}",
                "mountpoint": str(mnt_root / name),
                "users": users,
            }
            for name, (group, users) in PROJECTS.items()
        }
    }
    st = Path("/etc/dsg/access.yml").stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and grp.getgrgid(st.st_gid).gr_name == "dsg-users"

    for user in ("alice", "bob", "carol"):
        keyfile = Path("/etc/dsg/authorized_keys") / user
        pub = (lab_dir / "keys" / f"{user}.pub").read_text().strip()
        lines = [ln for ln in keyfile.read_text().splitlines() if ln and not ln.startswith("#")]
        assert lines == [f'command="/usr/local/bin/dsg serve",restrict {pub}']
        assert keyfile.stat().st_uid == 0

    agent = Path("/usr/local/bin/dsg")
    assert agent.is_symlink() and os.access(agent, os.X_OK)
    version = subprocess.run([str(agent), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("dsg "), version
    assert Path("/etc/logrotate.d/dsg").is_file()
    log_dir = Path("/var/log/dsg").stat()
    assert stat.S_IMODE(log_dir.st_mode) == 0o750  # members append, delete nothing
    agent_log = Path("/var/log/dsg/agent.jsonl").stat()
    assert grp.getgrgid(agent_log.st_gid).gr_name == "dsg-users"
    assert stat.S_IMODE(agent_log.st_mode) == 0o660

    sanoid = Path("/etc/sanoid/sanoid.conf").read_text()
    assert "[dsglab/dsg/lab-alpha]\n\tuse_template = dsg_primary" in sanoid
    assert "[dsglab/dsg/lab-beta]\n\tuse_template = dsg_none" in sanoid
    assert "[dsgbackup]\n\tuse_template = dsg_backup\n\trecursive = yes" in sanoid
    assert "dsglab" in Path("/etc/cron.d/dsg-zfs-scrub").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_forced_command(ansible_tools, lab_dir: Path, tmp: Path) -> None:
    """The production sshd drop-in, rendered by the role's template, really confines a user.

    A throwaway sshd (the lab's own sshd is not configured by Ansible) includes the drop-in;
    alice, now in dsg-users, logs in with her lab key. Her ~/.ssh/authorized_keys would give
    her a shell; the drop-in must make sshd ignore it, use /etc/dsg/authorized_keys/alice, and
    run the dsg agent instead of the command she asked for.
    """
    dropin = tmp / "50-dsg.conf"
    run = ansible_tools.run(
        "ansible", "-i", "inventories/lab", "lab-zfs1", "-c", "local",
        "-e", "ansible_become=false", "-e", "ansible_python_interpreter=/usr/bin/python3",
        "-m", "ansible.builtin.template",
        "-a", f"src={REPO}/roles/dsg_access/templates/sshd-dsg.conf.j2 dest={dropin} mode=0644",
        "-e", "dsg_access_users_group=dsg-users",
        "-e", "dsg_access_authorized_keys_dir=/etc/dsg/authorized_keys",
        "-e", "dsg_access_agent_command='/usr/local/bin/dsg serve'",
    )  # fmt: skip
    assert run.returncode == 0, run.explain()
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "hk")])
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {tmp / 'hk'}\nPidFile {tmp / 'sshd.pid'}\n"
        "UsePAM no\nAllowUsers alice\nAuthenticationMethods publickey\n"
        "PasswordAuthentication no\nAuthorizedKeysFile .ssh/authorized_keys\n"
        f"Include {dropin}\n"
    )
    sh(["/usr/sbin/sshd", "-t", "-f", str(config)])
    effective = sh(
        ["/usr/sbin/sshd", "-T", "-f", str(config), "-C", "user=alice,host=x,addr=1.2.3.4"]
    )
    assert "forcecommand /usr/local/bin/dsg serve" in effective
    assert "authorizedkeysfile /etc/dsg/authorized_keys/%u" in effective
    (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {(tmp / 'hk.pub').read_text()}")
    sshd = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(tmp / "sshd.log")]
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        ssh = [
            "ssh", "-p", str(port), "-i", str(lab_dir / "keys" / "alice"),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={tmp / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "alice@127.0.0.1",
        ]  # fmt: skip
        proc = subprocess.run(
            [*ssh, "echo", "SHELL-REACHED"], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log = (tmp / "sshd.log").read_text()
        assert "Accepted publickey for alice" in log, log + proc.stderr
        assert "SHELL-REACHED" not in proc.stdout, proc
        # the agent ran instead (whatever it answers to a bare `serve` with no client)
        assert proc.returncode != 255, proc
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)


@pytest.mark.slow  # the extended tier: four site.yml runs and add-project: 5-15 min
def test_site_converges_is_idempotent_and_check_mode_reports_drift(
    ansible_tools, ansible_lab, tmp_path
):
    timings: dict[str, float] = {}

    first, _ = converge(ansible_tools)
    timings["first run"] = first.seconds
    # zfs-fuse has no `zfs allow`: the role must say it skipped delegation, not fail
    assert "zfs allow is not supported on this host" in " ".join(first.stdout.split())

    second, recap2 = converge(ansible_tools)
    timings["second run"] = second.seconds
    assert recap2["changed"] == 0, second.explain()

    check_host(ansible_lab.lab_dir)

    # Drift by hand: two declared dataset properties and an extra member of a project group.
    sh(["zfs", "set", "atime=on", PARENT])
    sh(["zfs", "set", "quota=128M", f"{PARENT}/lab-alpha"])
    sh(["gpasswd", "-a", "dsgadmin", "dsg-lab-beta"])
    try:
        check, recap3 = converge(ansible_tools, "--check", "--diff")
        timings["check --diff"] = check.seconds
        assert recap3["changed"] == 3, check.explain()
        out = check.stdout
        assert '-    "atime": "on"' in out or "atime: 'on'" in out or '"atime": "on"' in out, out
        assert str(128 * 1024**2) in out, check.explain()  # the quota's current value
        assert "dsgadmin" in out, check.explain()  # the group diff names the intruder
        # ...and changed nothing
        assert zget("atime", PARENT) == "on"
        assert zget("quota", f"{PARENT}/lab-alpha") == str(128 * 1024**2)
        assert "dsgadmin" in members("dsg-lab-beta")
    finally:
        repair, recap4 = converge(ansible_tools)
        timings["repair run"] = repair.seconds
    assert recap4["changed"] == 3, repair.explain()
    assert zget("atime", PARENT) == "off"
    assert zget("quota", f"{PARENT}/lab-alpha") == str(256 * 1024**2)
    assert "dsgadmin" not in members("dsg-lab-beta")

    check_forced_command(ansible_tools, ansible_lab.lab_dir, tmp_path)

    add = ansible_tools.playbook("lab", "add-project.yml", "-e", "project=lab-beta")
    assert add.returncode == 0, add.explain()
    assert add.recap()["lab-zfs1"]["changed"] == 0, add.explain()
    timings["add-project (no-op)"] = add.seconds

    report = "\n".join(f"{k}: {v:.1f}s" for k, v in timings.items())
    print("\nAnsible lab timings:\n" + report)
    (ansible_lab.lab_dir / "ansible-timings.txt").write_text(report + "\n")


def test_sanoid_prunes_only_its_own_snapshots(ansible_tools, ansible_lab):
    """Real sanoid against real zfs-fuse snapshots: @sN survive, autosnap_ ones are pruned.

    zfs-fuse's `zfs get` has no -t, which sanoid uses to list snapshots; a two-line shim
    first on PATH answers that one query with `zfs get -Hrp` filtered to snapshots.
    """
    ansible_lab.up()
    if not Path("/usr/sbin/sanoid").exists():
        pytest.skip("sanoid is not installed (the lab site.yml run installs it)")
    work = ansible_lab.lab_dir / "ansible-sanoid" / uuid.uuid4().hex[:8]
    (work / "bin").mkdir(parents=True)
    (work / "cache").mkdir()
    (work / "run").mkdir()
    shim = work / "bin" / "zfs"
    shim.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = get ] && [ "$2" = -Hrpt ] && [ "$3" = snapshot ]; then\n'
        "  shift 3; /usr/sbin/zfs get -Hrp \"$@\" | awk -F '\\t' '$1 ~ /@/'; exit 0\n"
        "fi\n"
        'exec /usr/sbin/zfs "$@"\n'
    )
    shim.chmod(0o755)
    ds = f"{POOL}/sanoid-{uuid.uuid4().hex[:8]}"
    sh(["zfs", "create", ds])
    try:
        for snap in ("s1", "s2", "autosnap_2020-01-01_00:00:00_hourly", "manual-before-upgrade"):
            sh(["zfs", "snapshot", f"{ds}@{snap}"])
        (work / "sanoid.conf").write_text(
            f"[{ds}]\n\tautosnap = no\n\tautoprune = yes\n\thourly = 0\n\tdaily = 0\n"
            "\tweekly = 0\n\tmonthly = 0\n\tyearly = 0\n"
        )
        time.sleep(1.1)  # sanoid prunes snapshots strictly older than now - N*period
        env = dict(os.environ, PATH=f"{work / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", TZ="UTC")
        proc = subprocess.run(
            [
                "sanoid",
                f"--configdir={work}",
                f"--cache-dir={work / 'cache'}",
                f"--run-dir={work / 'run'}",
                "--prune-snapshots",
                "--verbose",
                "--force-update",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        left = {
            line.split("@", 1)[1]
            for line in sh(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", ds]).split()
        }
        assert f"INFO: pruning {ds}@autosnap_2020-01-01_00:00:00_hourly" in proc.stdout
        assert left == {"s1", "s2", "manual-before-upgrade"}, proc.stdout
    finally:
        subprocess.run(["zfs", "destroy", "-r", ds], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)], capture_output=True)
        # zfs-fuse leaves the empty mountpoint directory behind
        with contextlib.suppress(OSError):
            (ansible_lab.lab_dir / "zfs" / "mnt" / ds).rmdir()


def test_existing_pool_layout_change_is_refused(ansible_tools, ansible_lab):
    """Declaring a different layout for an existing pool fails the run and touches nothing."""
    ansible_lab.up()
    img = ansible_lab.lab_dir / "zfs" / "pools"
    before = sh(["zpool", "status", POOL])
    pools = [
        {
            "name": POOL,
            "vdevs": [
                {"type": "mirror", "disks": [str(img / f"{POOL}.img"), str(img / "new.img")]}
            ],
        }
    ]
    run = ansible_tools.playbook(
        "lab", "provision-host.yml", "-e", json.dumps({"dsg_zfs_host_pools": pools})
    )
    assert run.returncode != 0, run.explain()
    text = " ".join((run.stdout + run.stderr).split())
    assert f"refusing to change the vdev layout of existing pool {POOL}" in text, run.explain()
    assert "declared but not in the pool: mirror[" in text
    assert sh(["zpool", "status", POOL]) == before


@pytest.mark.slow  # the extended tier: three provision-host.yml runs: 1-2 min
def test_missing_pool_is_created_once_then_guarded(ansible_tools, ansible_lab, tmp_path):
    """A declared pool that does not exist: --check plans it, a run creates it with
    community.general.zpool, the next run changes nothing."""
    ansible_lab.up()
    name = f"dsgans{uuid.uuid4().hex[:6]}"
    img = ansible_lab.lab_dir / "zfs" / "pools" / f"{name}.img"
    mnt = ansible_lab.lab_dir / "zfs" / "mnt" / name
    sh(["truncate", "-s", "128M", str(img)])
    extra = {
        "dsg_zfs_host_create_pools": True,
        "dsg_zfs_host_scrub_cron_file": str(tmp_path / "scrub.cron"),
        "dsg_zfs_host_pools": [
            {
                "name": name,
                "vdevs": [{"disks": [str(img)]}],
                "properties": {"cachefile": "none"},  # never in the daemon's pool cache
                "filesystem_properties": {"atime": False},
                "mountpoint": str(mnt),
            }
        ],
    }
    args = ("-e", json.dumps(extra))
    try:
        check = ansible_tools.playbook("lab", "provision-host.yml", "--check", *args)
        assert check.returncode == 0, check.explain()
        assert check.recap()["lab-zfs1"]["changed"] >= 1, check.explain()
        assert subprocess.run(["zpool", "list", name], capture_output=True).returncode != 0

        first = ansible_tools.playbook("lab", "provision-host.yml", *args)
        assert first.returncode == 0, first.explain()
        assert zget("atime", name) == "off"
        assert zget("mountpoint", name) == str(mnt)
        assert name in (tmp_path / "scrub.cron").read_text()

        again = ansible_tools.playbook("lab", "provision-host.yml", *args)
        assert again.returncode == 0, again.explain()
        assert again.recap()["lab-zfs1"]["changed"] == 0, again.explain()
    finally:
        # zfs-fuse can refuse to destroy a pool whose filesystem is still mounted ("busy"):
        # unmount first, then force, so no test pool outlives the test.
        subprocess.run(["zfs", "unmount", "-f", name], capture_output=True)
        if subprocess.run(["zpool", "destroy", name], capture_output=True).returncode:
            subprocess.run(["zpool", "destroy", "-f", name], capture_output=True)
        img.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def test_lab_dsgconfig_template_renders(ansible_tools, tmp_path):
    """templates/dsgconfig/lab.dsgconfig.yml.j2 renders to a config the engine accepts."""
    dest = tmp_path / ".dsgconfig.yml"
    run = ansible_tools.run(
        "ansible",
        "-i",
        "inventories/lab",
        "lab-zfs1",
        "-c",
        "local",
        "-m",
        "ansible.builtin.template",
        "-a",
        f"src={REPO}/templates/dsgconfig/lab.dsgconfig.yml.j2 dest={dest} mode=0644",
        "-e",
        "ansible_become=false",
        "-e",
        "ansible_python_interpreter=/usr/bin/python3",
    )
    assert run.returncode == 0, run.explain()
    cfg = yaml.safe_load(dest.read_text())
    assert cfg["name"] == "lab-alpha"
    assert cfg["repository"]["type"] == "zfs" and cfg["repository"]["pool"] == POOL
    assert cfg["data_dirs"] == ["input", "output", "frozen"]
    try:
        from dsg.workcopy.config import load_project_config
    except ImportError:  # the engine is not importable here: the YAML checks above suffice
        return
    assert load_project_config(dest).name == "lab-alpha"


def test_encryption_is_refused_on_zfs_fuse(ansible_tools, ansible_lab, tmp_path):
    """zfs-fuse (pool version 23) has no native encryption: a project declaring it makes
    dsg_datasets fail with a message before it writes a key or creates anything."""
    ansible_lab.up()
    if zget("name", POOL) != POOL:
        pytest.skip("the lab pool is missing")
    sealed = {"name": "lab-fuse-sealed", "group": "dsg-lab-alpha", "encryption": {}}
    projects = [
        {"name": name, "group": group, "users": users} for name, (group, users) in PROJECTS.items()
    ]
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"dsg_projects": [*projects, sealed]}))
    keys_before = os.path.exists("/etc/dsg/keys")
    run = ansible_tools.playbook("lab", "deploy-dsg.yml", "--tags", "datasets", "-e", f"@{extra}")
    assert run.returncode != 0, run.explain()
    text = " ".join(run.stdout.split())
    assert "declare encryption, but this host's ZFS has no native encryption" in text, text
    assert "lab-fuse-sealed" in text and "Nothing was changed" in text, run.explain()
    assert run.recap()["lab-zfs1"]["changed"] == 0, run.explain()
    proc = subprocess.run(["zfs", "list", f"{PARENT}/lab-fuse-sealed"], capture_output=True)
    assert proc.returncode != 0  # not created
    assert os.path.exists("/etc/dsg/keys") == keys_before
