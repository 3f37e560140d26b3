"""Native encryption, the pure parts: key state parsing, the health decision, raw sends."""

from __future__ import annotations

import pytest

from dsg.admin.backup import BackupDiverged, check_raw_target
from dsg.admin.health import Status, evaluate_encryption, locked_snapshot_check
from dsg.zfs.ops import (
    KeyState,
    Platform,
    Zfs,
    key_location_url,
    no_encryption_property,
    parse_key_state,
)

DS = "tank/dsg/sealed"

ENCRYPTED_LOADED = (
    "encryption\taes-256-gcm\n"
    "keystatus\tavailable\n"
    "keylocation\tfile:///etc/dsg/keys/sealed.key\n"
    "keyformat\traw\n"
    f"encryptionroot\t{DS}\n"
)
PLAIN = "encryption\toff\nkeystatus\t-\nkeylocation\tnone\nkeyformat\tnone\nencryptionroot\t-\n"


def test_parse_key_state_encrypted_and_plain() -> None:
    key = parse_key_state(ENCRYPTED_LOADED)
    assert key == KeyState("aes-256-gcm", "available", "file:///etc/dsg/keys/sealed.key", "raw", DS)
    assert key.supported and key.encrypted and key.key_loaded
    locked = parse_key_state(ENCRYPTED_LOADED.replace("available", "unavailable"))
    assert locked.encrypted and not locked.key_loaded
    plain = parse_key_state(PLAIN)
    assert plain.supported and not plain.encrypted and plain.key_loaded
    assert plain.keystatus is None and plain.encryption_root is None


def test_zfs_fuse_has_no_encryption_property() -> None:
    assert no_encryption_property("bad property list: invalid property 'encryption'\n")
    assert not no_encryption_property("cannot open 'tank/x': dataset does not exist")
    key = KeyState(None)
    assert not key.supported and not key.encrypted and key.key_loaded


def test_health_encryption_decision() -> None:
    ok = evaluate_encryption("sealed", DS, parse_key_state(ENCRYPTED_LOADED))
    assert ok.status is Status.OK and ok.check == "encryption"
    assert "encrypted (aes-256-gcm), key loaded" in ok.message
    assert "file:///etc/dsg/keys/sealed.key" in ok.message

    bad = evaluate_encryption(
        "sealed", DS, parse_key_state(ENCRYPTED_LOADED.replace("available", "unavailable"))
    )
    assert bad.status is Status.CRITICAL
    assert "key is not loaded" in bad.message and "unreachable" in bad.message
    assert f"zfs load-key {DS}" in bad.message and f"zfs mount {DS}" in bad.message

    # a child of an encryption root: the key is loaded at the root
    child = parse_key_state(
        ENCRYPTED_LOADED.replace("available", "unavailable").replace(
            f"encryptionroot\t{DS}", "encryptionroot\ttank/dsg"
        )
    )
    assert "zfs load-key tank/dsg" in evaluate_encryption("sealed", DS, child).message

    plain = evaluate_encryption("p", DS, parse_key_state(PLAIN))
    assert (plain.status, plain.message) == (Status.OK, "not encrypted")
    fuse = evaluate_encryption("p", DS, KeyState(None))
    assert fuse.status is Status.OK and "no native encryption" in fuse.message

    locked = locked_snapshot_check("sealed", DS)
    assert locked.status is Status.UNKNOWN and "key is not loaded" in locked.message


def _platform(fuse: bool) -> Platform:
    return Platform(is_zfs_fuse=fuse, snapshot_dir=not fuse, allow=not fuse, encryption=not fuse,
                    rename_mounted=not fuse, parsable_pool_list=not fuse, holds_list=not fuse,
                    pool_version=23 if fuse else None)  # fmt: skip


def test_send_flags() -> None:
    openzfs = Zfs(zfs="zfs", zpool="zpool", platform=_platform(False))
    assert openzfs._send_args("t/a@s2", "@s1", False, True, raw=True) == [
        "send", "-w", "-p", "-i", "@s1", "t/a@s2",
    ]  # fmt: skip
    # not raw: large records whole, blocks compressed as stored, small blocks embedded
    assert openzfs._send_args("t/a@s1", None, False, True) == [
        "send", "-L", "-c", "-e", "-p", "t/a@s1",
    ]  # fmt: skip
    fuse = Zfs(zfs="zfs", zpool="zpool", platform=_platform(True))
    assert fuse._send_args("t/a@s1", None, False, True) == ["send", "-p", "t/a@s1"]


def test_raw_incremental_needs_a_raw_received_copy() -> None:
    target = "backup/dsg/sealed"
    check_raw_target(DS, target, KeyState("aes-256-gcm", "unavailable", encryption_root=target))
    with pytest.raises(BackupDiverged, match="is not encrypted"):
        check_raw_target(DS, target, KeyState("off"))
    with pytest.raises(BackupDiverged, match="is encrypted under backup/dsg"):
        check_raw_target(DS, target, KeyState("aes-256-gcm", encryption_root="backup/dsg"))


def test_key_location_url() -> None:
    assert key_location_url("/etc/dsg/keys/p.key") == "file:///etc/dsg/keys/p.key"
    assert key_location_url("file:///etc/dsg/keys/p.key") == "file:///etc/dsg/keys/p.key"
    for bad in ("prompt", "relative/p.key", "https://example.org/k", "file://host/k", "/a\nb"):
        with pytest.raises(ValueError):
            key_location_url(bad)
