"""The typed values read back from zfs: platform, snapshots, pool status, key state."""

from __future__ import annotations

from dataclasses import dataclass, field


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


def _parse_row(line: str) -> PropRow | None:
    parts = line.split("\t")
    if len(parts) < 4:
        return None
    # A value set by someone else could contain a tab: it is everything between.
    return PropRow(parts[0], parts[1], "\t".join(parts[2:-1]), parts[-1])
