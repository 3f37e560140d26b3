"""A thin, typed layer over the ``zfs`` and ``zpool`` commands.

Every call is an argv list (never a shell string) asking for script-friendly output
(``-H``, and ``-p`` where the platform has it). A failed command raises :class:`ZfsError`
carrying the argv, the exit code and stderr. The same code drives OpenZFS in production and
zfs-fuse (pool version 23) in the lab; what differs is detected once into a :class:`Platform`,
and every zfs-fuse workaround lives in this package, each with a comment saying why. The
measurements behind them are in docs/lab.md ("zfs-fuse lab").

Commands can run behind a prefix (``Zfs(prefix=["sudo", "-n"])``); the default is none.
Names are validated before they reach argv, so a name can never be read as an option, and
property values are refused when they could not be read back through ``-H`` output.

This module is the package's face: `Zfs` is one object whose verbs are grouped by concern in
the modules beside it, as zrepl groups its zfs layer: `names` (checks, sizes, errors),
`model` (values read back), `command` (running the tools, properties, platform detection),
`datasets` (datasets, snapshots, rollback, clones), `holds`, `sendrecv`, `pools`, `keys`.
"""

from __future__ import annotations

from dsg.zfs.command import ZfsCommand, detect_platform
from dsg.zfs.datasets import DatasetOps
from dsg.zfs.holds import HoldOps
from dsg.zfs.keys import KeyOps
from dsg.zfs.model import (
    KEY_PROPERTIES,
    KeyState,
    Platform,
    PoolStatus,
    PropRow,
    Snapshot,
    key_location_url,
    no_encryption_property,
    parse_key_state,
)
from dsg.zfs.names import (
    DEFAULT_TIMEOUT,
    MAX_USER_NAME,
    MAX_USER_VALUE_BYTES,
    USER_NAMESPACE,
    DatasetBusy,
    DatasetNotFound,
    RollbackRefused,
    ZfsError,
    ZfsUnsupported,
    check_dataset_name,
    check_property_value,
    check_snapshot_name,
    check_user_property,
    parse_size,
    split_snapshot,
)
from dsg.zfs.pools import PoolOps
from dsg.zfs.sendrecv import SendRecvOps, Stage, check_resume_token

__all__ = [
    "DEFAULT_TIMEOUT",
    "KEY_PROPERTIES",
    "MAX_USER_NAME",
    "MAX_USER_VALUE_BYTES",
    "USER_NAMESPACE",
    "DatasetBusy",
    "DatasetNotFound",
    "DatasetOps",
    "HoldOps",
    "KeyOps",
    "KeyState",
    "Platform",
    "PoolOps",
    "PoolStatus",
    "PropRow",
    "RollbackRefused",
    "SendRecvOps",
    "Snapshot",
    "Stage",
    "Zfs",
    "ZfsCommand",
    "ZfsError",
    "ZfsUnsupported",
    "check_dataset_name",
    "check_property_value",
    "check_resume_token",
    "check_snapshot_name",
    "check_user_property",
    "detect_platform",
    "key_location_url",
    "no_encryption_property",
    "parse_key_state",
    "parse_size",
    "split_snapshot",
]


class Zfs(DatasetOps, HoldOps, SendRecvOps, PoolOps, KeyOps, ZfsCommand):
    """Runs zfs/zpool, optionally behind a command prefix such as ``("sudo", "-n")``."""
