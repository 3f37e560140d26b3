"""A thin, typed layer over the ``zfs`` and ``zpool`` commands.

Every call is an argv list (never a shell string) asking for script-friendly output
(``-H``, and ``-p`` where the platform has it). A failed command raises :class:`ZfsError`
carrying the argv, the exit code and stderr. The same code drives OpenZFS in production and
zfs-fuse (pool version 23) in the lab; what differs is detected once into a :class:`Platform`,
and every zfs-fuse workaround lives in this module, each with a comment saying why. The
measurements behind them are in docs/lab.md ("zfs-fuse lab").

Commands can run behind a prefix (``Zfs(prefix=["sudo", "-n"])``); the default is none.
Names are validated before they reach argv, so a name can never be read as an option, and
property values are refused when they could not be read back through ``-H`` output.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

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

T = TypeVar("T")
# (argv, stdin, stdout) of one process in a pipeline; stdin None: the previous stdout.
Stage = tuple[list[str], IO[bytes] | int | None, IO[bytes] | int]


# --- errors ----------------------------------------------------------------------------------


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


# --- validation ------------------------------------------------------------------------------


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


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """What this ZFS can do. Detected once per :class:`Zfs` (see :func:`detect_platform`)."""

    is_zfs_fuse: bool
    snapshot_dir: bool  # <mountpoint>/.zfs/snapshot is readable (zfs-fuse: never)
    allow: bool  # `zfs allow` works (zfs-fuse: needs the missing /usr/lib/zfs/pyzfs.py)
    encryption: bool  # native encryption (zfs-fuse: pool version 23, no such property)
    rename_mounted: bool  # `zfs rename` of a mounted filesystem works (zfs-fuse: "busy")
    parsable_pool_list: bool  # `zpool list -p` (zfs-fuse: "invalid option 'p'")
    holds_list: bool  # `zfs holds` (zfs-fuse: needs pyzfs.py); hold/release work everywhere
    pool_version: int | None  # legacy pool version (23 on zfs-fuse); None with feature flags


@dataclass(frozen=True)
class Snapshot:
    name: str  # dataset@snapname
    createtxg: int
    creation: int  # seconds since the epoch
    userrefs: int  # number of holds
    user_props: dict[str, str] = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return self.name.partition("@")[0]

    @property
    def snapname(self) -> str:
        return self.name.partition("@")[2]


@dataclass(frozen=True)
class PoolStatus:
    name: str
    size: int
    allocated: int
    free: int
    capacity: int  # percent used
    health: str
    exact: bool  # False when sizes were parsed from rounded human output (zfs-fuse)


@dataclass(frozen=True)
class KeyState:
    """Native encryption of a dataset (``zfs get encryption,keystatus,keylocation,...``).

    `encryption` is None where the platform has no such property (zfs-fuse, pool version
    23): such a dataset is not encrypted. `keystatus` is ``available`` or ``unavailable``
    for an encrypted dataset, None otherwise.
    """

    encryption: str | None
    keystatus: str | None = None
    keylocation: str | None = None
    keyformat: str | None = None
    encryption_root: str | None = None

    @property
    def supported(self) -> bool:
        return self.encryption is not None

    @property
    def encrypted(self) -> bool:
        return self.encryption not in (None, "off")

    @property
    def key_loaded(self) -> bool:
        """True unless the dataset is encrypted and its key is not loaded."""
        return not self.encrypted or self.keystatus == "available"


KEY_PROPERTIES = ("encryption", "keystatus", "keylocation", "keyformat", "encryptionroot")


def parse_key_state(text: str) -> KeyState:
    """Parse ``zfs get -H -p -o property,value encryption,keystatus,...`` output; ``-`` (not
    applicable, e.g. keystatus of an unencrypted dataset) reads as None."""
    values: dict[str, str | None] = {}
    for line in text.splitlines():
        prop, sep, value = line.partition("\t")
        if sep and prop in KEY_PROPERTIES:
            values[prop] = None if value.strip() in ("", "-") else value.strip()
    return KeyState(
        encryption=values.get("encryption") or "off",
        keystatus=values.get("keystatus"),
        keylocation=values.get("keylocation"),
        keyformat=values.get("keyformat"),
        encryption_root=values.get("encryptionroot"),
    )


def no_encryption_property(stderr: str) -> bool:
    """zfs-fuse: ``bad property list: invalid property 'encryption'``."""
    text = stderr.lower()
    return "invalid property" in text and ("encryption" in text or "key" in text)


def key_location_url(location: str) -> str:
    """An absolute path or a ``file://`` URL -> the ``file://`` URL ``zfs load-key -L`` takes."""
    loc = location.strip()
    if loc.startswith("/"):
        loc = "file://" + loc
    if not loc.startswith("file:///") or any(ord(c) < 0x20 for c in loc):
        raise ValueError(f"not a key file (an absolute path or file:///...): {location!r}")
    return loc


@dataclass(frozen=True)
class PropRow:
    name: str
    property: str
    value: str
    source: str


# --- the command runner ----------------------------------------------------------------------


def _find_tool(name: str) -> str:
    """Resolve zfs/zpool, also in the sbin directories a non-root PATH may lack."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(name, path=path) or name


def _env() -> dict[str, str]:
    # Parsing relies on the C locale's messages and number formats.
    return {**os.environ, "LC_ALL": "C"}


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", "surrogateescape")


class Zfs:
    """Runs zfs/zpool, optionally behind a command prefix such as ``("sudo", "-n")``."""

    def __init__(
        self,
        prefix: Sequence[str] = (),
        *,
        zfs: str | None = None,
        zpool: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        platform: Platform | None = None,
    ):
        self.prefix = tuple(prefix)
        # Behind a prefix (sudo, ssh) the far side resolves the command by its own PATH.
        self.zfs_cmd = zfs or ("zfs" if self.prefix else _find_tool("zfs"))
        self.zpool_cmd = zpool or ("zpool" if self.prefix else _find_tool("zpool"))
        self.timeout = timeout
        self._platform = platform

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Zfs:
        """Prefix from ``DSG_ZFS_PREFIX`` (e.g. ``"sudo -n"``), split into argv words."""
        return cls(shlex.split(environ.get("DSG_ZFS_PREFIX", "")))

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = detect_platform(self)
        return self._platform

    # -- plumbing

    def argv(self, tool: str, args: Sequence[str]) -> list[str]:
        exe = {"zfs": self.zfs_cmd, "zpool": self.zpool_cmd}[tool]
        return [*self.prefix, exe, *args]

    def run(
        self, tool: str, args: Sequence[str], *, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = self.argv(tool, args)
        limit = self.timeout if timeout is None else timeout
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=limit,
                env=_env(),
                check=False,
            )
        except FileNotFoundError as exc:
            raise ZfsError(cmd, 127, f"{exc.filename or cmd[0]}: command not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise ZfsError(cmd, -1, f"timed out after {limit:g}s") from exc
        out = subprocess.CompletedProcess(
            cmd, proc.returncode, _decode(proc.stdout), _decode(proc.stderr)
        )
        if check and proc.returncode != 0:
            raise _classify(cmd, proc.returncode, out.stderr)
        return out

    def zfs(self, *args: str, check: bool = True) -> str:
        return self.run("zfs", args, check=check).stdout

    def zpool(self, *args: str, check: bool = True) -> str:
        return self.run("zpool", args, check=check).stdout

    def _retry_busy(self, action: Callable[[], T], attempts: int = 4) -> T:
        # zfs-fuse: the daemon tears a FUSE mount down asynchronously, so a destroy/rename
        # that races an unmount can fail with "dataset is busy" (`zfs destroy` of a mounted
        # filesystem always does: its own unmount has not finished). An explicit unmount
        # before the destroy worked 20 times out of 20 in the lab; this retry is the safety
        # net. On OpenZFS "busy" is real (a hold, an open file): fail at once.
        tries = attempts if self.platform.is_zfs_fuse else 1
        for i in range(tries):
            try:
                return action()
            except DatasetBusy:
                if i == tries - 1:
                    raise
                time.sleep(0.1 * (i + 1))
        raise AssertionError("unreachable")

    # -- properties

    def get_rows(
        self,
        props: Sequence[str],
        targets: Sequence[str],
        *,
        recursive: bool = False,
        depth: int | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[PropRow]:
        """``zfs get -H -p`` as rows (name, property, value, source); `depth` implies -r."""
        args = ["get", "-H", "-p", "-o", "name,property,value,source"]
        if recursive or depth is not None:
            args.append("-r")
        if depth is not None:
            args += ["-d", str(depth)]
        if sources:
            args += ["-s", ",".join(sources)]
        names = [p if p == "all" else _check_property(p) for p in props]
        args += [",".join(names), *(_check_any_name(t) for t in targets)]
        return [row for line in self.zfs(*args).splitlines() if (row := _parse_row(line))]

    def get_properties(self, name: str, props: Sequence[str]) -> dict[str, str | None]:
        """Values by property; None when unset or not applicable (ZFS prints ``-`` / ``-``)."""
        out: dict[str, str | None] = dict.fromkeys(props)
        for row in self.get_rows(props, [name]):
            out[row.property] = None if (row.value, row.source) == ("-", "-") else row.value
        return out

    def get_property(self, name: str, prop: str) -> str | None:
        return self.get_properties(name, [prop])[prop]

    def set_property(self, name: str, prop: str, value: str) -> None:
        arg = f"{_check_property(prop)}={check_property_value(value)}"
        self.zfs("set", arg, _check_any_name(name))

    def set_properties(self, name: str, props: Mapping[str, str]) -> None:
        # One property per `zfs set`: zfs-fuse reads a second `a=b` as a dataset name. Not
        # atomic; snapshot metadata goes through `snapshot(..., user_props)` instead, which is.
        for prop, value in props.items():
            self.set_property(name, prop, value)

    def inherit_property(self, name: str, prop: str) -> None:
        self.zfs("inherit", _check_property(prop), _check_any_name(name))

    def user_properties(
        self,
        name: str,
        namespace: str = USER_NAMESPACE,
        sources: Sequence[str] = ("local", "received"),
    ) -> dict[str, str]:
        """User properties under `namespace` set on `name` itself (or received with it)."""
        rows = self.get_rows(["all"], [name], sources=sources)
        return {r.property: r.value for r in rows if r.property.startswith(namespace)}

    # -- encryption

    def key_state(self, name: str) -> KeyState:
        """Encryption, key status and key location of `name` (see :class:`KeyState`).
        Raises DatasetNotFound when it does not exist."""
        args = ["get", "-H", "-p", "-o", "property,value", ",".join(KEY_PROPERTIES)]
        proc = self.run("zfs", [*args, _check_any_name(name)], check=False)
        if proc.returncode != 0:
            if no_encryption_property(proc.stderr):
                return KeyState(encryption=None)
            raise _classify(proc.args, proc.returncode, proc.stderr)
        return parse_key_state(proc.stdout)

    def load_key(self, name: str, location: str | None = None) -> None:
        """``zfs load-key [-L file:///...] name`` (the dataset's own keylocation by default)."""
        loc = ["-L", key_location_url(location)] if location else []
        self.zfs("load-key", *loc, check_dataset_name(name))

    # -- datasets

    def dataset_exists(self, name: str) -> bool:
        try:
            self.zfs("list", "-H", "-o", "name", _check_any_name(name))
        except DatasetNotFound:
            return False
        return True

    def list_datasets(self, root: str, *, depth: int | None = None) -> list[str]:
        """Filesystems at and under `root` (parents before children)."""
        args = ["list", "-H", "-o", "name", "-t", "filesystem", "-r"]
        if depth is not None:
            args += ["-d", str(depth)]
        return self.zfs(*args, check_dataset_name(root)).splitlines()

    def create_dataset(
        self, name: str, properties: Mapping[str, str] | None = None, *, parents: bool = False
    ) -> None:
        """For the lab and tests: in production Ansible creates datasets."""
        args = ["create", *(["-p"] if parents else []), *_prop_args(properties)]
        self.zfs(*args, check_dataset_name(name))

    def destroy_dataset(self, name: str, *, recursive: bool = False) -> None:
        """Destroy a filesystem (and with `recursive` its children and snapshots)."""
        check_dataset_name(name)
        if "/" not in name:
            raise ValueError(f"refusing to destroy a pool's root dataset: {name}")
        if self.platform.is_zfs_fuse:
            # zfs-fuse: `zfs destroy` of a mounted filesystem unmounts it, then fails with
            # "dataset is busy" (and so does `destroy -f`); unmounting first, deepest first,
            # then destroying works every time in the lab.
            self._unmount_tree(name)
        args = ["destroy", *(["-r"] if recursive else []), name]
        self._retry_busy(lambda: self.zfs(*args))

    def _mounted_tree(self, name: str) -> list[str]:
        """Mounted filesystems at and under `name`, parents first."""
        rows = self.zfs("list", "-H", "-o", "name,mounted", "-t", "filesystem", "-r", name)
        return [ln.split("\t")[0] for ln in rows.splitlines() if ln.endswith("\tyes")]

    def _unmount_tree(self, name: str) -> list[str]:
        """Unmount everything at and under `name`, deepest first; return what was mounted."""
        mounted = self._mounted_tree(name)
        for ds in sorted(mounted, key=lambda d: d.count("/"), reverse=True):
            self.zfs("unmount", ds)
        return mounted

    def rename_dataset(self, old: str, new: str) -> None:
        check_dataset_name(old)
        check_dataset_name(new)
        remount = False
        if not self.platform.rename_mounted and self.get_property(old, "mounted") == "yes":
            # zfs-fuse: renaming a mounted filesystem fails with "dataset is busy".
            self._unmount_tree(old)
            remount = True
        self._retry_busy(lambda: self.zfs("rename", old, new))
        if remount:
            self.zfs("mount", new)

    def mountpoint(self, name: str) -> Path | None:
        """Where the filesystem is mounted now; None when it is not mounted."""
        props = self.get_properties(check_dataset_name(name), ["mountpoint", "mounted"])
        mnt = props["mountpoint"]
        if props["mounted"] != "yes" or not mnt or not mnt.startswith("/"):
            return None
        return Path(mnt)

    # -- snapshots

    def snapshot(
        self, dataset: str, snapname: str, user_props: Mapping[str, str] | None = None
    ) -> str:
        """Take ``dataset@snapname``; `user_props` are set in the same transaction (``-o``).

        ``zfs snapshot -o`` works on zfs-fuse 0.7 and OpenZFS alike (checked in the lab), so a
        snapshot never exists without its metadata.
        """
        name = check_snapshot_name(f"{dataset}@{snapname}")
        for key in user_props or {}:
            check_user_property(key)
        self.zfs("snapshot", *_prop_args(user_props), name)
        return name

    def list_snapshots(self, dataset: str, namespace: str = USER_NAMESPACE) -> list[Snapshot]:
        """Snapshots of `dataset` (not of its children), oldest first (by createtxg).

        Two ``zfs get -r -d 1`` calls filtered by name: zfs-fuse has no ``zfs list -p`` and
        no ``zfs get -t``.
        """
        check_dataset_name(dataset)
        prefix = dataset + "@"
        meta: dict[str, dict[str, str]] = {}
        for row in self.get_rows(["createtxg", "creation", "userrefs"], [dataset], depth=1):
            if row.name.startswith(prefix):
                meta.setdefault(row.name, {})[row.property] = row.value
        props: dict[str, dict[str, str]] = {name: {} for name in meta}
        local = self.get_rows(["all"], [dataset], depth=1, sources=("local", "received"))
        for row in local:
            if row.name in props and row.property.startswith(namespace):
                props[row.name][row.property] = row.value
        snaps = [
            Snapshot(
                name=name,
                createtxg=int(m["createtxg"]),
                creation=int(m["creation"]),
                userrefs=int(m.get("userrefs", "0")),
                user_props=props[name],
            )
            for name, m in meta.items()
        ]
        return sorted(snaps, key=lambda s: (s.createtxg, s.name))

    def snapshots_after(self, snapshot: str) -> list[Snapshot]:
        """Snapshots of the same dataset taken after `snapshot`, oldest first."""
        dataset, _ = split_snapshot(snapshot)
        snaps = self.list_snapshots(dataset)
        for i, snap in enumerate(snaps):
            if snap.name == snapshot:
                return snaps[i + 1 :]
        raise DatasetNotFound(["zfs", "list", snapshot], 1, f"{snapshot}: snapshot does not exist")

    def rollback(self, snapshot: str, *, destroy_later: bool = False) -> list[str]:
        """Roll the live dataset back to `snapshot`; return the later snapshots destroyed.

        Without `destroy_later`, refuses (RollbackRefused, nothing changed) when later
        snapshots exist. With it, runs ``zfs rollback -r``, which destroys exactly those —
        but first refuses (RollbackRefused with `blocked`) if any of them is held or has a
        clone: ``zfs rollback -r`` destroys the later snapshots one by one and stops at the
        first it cannot destroy, leaving the others gone and the data not rolled back
        (measured on zfs-fuse). Never ``-R`` (that would destroy clones). The check and the
        rollback are separate commands: callers hold the repository lock so that no snapshot,
        hold or clone appears in between.
        """
        later = self.snapshots_after(snapshot)
        names = [s.name for s in later]
        if later and not destroy_later:
            raise RollbackRefused(snapshot, names)
        blocked = {s.name: f"{s.userrefs} hold(s)" for s in later if s.userrefs}
        if later:
            for clone, origin in self._clones(snapshot.split("/")[0].split("@")[0]).items():
                if origin in names:
                    blocked.setdefault(origin, f"cloned as {clone}")
        if blocked:
            raise RollbackRefused(snapshot, names, blocked)
        self.zfs("rollback", *(["-r"] if later else []), snapshot)
        return names

    def _clones(self, pool: str) -> dict[str, str]:
        """clone -> origin snapshot for every clone in `pool` (zfs-fuse has no `clones`)."""
        rows = self.get_rows(["origin"], [pool], recursive=True)
        return {r.name: r.value for r in rows if r.value not in ("-", "")}

    def destroy_snapshot(self, snapshot: str) -> None:
        """Destroy one snapshot; fails with DatasetBusy while it is held or cloned."""
        self.zfs("destroy", check_snapshot_name(snapshot))

    def hold(self, snapshot: str, tag: str) -> None:
        self.zfs("hold", _check_tag(tag), check_snapshot_name(snapshot))

    def release(self, snapshot: str, tag: str) -> None:
        self.zfs("release", _check_tag(tag), check_snapshot_name(snapshot))

    def hold_count(self, snapshot: str) -> int:
        """Number of holds (the ``userrefs`` property: works where ``zfs holds`` does not)."""
        value = self.get_property(check_snapshot_name(snapshot), "userrefs")
        return int(value or 0)

    def holds(self, snapshot: str) -> list[str]:
        """Hold tags on `snapshot`. zfs-fuse cannot list them: use :meth:`hold_count`."""
        cmd = self.argv("zfs", ["holds", "-H", check_snapshot_name(snapshot)])
        if not self.platform.holds_list:
            raise ZfsUnsupported(cmd, -1, "zfs holds is not available on this platform (zfs-fuse)")
        rows = self.zfs("holds", "-H", snapshot).splitlines()
        return [r.split("\t")[1] for r in rows if r.count("\t") >= 2]

    # -- clones

    def clone(
        self,
        snapshot: str,
        target: str,
        *,
        readonly: bool = True,
        mountpoint: str | Path | None = None,
    ) -> str:
        """Clone `snapshot` to `target` (read-only by default: a window on old data).

        zfs-fuse enforces ``readonly=on`` (writes fail with EROFS) but reads the property
        back as ``off``/``temporary``; do not verify it through ``zfs get``.
        """
        props: dict[str, str] = {}
        if readonly:
            props["readonly"] = "on"
        if mountpoint is not None:
            props["mountpoint"] = str(mountpoint)
        args = ["clone", *_prop_args(props), check_snapshot_name(snapshot)]
        self.zfs(*args, check_dataset_name(target))
        return target

    def destroy_clone(self, clone: str) -> None:
        """Destroy a clone made by :meth:`clone`; refuses a dataset that is not a clone."""
        origin = self.get_property(check_dataset_name(clone), "origin")
        if not origin:
            cmd = self.argv("zfs", ["destroy", clone])
            raise ZfsError(cmd, -1, "", message=f"refusing to destroy {clone}: not a clone")
        self.destroy_dataset(clone)

    # -- replication

    def send(
        self,
        snapshot: str,
        out: IO[bytes] | int,
        *,
        base: str | None = None,
        intermediates: bool = False,
        properties: bool = False,
        raw: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Write a send stream of `snapshot` (incremental from `base`) to `out`."""
        args = self._send_args(snapshot, base, intermediates, properties, raw)
        self._stream([(self.argv("zfs", args), subprocess.DEVNULL, out)], timeout)

    def receive(
        self,
        target: str,
        inp: IO[bytes] | int,
        *,
        force: bool = False,
        mount: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Receive a send stream from `inp` into `target`.

        `force` (``-F``) rolls the target back to its last snapshot first: needed for an
        incremental when the target changed since (even an atime update from reading it).
        ``mount=False`` (``-u``) leaves a newly received filesystem unmounted.
        """
        args = _recv_args(target, force, mount)
        with self._receiving_into(target):
            self._stream([(self.argv("zfs", args), inp, subprocess.DEVNULL)], timeout)

    def replicate(
        self,
        snapshot: str,
        target: str,
        *,
        base: str | None = None,
        intermediates: bool = False,
        properties: bool = True,
        raw: bool = False,
        force: bool = False,
        mount: bool = True,
        receiver: Zfs | None = None,
        timeout: float | None = None,
        relay: Callable[[int], None] | None = None,
    ) -> None:
        """``zfs send ... | zfs receive ...`` as two processes joined by a pipe (no shell).

        `base` makes it incremental (``-i``, or ``-I`` with `intermediates`); `properties`
        sends dataset and snapshot properties (``-p``), so ``dsg:`` metadata arrives too.
        `raw` (``-w``, OpenZFS only) sends an encrypted dataset as it is on disk: the copy
        stays encrypted with the same key, and no key is needed to send or receive it.
        `force` and `mount` are those of :meth:`receive`. `receiver` runs the receiving side
        (another prefix, e.g. another host). With `relay`, the stream passes through this
        process, which calls `relay(bytes)` per chunk (see :meth:`_stream_relayed`).
        """
        send = self.argv("zfs", self._send_args(snapshot, base, intermediates, properties, raw))
        recv_args = _recv_args(target, force, mount)
        recv_zfs = receiver or self
        recv = recv_zfs.argv("zfs", recv_args)
        stages: list[Stage] = [
            (send, subprocess.DEVNULL, subprocess.PIPE),
            (recv, None, subprocess.DEVNULL),
        ]
        with recv_zfs._receiving_into(target):
            if relay is None:
                self._stream(stages, timeout)
            else:
                self._stream_relayed(stages, relay, timeout)

    def _stream_relayed(
        self, stages: Sequence[Stage], relay: Callable[[int], None], timeout: float | None
    ) -> None:
        """send | (this process) | recv: the stream passes through here in 1 MiB chunks and
        `relay(n)` is called per chunk (progress, byte counts, fault points). When this
        process dies mid-stream, the receiver sees a truncated stream and discards it."""
        (send_cmd, _, _), (recv_cmd, _, _) = stages
        deadline = None if timeout is None else time.monotonic() + timeout
        with contextlib.ExitStack() as stack:
            errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in stages]
            procs: list[subprocess.Popen[bytes]] = []
            stack.callback(_kill_all, procs)
            procs.append(_spawn((send_cmd, subprocess.DEVNULL, subprocess.PIPE), errs[0], None))
            procs.append(_spawn((recv_cmd, subprocess.PIPE, subprocess.DEVNULL), errs[1], None))
            src, dst = procs[0].stdout, procs[1].stdin
            assert src is not None and dst is not None
            try:
                while chunk := src.read1(1 << 20):
                    dst.write(chunk)
                    relay(len(chunk))
                    if deadline is not None and time.monotonic() > deadline:
                        raise ZfsError(send_cmd, -1, f"timed out after {timeout:g}s")
            except BrokenPipeError:
                pass  # the receiver died: its exit code and stderr say why
            finally:
                src.close()
                with contextlib.suppress(BrokenPipeError):
                    dst.close()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            codes = _wait_all(procs, left)
            _raise_for_failures([send_cmd, recv_cmd], codes, errs)

    @contextlib.contextmanager
    def _receiving_into(self, target: str) -> Iterator[None]:
        """zfs-fuse: receiving into a mounted filesystem does not invalidate the kernel's FUSE
        caches, so with attr/entry timeouts (Debian's /etc/zfs/zfsrc sets 3600 s) files the
        receive removed still open, with another file's size and content. Unmount the target
        for the receive and mount it again after: that drops the caches. (The lab daemon runs
        with timeouts 0 and is not affected; a system instance would be.)"""
        if not self.platform.is_zfs_fuse or not self.dataset_exists(target):
            yield
            return
        mounted = self._unmount_tree(target)
        try:
            yield
        finally:
            for ds in mounted:  # parents first
                if self.dataset_exists(ds) and self.get_property(ds, "mounted") != "yes":
                    self.zfs("mount", ds)

    @staticmethod
    def _send_args(
        snapshot: str, base: str | None, intermediates: bool, properties: bool, raw: bool = False
    ) -> list[str]:
        # -w (raw) is OpenZFS's: zfs-fuse has no encryption and no such flag.
        args = ["send", *(["-w"] if raw else []), *(["-p"] if properties else [])]
        if base is not None:
            args += ["-I" if intermediates else "-i", _check_base(base)]
        return [*args, check_snapshot_name(snapshot)]

    def _stream(self, stages: Sequence[Stage], timeout: float | None) -> None:
        """Run a pipeline of zfs commands; a stage's stdin None means the previous stdout.

        Stderr goes to temporary files (a full stderr pipe could deadlock a long stream).
        """
        with contextlib.ExitStack() as stack:
            errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in stages]
            procs: list[subprocess.Popen[bytes]] = []
            stack.callback(_kill_all, procs)  # runs first: no process outlives the call
            for stage, err in zip(stages, errs, strict=True):
                procs.append(_spawn(stage, err, procs[-1] if procs else None))
            codes = _wait_all(procs, timeout)
            _raise_for_failures([s[0] for s in stages], codes, errs)

    # -- pools

    def list_pools(self) -> list[str]:
        return self.zpool("list", "-H", "-o", "name").splitlines()

    def pool_status(self, pool: str) -> PoolStatus:
        """Size, allocation, capacity and health of `pool` (``zpool list -H [-p]``)."""
        cols = "name,size,allocated,free,capacity,health"
        exact = self.platform.parsable_pool_list
        # zfs-fuse: `zpool list` has no -p, so sizes come rounded (e.g. 1016M); parse them.
        args = ["list", "-H", *(["-p"] if exact else []), "-o", cols, check_dataset_name(pool)]
        fields = self.zpool(*args).rstrip("\n").split("\t")
        name, size, alloc, free, cap, health = fields
        return PoolStatus(
            name=name,
            size=parse_size(size),
            allocated=parse_size(alloc),
            free=parse_size(free),
            capacity=int(cap.rstrip("%")),
            health=health,
            exact=exact,
        )


def _parse_row(line: str) -> PropRow | None:
    parts = line.split("\t")
    if len(parts) < 4:
        return None
    # A value set by someone else could contain a tab: it is everything between.
    return PropRow(parts[0], parts[1], "\t".join(parts[2:-1]), parts[-1])


def _recv_args(target: str, force: bool, mount: bool) -> list[str]:
    # `-u` is missing from zfs-fuse's usage text but works (checked in the lab).
    flags = [*(["-F"] if force else []), *([] if mount else ["-u"])]
    return ["receive", *flags, check_dataset_name(target)]


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


def _wait_all(procs: Iterable[subprocess.Popen[bytes]], timeout: float | None) -> list[int]:
    deadline = None if timeout is None else time.monotonic() + timeout
    codes: list[int] = []
    for proc in procs:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            codes.append(proc.wait(timeout=left))
        except subprocess.TimeoutExpired as exc:
            raise ZfsError(list(proc.args), -1, f"timed out after {timeout:g}s") from exc
    return codes


def _read_err(fh: IO[bytes]) -> str:
    fh.seek(0)
    return _decode(fh.read()).strip()


def _spawn(
    stage: Stage, err: IO[bytes], previous: subprocess.Popen[bytes] | None
) -> subprocess.Popen[bytes]:
    cmd, stdin, stdout = stage
    src = previous.stdout if stdin is None and previous is not None else stdin
    try:
        proc = subprocess.Popen(cmd, stdin=src, stdout=stdout, stderr=err, env=_env())
    except FileNotFoundError as exc:
        raise ZfsError(cmd, 127, f"{cmd[0]}: command not found") from exc
    if stdin is None and previous is not None and previous.stdout is not None:
        previous.stdout.close()  # only the child holds the pipe: a dead reader means EPIPE
    return proc


def _kill_all(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _raise_for_failures(
    cmds: Sequence[list[str]], codes: Sequence[int], errs: Sequence[IO[bytes]]
) -> None:
    """Raise for the last failed stage (a receiver's refusal is the cause, the sender's
    broken pipe the symptom), with the other failures' stderr appended."""
    failed = [i for i, rc in enumerate(codes) if rc != 0]
    if not failed:
        return
    last = failed[-1]
    others = [f"{shlex.join(cmds[i])}: {_read_err(errs[i])}" for i in failed[:-1]]
    stderr = _read_err(errs[last]) + (f"\n(also: {'; '.join(others)})" if others else "")
    raise _classify(cmds[last], codes[last], stderr)


# --- platform detection ----------------------------------------------------------------------

_PLATFORM_CACHE: dict[tuple[str, ...], Platform] = {}


def detect_platform(
    zfs: Zfs | None = None, probe: str | None = None, *, refresh: bool = False
) -> Platform:
    """Probe what the ZFS behind `zfs` can do, without changing anything.

    `probe` is a mounted filesystem to test ``.zfs/snapshot`` and ``zfs allow`` on (default:
    the first imported pool). Results are cached per command line; `refresh` re-probes.
    """
    zfs = zfs or Zfs()
    key = (*zfs.argv("zfs", []), *zfs.argv("zpool", []), probe or "")
    if not refresh and key in _PLATFORM_CACHE:
        return _PLATFORM_CACHE[key]
    version = _pool_version(zfs)
    # zfs-fuse 0.7 is the only Linux ZFS without `zfs version` that speaks only legacy pool
    # versions (it stops at 23); OpenZFS lists feature flags in `zpool upgrade -v`.
    is_fuse = zfs.run("zfs", ["version"], check=False).returncode != 0 and version is not None
    if probe is None:
        pools = zfs.run("zpool", ["list", "-H", "-o", "name"], check=False).stdout.split()
        probe = pools[0] if pools else None
    platform = Platform(
        is_zfs_fuse=is_fuse,
        snapshot_dir=_has_snapshot_dir(zfs, probe),
        allow=probe is not None and zfs.run("zfs", ["allow", probe], check=False).returncode == 0,
        encryption=_has_encryption(zfs, probe),
        # Not probed (it would need a scratch dataset): measured on zfs-fuse, where it fails
        # with "dataset is busy"; OpenZFS unmounts and remounts by itself.
        rename_mounted=not is_fuse,
        parsable_pool_list=zfs.run(
            "zpool", ["list", "-H", "-p", "-o", "name"], check=False
        ).returncode
        == 0,
        holds_list=_has_holds_list(zfs, probe),
        pool_version=version,
    )
    _PLATFORM_CACHE[key] = platform
    return platform


def _pool_version(zfs: Zfs) -> int | None:
    out = zfs.run("zpool", ["upgrade", "-v"], check=False).stdout
    if "feature flags" in out.lower():
        return None
    m = re.search(r"pool version (\d+)", out)
    return int(m.group(1)) if m else None


def _has_snapshot_dir(zfs: Zfs, probe: str | None) -> bool:
    if probe is None:
        return False
    try:
        mnt = zfs.mountpoint(probe)
    except ZfsError:
        return False
    return mnt is not None and (mnt / ".zfs" / "snapshot").is_dir()


def _has_encryption(zfs: Zfs, probe: str | None) -> bool:
    if probe is None:
        return False
    # zfs-fuse: "bad property list: invalid property 'encryption'".
    if zfs.run("zfs", ["get", "-H", "-o", "value", "encryption", probe], check=False).returncode:
        return False
    pool = probe.split("/")[0]
    feature = zfs.run(
        "zpool", ["get", "-H", "-o", "value", "feature@encryption", pool], check=False
    )
    return feature.returncode == 0 and feature.stdout.strip() in ("enabled", "active")


def _has_holds_list(zfs: Zfs, probe: str | None) -> bool:
    # Ask for the holds of a snapshot that cannot exist: OpenZFS answers "does not exist",
    # zfs-fuse "internal error: /usr/lib/zfs/pyzfs.py not found" (exit 255).
    target = f"{probe or 'dsgprobe'}@dsg-platform-probe-nonexistent"
    proc = zfs.run("zfs", ["holds", target], check=False)
    return proc.returncode == 0 or "does not exist" in proc.stderr
