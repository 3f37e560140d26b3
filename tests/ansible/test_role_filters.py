"""Unit tests for the roles' filter plugins and the group-membership module's pure parts."""

from __future__ import annotations

import pytest

from tests.ansible._load import ROLES as ROLES_DIR
from tests.ansible._load import load

zfs = load("dsg_zfs_host/filter_plugins/dsg_zfs.py")
access = load("dsg_access/filter_plugins/dsg_access.py")
members = load("dsg_access/library/dsg_group_members.py")


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"atime": False, "compression": "lz4"}, {"atime": "off", "compression": "lz4"}),
        ({"copies": 2}, {"copies": "2"}),
        ({"quota": "2T"}, {"quota": str(2 * 1024**4)}),
        ({"recordsize": "1M"}, {"recordsize": "1048576"}),
        ({"special_small_blocks": "64K"}, {"special_small_blocks": "65536"}),
        ({"quota": "none"}, {"quota": "0"}),
        ({"quota": "1.5G"}, {"quota": str(3 * 512 * 1024**2)}),
        ({"dsg:project": "x"}, {"dsg:project": "x"}),
        # OpenZFS >= 2.0 reads acltype=posixacl back as "posix", noacl as "off"
        ({"acltype": "posixacl", "xattr": "sa"}, {"acltype": "posix", "xattr": "sa"}),
        ({"acltype": "posix"}, {"acltype": "posix"}),
        ({"acltype": "noacl"}, {"acltype": "off"}),
    ],
)
def test_zfs_props_match_zfs_get_parsable(props, expected):
    assert zfs.dsg_zfs_props(props) == expected


@pytest.mark.parametrize("value", ["2 lots", "1.5K5", True, "0.3K"])
def test_zfs_size_rejects_garbage(value):
    with pytest.raises(zfs.FilterError):
        zfs.zfs_size(value)


PROJECTS = [
    {"name": "alpha", "group": "dsg-alpha", "users": {"alice": "admin", "bob": "read"}},
    {"name": "beta", "group": "dsg-beta", "users": {"bob": "write", "gone": "write"}},
    {"name": "old", "group": "dsg-old", "users": {"alice": "admin"}, "state": "absent"},
]
USERS = [{"name": "alice"}, {"name": "bob"}, {"name": "gone", "state": "absent"}]
PERMS = {"read": [], "write": ["snapshot", "send"], "admin": ["send", "snapshot", "diff"]}


def test_present_and_active_users():
    present = access.dsg_access_present_users(USERS)
    assert present == ["alice", "bob"]
    assert access.dsg_access_active_users(PROJECTS, present) == ["alice", "bob"]
    assert access.dsg_access_project_members(PROJECTS[1], present) == ["bob"]
    assert access.dsg_access_project_members(PROJECTS[2], present) == []


def test_project_group_holds_writers_and_read_group_readers():
    present = access.dsg_access_present_users(USERS)
    alpha = PROJECTS[0]
    assert access.dsg_access_group_members(alpha, present) == ["alice"]
    assert access.dsg_access_read_group(alpha) == "dsg-alpha-read"
    assert access.dsg_access_read_members(alpha, present) == ["bob"]
    # without ACLs the readers stay in the project group (the only way in)
    assert access.dsg_access_group_members(alpha, present, False) == ["alice", "bob"]
    named = {**alpha, "read_group": "alpha-readers"}
    assert access.dsg_access_read_group(named) == "alpha-readers"
    assert access.dsg_access_read_members(PROJECTS[2], present) == []  # absent project


def test_absent_users_projects_and_duplicates():
    assert access.dsg_access_absent_users(USERS) == ["gone"]
    assert [p["name"] for p in access.dsg_access_present_projects(PROJECTS)] == ["alpha", "beta"]
    assert access.dsg_access_duplicates(["a", "b", "a", "c", "b"]) == ["a", "b"]
    assert access.dsg_access_duplicates(["a"]) == []


@pytest.mark.parametrize("perm", ["snapshot", "rollback", "destroy", "userprop", "hold"])
def test_delegations_refuse_write_permissions_for_readers(perm):
    perms = {**PERMS, "read": ["send", perm]}
    with pytest.raises(ValueError, match="the read role may only be delegated"):
        access.dsg_access_delegations(PROJECTS, ["alice", "bob"], perms, "tank/dsg")
    # read-only permissions are fine
    ok = access.dsg_access_delegations(
        PROJECTS, ["alice", "bob"], {**PERMS, "read": ["diff", "send"]}, "tank/dsg"
    )
    assert ok["tank/dsg/alpha"]["bob"] == ["diff", "send"]


def test_delegations_per_role_and_retired_project():
    present = access.dsg_access_present_users(USERS)
    assert access.dsg_access_delegations(PROJECTS, present, PERMS, "tank/dsg") == {
        "tank/dsg/alpha": {"alice": ["diff", "send", "snapshot"]},
        "tank/dsg/beta": {"bob": ["send", "snapshot"]},
        "tank/dsg/old": {},
    }


def test_delegations_reject_unknown_role():
    with pytest.raises(ValueError, match="unknown role"):
        access.dsg_access_delegations(
            [{"name": "p", "group": "g", "users": {"alice": "owner"}}], ["alice"], PERMS, "t"
        )


def test_access_document_schema():
    present = access.dsg_access_present_users(USERS)
    doc = access.dsg_access_document(PROJECTS, present, "tank/dsg", "/var/repos/dsg/")
    assert doc == {
        "projects": {
            "alpha": {
                "group": "dsg-alpha",
                "dataset": "tank/dsg/alpha",
                "mountpoint": "/var/repos/dsg/alpha",
                "users": {"alice": "admin", "bob": "read"},
            },
            "beta": {
                "group": "dsg-beta",
                "dataset": "tank/dsg/beta",
                "mountpoint": "/var/repos/dsg/beta",
                "users": {"bob": "write"},
            },
        }
    }


def test_group_members_parse_and_plan():
    assert members.parse_group_line("dsg-a:x:3001:alice,bob\n") == (
        "dsg-a",
        "3001",
        ["alice", "bob"],
    )
    assert members.parse_group_line("dsg-a:x:3001:") == ("dsg-a", "3001", [])
    assert members.membership_plan(["alice", "mallory"], ["bob", "alice"]) == (["bob"], ["mallory"])
    with pytest.raises(ValueError):
        members.parse_group_line("broken")


@pytest.mark.parametrize(
    "role", sorted(p.name for p in ROLES_DIR.iterdir() if (p / "defaults" / "main.yml").is_file())
)
def test_every_default_is_specified_and_every_option_has_a_default_or_is_required(role):
    """defaults/main.yml and meta/argument_specs.yml describe the same variables."""
    import yaml

    defaults = yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text())
    options: dict = {}
    for entry in specs["argument_specs"].values():
        options.update(entry.get("options") or {})
    assert set(defaults) <= set(options), (
        f"undocumented in argument_specs: {set(defaults) - set(options)}"
    )
    for name, spec in options.items():
        assert name.startswith(role + "_"), f"{name} lacks the {role}_ prefix"
        assert name in defaults or spec.get("required"), f"{name}: no default and not required"
        assert spec.get("description"), f"{name}: no description"


datasets = load("dsg_datasets/filter_plugins/dsg_datasets.py")
CRYPT = [
    {"name": "plain", "group": "g"},
    {"name": "sealed", "group": "g", "encryption": {"keyformat": "raw"}},
    {"name": "defaults", "group": "g", "encryption": {}},
    {"name": "given", "group": "g", "encryption": {"keyformat": "hex", "key": "ab" * 32}},
    {"name": "gone", "group": "g", "encryption": {}, "state": "absent"},
]


def test_encryption_specs_defaults_and_no_key_in_output():
    specs = datasets.encryption_specs(CRYPT, "tank/dsg", "/etc/dsg/keys/")
    assert [s["name"] for s in specs] == ["sealed", "defaults", "given"]
    sealed = specs[0]
    assert sealed == {
        "name": "sealed",
        "dataset": "tank/dsg/sealed",
        "properties": {
            "encryption": "aes-256-gcm",
            "keyformat": "raw",
            "keylocation": "file:///etc/dsg/keys/sealed.key",
        },
        "key_file": "/etc/dsg/keys/sealed.key",
        "has_key": False,
    }
    assert specs[2]["has_key"] is True and "ab" * 32 not in repr(specs)
    # `on` is what OpenZFS reports as aes-256-gcm: declared so, it reads back equal
    on = datasets.encryption_specs(
        [{"name": "x", "encryption": {"algorithm": "on", "keylocation": "file:///k/x.key"}}],
        "p/dsg", "/etc/dsg/keys",
    )  # fmt: skip
    assert on[0]["properties"]["encryption"] == "aes-256-gcm"
    assert on[0]["key_file"] == "/k/x.key"


@pytest.mark.parametrize(
    ("encryption", "message"),
    [
        ({"keyformat": "pem"}, "keyformat must be one of"),
        ({"keylocation": "prompt"}, "keylocation must be a file:///"),
        ({"keylocation": "https://keys.example.org/x"}, "keylocation must be a file:///"),
        ({"keylocation": "file:///etc/../x.key"}, "keylocation must be a file:///"),
        ({"key": "secret-raw-bytes"}, "a provided key must be text"),
        ({"keyformat": "hex", "key": "abc"}, "exactly 64 hex digits"),
        ({"keyformat": "passphrase", "key": "short"}, "8 to 512 characters"),
        ({"algorithm": "rot13"}, "is not one of"),
        ({"keyfile": "/x"}, "unknown encryption settings"),
        ("yes", "must be a mapping"),
    ],
)
def test_encryption_specs_refuse_bad_settings(encryption, message):
    with pytest.raises(datasets.FilterError, match=message) as err:
        datasets.encryption_specs([{"name": "p", "encryption": encryption}], "t/dsg", "/k")
    assert "secret-raw-bytes" not in str(err.value)


def test_without_keys_hides_provided_keys_only():
    out = datasets.without_keys(CRYPT)
    assert out[3]["encryption"] == {"keyformat": "hex", "key": "<hidden>"}
    assert CRYPT[3]["encryption"]["key"] == "ab" * 32  # the input is not modified
    assert out[:3] == CRYPT[:3] and out[4] == CRYPT[4]
