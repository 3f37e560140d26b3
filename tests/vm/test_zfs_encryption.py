"""An encrypted project made by the roles, its health, raw backups and restore drills (VM).

The VM converged by the site playbook (tests/vm/test_site_playbook.py does it, and checks the
second run changes nothing with this project declared; this test converges the VM itself
when run alone). inventories/lab-vm declares project lab-sealed with `encryption: {keyformat:
raw}`: dsg_datasets generated /etc/dsg/keys/lab-sealed.key on the guest, created
dsglab/dsg/lab-sealed encrypted with it and enabled dsg-zfs-load-key.service. Here:

- the dataset is encrypted, its key loaded from a root-only 0400 key file;
- alice (admin) syncs a marker file into it over SSH as a delegated member;
- `dsg admin backup` sends it raw to the second pool: the copy is encrypted with no key
  loaded, and the marker is nowhere on the backup disk nor in a stream sent from it, while
  a plain send of the primary shows it (the check can see it);
- `dsg admin restore-drill` restores the raw backup, loads the key and verifies every file;
  with a key file that does not exist it fails and says it needs the key;
- `dsg admin health` reports the key status, goes CRITICAL when the key is unloaded, and is
  OK again after the boot unit, or a run of the role, loads it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from dsg.workcopy.config import ProjectConfig, RepositoryConfig
from tests.ansible.conftest import AnsibleTools, ansible_tools  # noqa: F401 (fixture)
from tests.helpers import Researcher
from tests.vm.conftest import LabVM, users_ssh_config

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.ansible]

PROJECT = "lab-sealed"
DATASET = f"dsglab/dsg/{PROJECT}"
BACKUP_ROOT = "dsgbackup/dsg"
COPY = f"{BACKUP_ROOT}/{PROJECT}"
KEY = f"/etc/dsg/keys/{PROJECT}.key"
MOUNT_ROOT = "/var/repos/dsg"
MARKER = "sealed-plaintext-marker-5c1e07d2"
DSG = "/usr/local/bin/dsg"
HEALTH_CFG = "/root/dsg-health-encryption.yml"
UNIT = "dsg-zfs-load-key.service"
# Count MARKER in stdin, in 1 MiB chunks (grep -c -a on a 2 GiB disk with no newlines can
# run out of memory and print nothing).
COUNT = shlex.join(
    [
        "python3",
        "-c",
        "import sys\n"
        f"m = b'{MARKER}'; n = 0; tail = b''\n"
        "while chunk := sys.stdin.buffer.read(1 << 20):\n"
        "    buf = tail + chunk; n += buf.count(m); tail = buf[-(len(m) - 1):]\n"
        "print(n)",
    ]
)


def zget(vm: LabVM, props: str, target: str) -> dict[str, str]:
    out = vm.sh(f"zfs get -H -p -o property,value {props} {target}")
    return dict(line.split("\t", 1) for line in out.splitlines())


def tools_for(vm: LabVM, base: AnsibleTools) -> AnsibleTools:
    return AnsibleTools(base.venv, {**base.env, "DSG_LAB_VM_PORT": str(vm.port)})


def ensure_converged(vm: LabVM, base: AnsibleTools) -> None:
    """site.yml has run on the VM with this session's release current (converge it when
    this test runs alone, or when an earlier test or session left another release)."""
    from tests.vm import test_site_playbook as site

    want = site.release_id(site.prepare_release())
    probe = vm.run(
        ["sh", "-c", f"test -x {DSG} && zfs list -H {DATASET} >/dev/null && "
         "readlink /opt/dsg/current"],
        check=False,
    )  # fmt: skip
    if probe.returncode == 0 and Path(probe.stdout.strip()).name == want:
        return
    site.ensure_lab_user_keys()
    site.playbook(tools_for(vm, base))


def health(vm: LabVM) -> tuple[int, dict]:
    proc = vm.run(
        [DSG, "admin", "health", "--config", HEALTH_CFG, "--access-file", "/etc/dsg/access.yml",
         "--json"],
        check=False,
    )  # fmt: skip
    return proc.returncode, json.loads(proc.stdout)


def check(doc: dict, name: str, target: str) -> dict:
    (found,) = [c for c in doc["checks"] if c["check"] == name and c["target"] == target]
    return found


def admin_json(vm: LabVM, lock: str, *args: str) -> tuple[int, dict]:
    """A `dsg admin` command as root on the guest, under the cron job's flock (a scheduled
    backup starting meanwhile waits for it instead of racing it)."""
    argv = ["flock", f"/run/lock/{lock}", DSG, "admin", *args, "--json"]
    proc = vm.run(argv, check=False, timeout=900)
    return proc.returncode, json.loads(proc.stdout)


def ssh_config(vm: LabVM, path: Path) -> Path:
    return users_ssh_config(vm.port, vm.known_hosts, ("alice",), path)


def test_encrypted_project_health_raw_backup_and_drill(
    lab_vm: LabVM,
    ansible_tools: AnsibleTools,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vm = lab_vm
    ensure_converged(vm, ansible_tools)

    # --- what the role made ---------------------------------------------------------------
    props = zget(vm, "encryption,keystatus,keyformat,keylocation,encryptionroot,mounted", DATASET)
    assert props == {
        "encryption": "aes-256-gcm",
        "keystatus": "available",
        "keyformat": "raw",
        "keylocation": f"file://{KEY}",
        "encryptionroot": DATASET,
        "mounted": "yes",
    }, props
    modes = vm.sh(f"stat -c '%a %U %G %s' {KEY} {Path(KEY).parent}").splitlines()
    assert modes[0] == "400 root root 32", modes  # a raw key: 32 bytes
    assert modes[1].startswith("700 root root"), modes
    assert vm.sh(f"systemctl is-enabled {UNIT}").strip() == "enabled"
    # the unencrypted projects stay unencrypted
    assert zget(vm, "encryption", "dsglab/dsg/lab-alpha") == {"encryption": "off"}

    # --- alice fills it over SSH, as a delegated member ---------------------------------------
    vm.sh(
        f"""
        for snap in $(zfs list -H -t snapshot -o name -d 1 {DATASET}); do
          for tag in $(zfs holds -H "$snap" | cut -f2); do zfs release "$tag" "$snap"; done
          zfs destroy "$snap"
        done
        find {MOUNT_ROOT}/{PROJECT} -mindepth 1 -delete
        if zfs list -H {COPY} >/dev/null 2>&1; then zfs destroy -r {COPY}; fi
        printf 'backup_target: {BACKUP_ROOT}\\nscrub_age_warn_days: null\\n'\
'scrub_age_crit_days: null\\n' > {HEALTH_CFG}
        """
    )
    monkeypatch.setenv("DSG_SSH_COMMAND", f"ssh -F {ssh_config(vm, tmp_path / 'ssh_config')}")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    cfg = ProjectConfig(
        name=PROJECT,
        repository=RepositoryConfig(
            type="zfs", host="vm-alice", pool="dsglab", mountpoint=MOUNT_ROOT
        ),
    )
    alice = Researcher("alice", tmp_path / "alice" / PROJECT, tmp_path / "cfg", cfg)
    alice.write("task1/input/secret.csv", (MARKER + "\n") * 50)
    alice.init("sealed s1")
    alice.write("task1/output/more.csv", MARKER + " again\n")
    alice.sync(message="sealed s2")

    # --- health shows the key status --------------------------------------------------------
    code, doc = health(vm)
    enc = check(doc, "encryption", PROJECT)
    assert enc["status"] == "OK", doc
    assert f"encrypted (aes-256-gcm), key loaded, key from file://{KEY}" == enc["message"], enc
    assert check(doc, "encryption", "lab-alpha")["message"] == "not encrypted"
    assert check(doc, "snapshot_age", PROJECT)["status"] == "OK", doc
    assert check(doc, "replication", PROJECT)["status"] == "CRITICAL", doc  # no backup yet

    # --- a raw backup ------------------------------------------------------------------------
    code, doc = admin_json(vm, "dsg-backup.lock", "backup", "--to", BACKUP_ROOT, PROJECT)
    assert code == 0, doc
    (res,) = doc["projects"]
    assert res["ok"] and res["raw"] is True and res["common"] == "s2", res
    got = zget(vm, "encryption,keystatus,encryptionroot,readonly,mounted", COPY)
    assert got == {
        "encryption": "aes-256-gcm",
        "keystatus": "unavailable",  # no key needed, none loaded, on the backup side
        "encryptionroot": COPY,
        "readonly": "on",
        "mounted": "no",
    }, got
    # the marker: visible in a plain send of the primary, absent from the backup's disk and
    # from any stream the backup can produce (it holds ciphertext only)
    plain = vm.sh(f"zfs send {DATASET}@s1 | {COUNT}").strip()
    assert int(plain) > 0, plain
    raw = vm.sh(f"zfs send -w {COPY}@s2 | {COUNT}").strip()
    assert raw == "0", raw
    vm.sh("zpool sync dsgbackup")
    disk = vm.sh(f"{COUNT} < /dev/disk/by-id/virtio-dsg-pool2").strip()
    assert disk == "0", disk
    # without the key the copy cannot be mounted
    assert vm.run(["zfs", "mount", COPY], check=False).returncode != 0

    # an incremental stays raw; the replication check is in sync
    alice.write("task1/output/third.csv", "three\n")
    alice.sync(message="sealed s3")
    code, doc = admin_json(vm, "dsg-backup.lock", "backup", "--to", BACKUP_ROOT, PROJECT)
    (res,) = doc["projects"]
    assert code == 0 and res["raw"] and res["common"] == "s3", res
    assert [s["kind"] for s in res["steps"]] == ["incremental"], res
    assert zget(vm, "keystatus", COPY) == {"keystatus": "unavailable"}
    code, doc = health(vm)
    rep = check(doc, "replication", PROJECT)
    assert rep["status"] == "OK" and rep["message"].startswith("in sync"), rep

    # --- restore drills: with the key (from the keylocation the backup carries), without -----
    lock = f"dsg-restore-drill-{PROJECT}.lock"
    drill_args = [
        "restore-drill",
        PROJECT,
        "--from",
        BACKUP_ROOT,
        "--scratch",
        "dsgbackup/dsg-drill",
    ]
    code, doc = admin_json(vm, lock, *drill_args)
    assert code == 0, doc
    drill = doc["drill"]
    assert drill["ok"] and drill["encrypted"] and drill["snapshot"] == "s3", drill
    assert drill["key_location"] == f"file://{KEY}" and drill["files"] == 3, drill
    assert drill["cleaned_up"], drill
    code, doc = admin_json(vm, lock, *drill_args, "--key-location", "/root/no-such.key")
    assert code == 1 and doc["ok"] is False, doc
    text = json.dumps(doc)
    assert "key could not be loaded" in text and "--key-location" in text, doc
    assert doc["error"]["details"]["ok"] is False, doc  # it never claims success
    leftovers = vm.sh("zfs list -H -o name -r dsgbackup/dsg-drill").split()
    assert leftovers == ["dsgbackup/dsg-drill"], leftovers
    assert zget(vm, "keystatus", COPY) == {"keystatus": "unavailable"}

    # --- dsg admin restore: back raw, encrypted with the same key, loaded, ready to serve --------
    restored = f"dsglab/dsg/{PROJECT}-restored"

    def drop_restored() -> None:
        vm.sh(
            f"""
            if zfs list -H {restored} >/dev/null 2>&1; then
              for snap in $(zfs list -H -t snapshot -o name -d 1 {restored}); do
                for tag in $(zfs holds -H "$snap" | cut -f2); do zfs release "$tag" "$snap"; done
              done
              zfs destroy -r {restored}
            fi
            """
        )

    try:
        restore = ["restore", PROJECT, "--from", BACKUP_ROOT, "--to", restored]
        code, doc = admin_json(vm, "dsg-restore.lock", *restore)
        assert code == 0 and doc["restore"]["head"] == "s3", doc
        got = zget(vm, "encryption,keystatus,keylocation,mounted,readonly", restored)
        assert got == {
            "encryption": "aes-256-gcm",
            "keystatus": "available",
            "keylocation": f"file://{KEY}",
            "mounted": "yes",
            "readonly": "off",
        }, got
        mnt = doc["restore"]["mountpoint"]
        assert vm.sh(f"cat {mnt}/task1/output/third.csv") == "three\n"
        drop_restored()
        # without the key: stopped, the copy left received and locked, and told what to do
        code, doc = admin_json(vm, "dsg-restore.lock", *restore, "--key-location", "/root/no.key")
        assert code != 0 and doc["error"]["kind"] == "key_unavailable", doc
        assert f"zfs destroy -r {restored}" in doc["error"]["hint"], doc
        assert zget(vm, "keystatus,mounted", restored) == {
            "keystatus": "unavailable",
            "mounted": "no",
        }
    finally:
        drop_restored()

    # --- the key unloaded: health CRITICAL; the boot unit loads it again -----------------------
    def lock_dataset() -> None:
        vm.sh(f"zfs unmount {DATASET} && zfs unload-key {DATASET}")

    lock_dataset()
    code, doc = health(vm)
    enc = check(doc, "encryption", PROJECT)
    assert code == 2 and enc["status"] == "CRITICAL", doc
    assert "key is not loaded" in enc["message"], enc
    assert f"zfs load-key {DATASET}" in enc["message"], enc
    assert check(doc, "snapshot_age", PROJECT)["status"] == "UNKNOWN", doc

    vm.sh(f"systemctl restart {UNIT} && zfs mount -a")  # what boot does: the unit, zfs-mount
    assert zget(vm, "keystatus,mounted", DATASET) == {"keystatus": "available", "mounted": "yes"}
    code, doc = health(vm)
    assert check(doc, "encryption", PROJECT)["status"] == "OK", doc

    # --- and a run of the role loads and mounts it too (then changes nothing) ------------------
    lock_dataset()
    tools = tools_for(vm, ansible_tools)
    args = ["-i", "inventories/lab-vm", "playbooks/deploy-dsg.yml", "--tags", "datasets"]
    run = tools.run("ansible-playbook", *args, timeout=1200)
    assert run.returncode == 0, run.explain()
    assert run.recap()["lab-vm"]["changed"] == 2, run.explain()  # load-key, mount
    assert zget(vm, "keystatus,mounted", DATASET) == {"keystatus": "available", "mounted": "yes"}
    assert (
        vm.sh(f"cat {shlex.quote(MOUNT_ROOT + '/' + PROJECT)}/task1/output/third.csv") == "three\n"
    )
    run = tools.run("ansible-playbook", *args, "--check", timeout=1200)
    assert run.returncode == 0 and run.recap()["lab-vm"]["changed"] == 0, run.explain()
    code, doc = health(vm)
    assert check(doc, "encryption", PROJECT)["status"] == "OK", doc

    # --- an existing unencrypted project declared encrypted: refused, nothing changed ---------
    lab_projects = [
        {"name": "lab-alpha", "group": "dsg-lab-alpha", "properties": {"quota": "256M"},
         "users": {"alice": "admin", "bob": "write", "carol": "read"}},
        {"name": "lab-beta", "group": "dsg-lab-beta", "users": {"bob": "admin", "carol": "write"},
         "encryption": {"keyformat": "raw"}},
    ]  # fmt: skip
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"dsg_lab_projects": lab_projects}))
    run = tools.run("ansible-playbook", *args, "-e", f"@{extra}", timeout=1200)
    assert run.returncode != 0, run.explain()
    text = " ".join(run.stdout.split())
    assert "dsglab/dsg/lab-beta exists with encryption=off" in text, run.explain()
    assert "ZFS sets encryption only when a dataset is created" in text, run.explain()
    assert run.recap()["lab-vm"]["changed"] == 0, run.explain()
    assert zget(vm, "encryption", "dsglab/dsg/lab-beta") == {"encryption": "off"}
    assert vm.run(["test", "-e", "/etc/dsg/keys/lab-beta.key"], check=False).returncode != 0
