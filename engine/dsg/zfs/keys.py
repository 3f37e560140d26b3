"""Encryption keys: their state and loading them."""

from __future__ import annotations

from dsg.zfs.command import ZfsCommand
from dsg.zfs.model import (
    KEY_PROPERTIES,
    KeyState,
    key_location_url,
    no_encryption_property,
    parse_key_state,
)
from dsg.zfs.names import _check_any_name, _classify, check_dataset_name


class KeyOps(ZfsCommand):
    """Encryption keys: their state and loading them.
    Mixed into :class:`dsg.zfs.ops.Zfs`."""

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
