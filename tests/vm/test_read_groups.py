"""Read groups, zfs delegation per role and offboarding on OpenZFS, in the lab VM.

What zfs-fuse cannot show (no POSIX ACLs, no `zfs allow`, no PAM-enforced expiry in the
lab sshd). A throwaway pool on a file in the guest (`acltype=posixacl`, so the VM's disks
stay blank for test_site_playbook), throwaway users and groups, and the dsg_access role run
over SSH by ansible-playbook (main, the mountpoint as dsg_datasets makes it, delegation):

1. with `dsg_access_read_acl: false` (the former layout) a writer commits @s1;
2. with read groups on, the reader leaves the project group, the mountpoint gets the ACL, and
   after a writer's next commit @s2 the reader reads the live tree and `.zfs/snapshot/s2`,
   writes nothing, cannot snapshot (no delegation: `zfs allow` shows the writer only), and
   cannot enter @s1 (taken before the ACL: the documented limit);
3. the leaver is set `state: absent`: the VM's real sshd (PAM) let them in with a key in
   their home before, and refuses them after, even with the key put back by hand (a run
   after that would remove it again: the role keeps no key in an offboarded home).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.ansible.conftest import AnsibleTools, ansible_tools  # noqa: F401 (fixture)
from tests.vm.conftest import LabVM

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.ansible]

POOL = "dsgvmacl"
IMG = "/var/tmp/dsgvmacl.img"
MNT = f"/srv/{POOL}"

PLAYBOOK = """
- name: dsg_access as deploy-dsg.yml runs it
  hosts: lab-vm
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


def test_read_groups_delegation_and_offboarding_on_openzfs(
    lab_vm: LabVM,
    ansible_tools: AnsibleTools,  # noqa: F811
    tmp_path: Path,
) -> None:
    tools = AnsibleTools(
        ansible_tools.venv, {**ansible_tools.env, "DSG_LAB_VM_PORT": str(lab_vm.port)}
    )
    root = lab_vm.sh
    tag = uuid.uuid4().hex[:5]
    writer, reader, leaver = f"vt{tag}w", f"vt{tag}r", f"vt{tag}x"
    users_group, group = f"vt{tag}-users", f"vt{tag}-p"
    read_group = f"{group}-read"
    key = tmp_path / "leaver"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = key.with_suffix(".pub").read_text().strip()
    (tmp_path / "play.yml").write_text(PLAYBOOK)

    def converge(read_acl: bool, leaver_state: str) -> dict[str, int]:
        extra = {
            "dsg_access_users_group": users_group,
            "dsg_access_config_dir": f"/var/tmp/{POOL}-etc",
            "dsg_access_file": f"/var/tmp/{POOL}-etc/access.yml",
            "dsg_access_authorized_keys_dir": f"/var/tmp/{POOL}-etc/authorized_keys",
            "dsg_access_manage_sshd": False,  # the VM's drop-in belongs to site.yml
            "dsg_access_zfs_allow": "enforce",
            "dsg_access_dataset_parent": f"{POOL}/dsg",
            "dsg_access_mountpoint_root": f"{MNT}/dsg",
            "dsg_access_read_acl": read_acl,
            "dsg_access_projects": [
                {
                    "name": "proj",
                    "group": group,
                    "users": {writer: "write", reader: "read", leaver: "write"},
                }
            ],
            "dsg_access_users": [
                {"name": writer, "ssh_keys": [pub]},
                {"name": reader, "ssh_keys": [pub]},
                {"name": leaver, "ssh_keys": [pub], "state": leaver_state},
            ],
        }
        (tmp_path / "vars.json").write_text(json.dumps(extra))
        run = tools.run(
            "ansible-playbook", "-i", "inventories/lab-vm", "--limit", "lab-vm",
            "-e", f"@{tmp_path / 'vars.json'}", str(tmp_path / "play.yml"), timeout=1800,
        )  # fmt: skip
        assert run.returncode == 0, run.explain()
        return run.recap()["lab-vm"]

    def as_user(user: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return lab_vm.run(["runuser", "-u", user, "--", "sh", "-c", script], check=check)

    root(
        f"""
        truncate -s 256M {IMG}
        zpool create -O acltype=posixacl -O xattr=sa -O mountpoint={MNT} {POOL} {IMG}
        zfs create {POOL}/dsg
        zfs create {POOL}/dsg/proj
        """
    )
    try:
        # 1. the former layout: readers in the project group, no ACL; a first commit
        converge(read_acl=False, leaver_state="present")
        proj = f"{MNT}/dsg/proj"
        as_user(writer, f"umask 002 && cd {proj} && mkdir -p .dsg && printf one > data.csv")
        as_user(writer, f"zfs snapshot {POOL}/dsg/proj@s1")

        # 2. read groups on
        recap = converge(read_acl=True, leaver_state="present")
        assert recap["changed"] > 0
        assert converge(read_acl=True, leaver_state="present")["changed"] == 0
        got_groups = {
            line.split(":")[0]: set(filter(None, line.split(":")[3].split(",")))
            for line in root(f"getent group {group} {read_group}").splitlines()
        }
        assert got_groups == {group: {writer, leaver}, read_group: {reader}}, got_groups
        acl = root(f"getfacl -cp {proj}").split()
        assert f"group:{read_group}:r-x" in acl and "other::---" in acl, acl
        allowed = root(f"zfs allow {POOL}/dsg/proj")
        assert f"user {writer} hold,release,rollback,snapshot,userprop" in allowed, allowed
        assert reader not in allowed, allowed

        as_user(writer, f"umask 002 && cd {proj} && printf two > data.csv && printf s2 > HEAD")
        as_user(writer, f"zfs snapshot {POOL}/dsg/proj@s2")
        got = as_user(reader, f"cat {proj}/data.csv {proj}/.zfs/snapshot/s2/data.csv").stdout
        assert got == "twotwo", got
        for attempt in (
            f"printf x > {proj}/data.csv",
            f"printf x > {proj}/HEAD",
            f"printf x > {proj}/new",
            f"rm -f {proj}/data.csv",
            f"mkdir {proj}/.dsg/txn",
            f"zfs snapshot {POOL}/dsg/proj@s3",
            f"zfs rollback {POOL}/dsg/proj@s1",
        ):
            r = as_user(reader, attempt, check=False)
            assert r.returncode != 0, f"the reader could run {attempt!r}"
        # a snapshot taken before the ACL keeps the old mountpoint permissions
        assert as_user(reader, f"ls {proj}/.zfs/snapshot/s1/", check=False).returncode != 0
        assert as_user(writer, f"cat {proj}/.zfs/snapshot/s1/data.csv").stdout == "one"
        assert root(f"zfs list -H -o name -t snapshot -r {POOL}/dsg/proj").split() == [
            f"{POOL}/dsg/proj@s1",
            f"{POOL}/dsg/proj@s2",
        ]

        # 3. offboarding, against the VM's real sshd (UsePAM yes)
        home = root(f"getent passwd {leaver} | cut -d: -f6").strip()
        plant = (
            f"install -d -m 700 -o {leaver} {home}/.ssh && "
            f"printf '%s\\n' '{pub}' > {home}/.ssh/authorized_keys && "
            f"chown {leaver} {home}/.ssh/authorized_keys && chmod 600 {home}/.ssh/authorized_keys"
        )
        root(plant)
        before = lab_vm.run(["echo", "SHELL-REACHED"], user=leaver, key=key, check=False)
        assert "SHELL-REACHED" in before.stdout, before  # the key works: the test can fail
        converge(read_acl=True, leaver_state="absent")
        shadow = root(f"getent shadow {leaver}").strip().split(":")
        assert shadow[1].startswith("!") and shadow[7] == "1", shadow
        assert root(f"getent passwd {leaver}").strip().endswith(":/usr/sbin/nologin")
        assert root(f"test -e {home}/.ssh/authorized_keys || echo gone").strip() == "gone"
        assert converge(read_acl=True, leaver_state="absent")["changed"] == 0
        root(plant)  # put back by hand: the account itself must refuse
        after = lab_vm.run(["echo", "SHELL-REACHED"], user=leaver, key=key, check=False)
        assert "SHELL-REACHED" not in after.stdout and after.returncode != 0, after
    finally:
        lab_vm.run(["zpool", "destroy", "-f", POOL], check=False)
        lab_vm.run(
            ["bash", "-c", f"rm -rf {IMG} {MNT} /var/tmp/{POOL}-etc; "
             f"for u in {writer} {reader} {leaver}; do userdel -r $u; done; "
             f"for g in {group} {read_group} {users_group}; do groupdel $g; done; true"],
            check=False,
        )  # fmt: skip
