"""Unit tests for roles/dsg_zfs_host/library/dsg_zpool_guard.py: layout parsing and comparison."""

from __future__ import annotations

import pytest

from tests.ansible._load import load

m = load("dsg_zfs_host/library/dsg_zpool_guard.py")

ZFS_FUSE = """\
  pool: dsglab
 state: ONLINE
 scrub: none requested
config:

\tNAME                                       STATE     READ WRITE CKSUM
\tdsglab                                     ONLINE       0     0     0
\t  /work/main/.lab/zfs/pools/dsglab.img    ONLINE       0     0     0

errors: No known data errors
"""

OPENZFS = """\
  pool: tank
 state: ONLINE
config:

\tNAME                                   STATE     READ WRITE CKSUM
\ttank                                   ONLINE       0     0     0
\t  raidz2-0                             ONLINE       0     0     0
\t    /dev/disk/by-id/ata-A-part1        ONLINE       0     0     0
\t    /dev/disk/by-id/ata-B-part1        ONLINE       0     0     0
\t    /dev/disk/by-id/ata-C-part1        ONLINE       0     0     0
\t    /dev/disk/by-id/ata-D-part1        ONLINE       0     0     0
\t  mirror-1                             ONLINE       0     0     0
\t    /dev/sde1                          ONLINE       0     0     0
\t    /dev/sdf1                          ONLINE       0     0     0
\tspecial\t
\t  mirror-2                             ONLINE       0     0     0
\t    /dev/nvme0n1p1                     ONLINE       0     0     0
\t    /dev/nvme1n1p1                     ONLINE       0     0     0
\tlogs\t
\t  /dev/sdg1                            ONLINE       0     0     0
\tcache
\t  /dev/sdh1                            ONLINE       0     0     0
\tspares
\t  /dev/sdi1                            AVAIL

errors: No known data errors
"""

# by-id names resolve to kernel names on the host; the tests use a fixed table.
LINKS = {f"/dev/disk/by-id/ata-{c}": f"/dev/sd{c.lower()}" for c in "ABCD"}


def resolve(path):
    return LINKS.get(path, path)


def test_parse_zfs_fuse_single_file_vdev():
    assert m.parse_status_layout(ZFS_FUSE, "dsglab") == [
        {"role": None, "type": "stripe", "disks": ["/work/main/.lab/zfs/pools/dsglab.img"]}
    ]


def test_parse_openzfs_with_aux_vdevs():
    vdevs = m.parse_status_layout(OPENZFS, "tank")
    assert [(v["role"], v["type"], len(v["disks"])) for v in vdevs] == [
        (None, "raidz2", 4),
        (None, "mirror", 2),
        ("special", "mirror", 2),
        ("log", "stripe", 1),
        ("cache", "stripe", 1),
        ("spare", "stripe", 1),
    ]


def test_declared_by_id_matches_status_partitions():
    current = m.normalize_layout(m.parse_status_layout(OPENZFS, "tank"), resolve)
    declared = m.normalize_layout(
        [
            {"type": "raidz2", "disks": [f"/dev/disk/by-id/ata-{c}" for c in "DCBA"]},
            {"type": "mirror", "disks": ["/dev/sde", "/dev/sdf"]},
            {"type": "mirror", "role": "special", "disks": ["/dev/nvme0n1", "/dev/nvme1n1"]},
            {"role": "log", "disks": ["/dev/sdg"]},
            {"role": "cache", "disks": ["/dev/sdh"]},
            {"role": "spare", "disks": ["/dev/sdi"]},
        ],
        resolve,
    )
    assert m.layout_diff(current, declared) == ""


def test_raidz_alias_and_multi_disk_stripe():
    a = m.normalize_layout([{"type": "raidz", "disks": ["/x/1", "/x/2", "/x/3"]}], resolve)
    b = m.normalize_layout([{"type": "raidz1", "disks": ["/x/3", "/x/2", "/x/1"]}], resolve)
    assert a == b
    stripe = m.normalize_layout([{"disks": ["/x/1", "/x/2"]}], resolve)
    assert stripe == [
        {"role": None, "type": "stripe", "disks": ["/x/1"]},
        {"role": None, "type": "stripe", "disks": ["/x/2"]},
    ]


@pytest.mark.parametrize(
    ("declared", "fragment"),
    [
        # one disk fewer: community.general.zpool would `zpool remove` it; we refuse
        (
            [{"type": "raidz2", "disks": [f"/dev/disk/by-id/ata-{c}" for c in "ABC"]}],
            "in the pool but not declared",
        ),
        # a new vdev: community.general.zpool would `zpool add` it; we refuse
        (
            [
                {"type": "raidz2", "disks": [f"/dev/disk/by-id/ata-{c}" for c in "ABCD"]},
                {"type": "mirror", "disks": ["/dev/sde", "/dev/sdf"]},
                {"type": "mirror", "role": "special", "disks": ["/dev/nvme0n1", "/dev/nvme1n1"]},
                {"role": "log", "disks": ["/dev/sdg"]},
                {"role": "cache", "disks": ["/dev/sdh"]},
                {"role": "spare", "disks": ["/dev/sdi"]},
                {"type": "mirror", "disks": ["/dev/sdx", "/dev/sdy"]},
            ],
            "declared but not in the pool: mirror[/dev/sdx, /dev/sdy]",
        ),
    ],
)
def test_any_layout_difference_is_reported(declared, fragment):
    current = m.normalize_layout(m.parse_status_layout(OPENZFS, "tank"), resolve)
    assert fragment in m.layout_diff(current, m.normalize_layout(declared, resolve))


def test_mid_resilver_is_refused():
    text = OPENZFS.replace(
        "\t    /dev/sde1                          ONLINE       0     0     0\n",
        "\t    replacing-0                        ONLINE       0     0     0\n"
        "\t      /dev/sde1                        ONLINE       0     0     0\n"
        "\t      /dev/sdz1                        ONLINE       0     0     0\n",
    )
    with pytest.raises(m.LayoutError, match="mid-operation"):
        m.parse_status_layout(text, "tank")


@pytest.mark.parametrize(
    ("text", "pool"),
    [("no config here\n", "tank"), (ZFS_FUSE, "tank")],
)
def test_parse_errors(text, pool):
    with pytest.raises(m.LayoutError):
        m.parse_status_layout(text, pool)


@pytest.mark.parametrize(
    ("path", "base"),
    [
        ("/dev/sda1", "/dev/sda"),
        ("/dev/nvme0n1p3", "/dev/nvme0n1"),
        ("/dev/disk/by-id/ata-X-part9", "/dev/disk/by-id/ata-X"),
        ("/dev/loop3", "/dev/loop3"),
        ("/srv/pool.img", "/srv/pool.img"),
    ],
)
def test_strip_partition(path, base):
    assert m.strip_partition(path) == base


def test_properties_parse_and_values():
    assert m.parse_list_props("wait\toff\n", ["failmode", "autoexpand"]) == {
        "failmode": "wait",
        "autoexpand": "off",
    }
    assert m.prop_value(True) == "on"
    assert m.prop_value(12) == "12"
    with pytest.raises(m.LayoutError):
        m.parse_list_props("wait\n", ["failmode", "autoexpand"])
