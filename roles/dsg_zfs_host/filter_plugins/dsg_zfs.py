# Copyright (c) HRDAG. GPL-3.0-or-later.
"""Filters that make ZFS property dicts idempotent with community.general.zfs.

community.general.zfs compares the declared value, as a string, with
`zfs get -H -p` output.  So `atime: off` (a YAML boolean), `copies: 2` (an int)
or `quota: 2T` (a human size; ZFS reports bytes) would be "changed" on every
run.  `dsg_zfs_props` turns a property dict into the exact strings ZFS reports.
"""

from __future__ import annotations

import re

# Properties whose parsable value is a byte count.
SIZE_PROPERTIES = frozenset(
    {
        "quota",
        "refquota",
        "reservation",
        "refreservation",
        "recordsize",
        "volsize",
        "volblocksize",
        "special_small_blocks",
    }
)
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
# Values ZFS reports as "0" in parsable output.
_NONE_SIZES = {"none", "0"}
# Old spellings OpenZFS (>= 2.0) accepts but reports under their new name: `zfs set
# acltype=posixacl` reads back as "posix", so declaring posixacl would be "changed" on every
# run (seen on the lab VM, OpenZFS 2.1). zfs-fuse has no acltype.
_ALIASES = {"acltype": {"posixacl": "posix", "noacl": "off"}}


class FilterError(ValueError):
    pass


def zfs_size(value):
    """'2T' -> '2199023255552' (ZFS sizes are powers of 1024); 'none' -> '0'."""
    if isinstance(value, bool):
        raise FilterError(f"size cannot be a boolean: {value!r}")
    if isinstance(value, int):
        return str(value)
    text = str(value).strip()
    if text.lower() in _NONE_SIZES:
        return "0"
    m = _SIZE_RE.match(text)
    if not m:
        raise FilterError(f"not a ZFS size: {value!r}")
    number, unit = m.group(1), m.group(2).upper()
    size = float(number) * (1024 ** _UNITS[unit])
    if size != int(size):
        raise FilterError(f"size {value!r} is not a whole number of bytes")
    return str(int(size))


def zfs_value(name, value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if name in SIZE_PROPERTIES:
        return zfs_size(value)
    if value is None:
        raise FilterError(f"property {name} has no value")
    text = str(value)
    return _ALIASES.get(name, {}).get(text, text)


def dsg_zfs_props(props):
    """Normalize a ZFS property dict to the strings `zfs get -H -p` reports."""
    if not isinstance(props, dict):
        raise FilterError(f"expected a dict of ZFS properties, got {type(props).__name__}")
    return {str(k): zfs_value(str(k), v) for k, v in props.items()}


class FilterModule:
    def filters(self):
        return {"dsg_zfs_props": dsg_zfs_props, "dsg_zfs_size": zfs_size}
