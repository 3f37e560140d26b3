"""OpenZFS in the lab VM: what zfs-fuse cannot show (docs/lab.md, "Quirks").

One pool per virtual disk (by /dev/disk/by-id), created and destroyed by the test:
delegation (`zfs allow`) to an unprivileged user who snapshots, rolls back and holds
without sudo and is refused what was not delegated; `.zfs/snapshot`; native encryption with
a key file; a raw `zfs send -w` into the second pool that stays encrypted (no plaintext in
the stream, no key loaded on the receiving side) and opens with the same key.
"""

from __future__ import annotations

import shlex

import pytest

from tests.vm.conftest import LabVM

pytestmark = [pytest.mark.vm, pytest.mark.slow]

POOL = "dsgvmsmoke"
BACKUP = "dsgvmsmokeb"
MARKER = "plaintext-marker-7f3a9c"


def test_openzfs_delegation_snapshots_encryption_raw_send(lab_vm: LabVM, guest_user) -> None:
    user, key = guest_user
    disk1, disk2 = lab_vm.disks
    root = lab_vm.sh

    # The module is the real one, loaded in the guest's kernel.
    assert root("cat /sys/module/zfs/version").strip()
    assert lab_vm.run(["test", "-e", disk1]).returncode == 0
    root(f"zpool create -o ashift=12 -O mountpoint=/{POOL} {POOL} {disk1}")
    root(f"zpool create -o ashift=12 -O mountpoint=none {BACKUP} {disk2}")
    try:
        status = root(f"zpool status -P {POOL}")
        assert disk1 in status, status

        # --- delegation: the user gets exactly snapshot/rollback/hold/release ------------
        ds = f"{POOL}/data"
        root(
            f"""
            zfs create {ds}
            chown {user}: /{ds}
            zfs allow -u {user} snapshot,rollback,hold,release {ds}
            """
        )
        allowed = root(f"zfs allow {ds}")
        assert f"user {user} hold,release,rollback,snapshot" in allowed, allowed
        as_user = lab_vm.sh
        as_user(
            f"""
            test "$(id -u)" -ne 0
            ! sudo -n true 2>/dev/null
            echo one > /{ds}/f
            zfs snapshot {ds}@s1
            echo two > /{ds}/f
            zfs rollback {ds}@s1
            zfs hold keep {ds}@s1
            """,
            user,
            key,
        )
        assert root(f"cat /{ds}/f").strip() == "one"
        holds = root(f"zfs holds -H {ds}@s1")
        assert holds.split("\t")[:2] == [f"{ds}@s1", "keep"], holds
        # .zfs/snapshot shows the snapshot's files to the user, read-only
        assert as_user(f"cat /{ds}/.zfs/snapshot/s1/f", user, key).strip() == "one"
        ro = lab_vm.run(["touch", f"/{ds}/.zfs/snapshot/s1/g"], user, key, check=False)
        assert ro.returncode != 0
        # what was not delegated is refused, and the hold protects the snapshot
        refused = lab_vm.run(["zfs", "destroy", f"{ds}@s1"], user, key, check=False)
        assert refused.returncode != 0 and "permission denied" in refused.stderr.lower(), (
            refused.stderr
        )
        refused = lab_vm.run(["zfs", "create", f"{ds}/child"], user, key, check=False)
        assert refused.returncode != 0, refused.stdout
        as_user(f"zfs release keep {ds}@s1", user, key)
        assert root(f"zfs get -H -p -o value userrefs {ds}@s1").strip() == "0"

        # --- native encryption with a key file, raw send to the second pool --------------
        sec = f"{POOL}/secret"
        root(
            f"""
            install -d -m 700 /root/keys
            head -c 32 /dev/urandom > /root/keys/secret.key
            chmod 600 /root/keys/secret.key
            zfs create -o encryption=aes-256-gcm -o keyformat=raw \
                -o keylocation=file:///root/keys/secret.key {sec}
            printf '%s\\n' {MARKER} > /{sec}/f
            zfs snapshot {sec}@e1
            """
        )
        props = root(f"zfs get -H -o property,value encryption,keystatus,keyformat {sec}")
        assert "encryption\taes-256-gcm" in props and "keystatus\tavailable" in props, props
        # a raw stream carries ciphertext only; a plain one of the same snapshot does not
        raw_hits = root(f"zfs send -w {sec}@e1 | grep -c -a {MARKER} || true").strip()
        plain_hits = root(f"zfs send {sec}@e1 | grep -c -a {MARKER} || true").strip()
        assert raw_hits == "0" and plain_hits != "0", (raw_hits, plain_hits)
        copy = f"{BACKUP}/secret"
        root(f"zfs send -w {sec}@e1 | zfs receive -u {copy}")
        got = root(f"zfs get -H -o property,value encryption,keystatus,encryptionroot {copy}")
        assert "encryption\taes-256-gcm" in got, got
        assert "keystatus\tunavailable" in got, got  # received encrypted, no key loaded
        mount_without_key = lab_vm.run(["zfs", "mount", copy], check=False)
        assert mount_without_key.returncode != 0
        # the same key opens the copy
        root(
            f"""
            zfs set mountpoint=/srv/{shlex.quote(copy)} {copy}
            zfs load-key -L file:///root/keys/secret.key {copy}
            zfs mount {copy}
            """
        )
        assert root(f"cat /srv/{copy}/f").strip() == MARKER
    finally:
        lab_vm.run(["zpool", "destroy", "-f", BACKUP], check=False)
        lab_vm.run(["zpool", "destroy", "-f", POOL], check=False)
        lab_vm.run(["rm", "-rf", "/root/keys", f"/srv/{BACKUP}"], check=False)
    assert POOL not in root("zpool list -H -o name")
