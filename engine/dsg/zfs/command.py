"""Running zfs and zpool (behind an optional prefix such as sudo), reading and setting
properties, and detecting once what the platform (OpenZFS or zfs-fuse) can do."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Self, TypeVar

from dsg.zfs.model import Platform, PropRow, _parse_row
from dsg.zfs.names import (
    DEFAULT_TIMEOUT,
    USER_NAMESPACE,
    DatasetBusy,
    ZfsError,
    _check_any_name,
    _check_property,
    _classify,
    check_property_value,
)

T = TypeVar("T")


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


_PLATFORM_CACHE: dict[tuple[str, ...], Platform] = {}


def detect_platform(
    zfs: ZfsCommand | None = None, probe: str | None = None, *, refresh: bool = False
) -> Platform:
    """Probe what the ZFS behind `zfs` can do, without changing anything.

    `probe` is a mounted filesystem to test ``.zfs/snapshot`` and ``zfs allow`` on (default:
    the first imported pool). Results are cached per command line; `refresh` re-probes.
    """
    zfs = zfs or ZfsCommand()
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


def _pool_version(zfs: ZfsCommand) -> int | None:
    out = zfs.run("zpool", ["upgrade", "-v"], check=False).stdout
    if "feature flags" in out.lower():
        return None
    m = re.search(r"pool version (\d+)", out)
    return int(m.group(1)) if m else None


def _has_snapshot_dir(zfs: ZfsCommand, probe: str | None) -> bool:
    if probe is None:
        return False
    try:
        mnt = zfs.mountpoint(probe)
    except ZfsError:
        return False
    return mnt is not None and (mnt / ".zfs" / "snapshot").is_dir()


def _has_encryption(zfs: ZfsCommand, probe: str | None) -> bool:
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


def _has_holds_list(zfs: ZfsCommand, probe: str | None) -> bool:
    # Ask for the holds of a snapshot that cannot exist: OpenZFS answers "does not exist",
    # zfs-fuse "internal error: /usr/lib/zfs/pyzfs.py not found" (exit 255).
    target = f"{probe or 'dsgprobe'}@dsg-platform-probe-nonexistent"
    proc = zfs.run("zfs", ["holds", target], check=False)
    return proc.returncode == 0 or "does not exist" in proc.stderr


class ZfsCommand:
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
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Self:
        """Prefix from ``DSG_ZFS_PREFIX`` (e.g. ``"sudo -n"``), split into argv words."""
        return cls(shlex.split(environ.get("DSG_ZFS_PREFIX", "")))

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = detect_platform(self)
        return self._platform

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
