"""Names, sizes and errors of the zfs layer: every name is checked before it reaches an argv."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from dsg.core.errors import RepositoryError

USER_NAMESPACE = "dsg:"


DEFAULT_TIMEOUT = 120.0


MAX_USER_VALUE_BYTES = 8191  # ZAP_MAXVALUELEN (8192) minus the NUL; 8192 aborts zfs-fuse's CLI


MAX_USER_NAME = 256


# Component characters ZFS accepts in dataset and snapshot names.
_COMPONENT = r"[A-Za-z0-9_.:-]+"


_DATASET_RE = re.compile(rf"[A-Za-z][A-Za-z0-9_.:-]*(/{_COMPONENT})*")


_SNAPSHOT_RE = re.compile(rf"(?P<ds>{_DATASET_RE.pattern})@(?P<snap>{_COMPONENT})")


_USER_PROP_RE = re.compile(r"[a-z0-9_.+-][a-z0-9_.:+-]*:[a-z0-9_.:+-]*")


_NATIVE_PROP_RE = re.compile(r"[a-z][a-z0-9_]*(@[A-Za-z0-9_.-]+)?")


_SIZE_RE = re.compile(r"(?P<num>\d+(?:\.\d+)?)(?P<unit>[BKMGTPEZ]?)")


_SIZE_UNITS = "BKMGTPEZ"


class ZfsError(RepositoryError):
    """A zfs/zpool command failed (or could not be run)."""

    kind = "zfs"

    def __init__(
        self,
        cmd: Sequence[str],
        returncode: int,
        stderr: str,
        *,
        message: str | None = None,
        hint: str | None = None,
    ):
        self.cmd = tuple(cmd)
        self.returncode = returncode
        self.stderr = stderr.strip()
        if message is None:
            # zfs wraps long messages over lines ("...has been modified\nsince most recent
            # snapshot"): join them, and keep the message to a readable length.
            detail = " ".join(self.stderr.split())[:400] or "no error output"
            message = f"`{shlex.join(self.cmd)}` failed (exit {returncode}): {detail}"
        super().__init__(
            message,
            hint=hint,
            details={"cmd": list(self.cmd), "returncode": returncode, "stderr": self.stderr},
        )


class DatasetNotFound(ZfsError):
    kind = "zfs_not_found"


class DatasetBusy(ZfsError):
    """In use: mounted and busy, held, or with dependent clones."""

    kind = "zfs_busy"


class ZfsUnsupported(ZfsError):
    """The platform lacks a feature (e.g. ``zfs holds`` on zfs-fuse)."""

    kind = "zfs_unsupported"


class RollbackRefused(RepositoryError):
    """``rollback`` would destroy later snapshots and the caller did not allow it, or one of
    them is held or cloned so ``zfs rollback -r`` would fail half way. Nothing was changed."""

    kind = "zfs_rollback_refused"

    def __init__(
        self, snapshot: str, later: Sequence[str], blocked: Mapping[str, str] | None = None
    ):
        self.snapshot = snapshot
        self.later = tuple(later)
        self.blocked = dict(blocked or {})
        if self.blocked:
            why = ", ".join(f"{name} ({reason})" for name, reason in self.blocked.items())
            message = f"cannot roll back to {snapshot}: later snapshots are in use: {why}"
            hint = "release the holds / destroy the clones first"
        else:
            message = (
                f"rolling back to {snapshot} would destroy {len(later)} later snapshot(s): "
                + ", ".join(later)
            )
            hint = "pass destroy_later=True to destroy them (zfs rollback -r)"
        super().__init__(
            message,
            hint=hint,
            details={"snapshot": snapshot, "later": list(later), "blocked": self.blocked},
        )


def _classify(cmd: Sequence[str], returncode: int, stderr: str) -> ZfsError:
    text = stderr.lower()
    if "does not exist" in text or "no such pool" in text:
        return DatasetNotFound(cmd, returncode, stderr)
    if "is busy" in text or "dependent clones" in text:
        return DatasetBusy(cmd, returncode, stderr)
    return ZfsError(cmd, returncode, stderr)


def check_dataset_name(name: str) -> str:
    """Return `name` if it is a plain dataset name (pool/fs/...), else raise ValueError."""
    if not isinstance(name, str) or not _DATASET_RE.fullmatch(name) or len(name) > 255:
        raise ValueError(f"not a valid ZFS dataset name: {name!r}")
    if any(part in (".", "..") for part in name.split("/")):
        raise ValueError(f"not a valid ZFS dataset name: {name!r}")
    return name


def check_snapshot_name(name: str) -> str:
    """Return `name` if it is ``dataset@snap``, else raise ValueError."""
    m = _SNAPSHOT_RE.fullmatch(name) if isinstance(name, str) else None
    if m is None or len(name) > 255:
        raise ValueError(f"not a valid ZFS snapshot name (dataset@name): {name!r}")
    check_dataset_name(m["ds"])
    return name


def split_snapshot(name: str) -> tuple[str, str]:
    """``"pool/ds@s3"`` -> ``("pool/ds", "s3")``."""
    check_snapshot_name(name)
    ds, _, snap = name.partition("@")
    return ds, snap


def _check_any_name(name: str) -> str:
    return check_snapshot_name(name) if "@" in name else check_dataset_name(name)


def check_user_property(prop: str) -> str:
    """User properties: lowercase, contain a colon, at most 256 chars (ZFS rules)."""
    if not isinstance(prop, str) or not _USER_PROP_RE.fullmatch(prop) or len(prop) > MAX_USER_NAME:
        raise ValueError(f"not a valid ZFS user property name (lowercase, with a colon): {prop!r}")
    return prop


def _check_property(prop: str) -> str:
    if ":" in prop:
        return check_user_property(prop)
    if not _NATIVE_PROP_RE.fullmatch(prop):
        raise ValueError(f"not a valid ZFS property name: {prop!r}")
    return prop


def check_property_value(value: str) -> str:
    """Values must survive ``-H`` output (tab/newline separated) and ZFS's size limit."""
    if not isinstance(value, str):
        raise ValueError(f"ZFS property values are strings, got {type(value).__name__}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError(f"ZFS property value contains a control character: {value!r}")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_USER_VALUE_BYTES:
        raise ValueError(f"ZFS property value longer than {MAX_USER_VALUE_BYTES} bytes")
    return value


def _prop_args(props: Mapping[str, str] | None) -> list[str]:
    out: list[str] = []
    for key, value in (props or {}).items():
        out += ["-o", f"{_check_property(key)}={check_property_value(value)}"]
    return out


def parse_size(text: str) -> int:
    """``"1016M"`` -> bytes (powers of 1024), for zpool output without ``-p``. ``-`` is 0."""
    text = text.strip()
    if text in ("", "-"):
        return 0
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a ZFS size: {text!r}")
    power = _SIZE_UNITS.index(m["unit"]) if m["unit"] else 0
    return int(float(m["num"]) * 1024**power)


def _check_tag(tag: str) -> str:
    if not tag or tag.startswith("-") or any(ord(c) < 0x20 for c in tag) or len(tag) > 255:
        raise ValueError(f"not a valid hold tag: {tag!r}")
    return tag


def _check_base(base: str) -> str:
    # An incremental base may be given as "@snap" (same dataset) or "dataset@snap".
    if base.startswith("@"):
        if not re.fullmatch(_COMPONENT, base[1:]):
            raise ValueError(f"not a valid ZFS snapshot name: {base!r}")
        return base
    return check_snapshot_name(base)
