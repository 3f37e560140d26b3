# Copyright (c) HRDAG. GPL-3.0-or-later.
"""Filters for dsg_datasets: the encrypted projects, checked and with their defaults filled.

`dsg_datasets_encryption_specs` turns the projects' `encryption` entries into one dict per
encrypted, present project: name, dataset, the ZFS properties to create it with (encryption,
keyformat, keylocation), the key file, and whether the inventory provides the key. The key
itself never appears in the result (so it never reaches task output or a loop label).
"""

from __future__ import annotations

import re

KEYFORMATS = ("raw", "hex", "passphrase")
ALGORITHMS = (
    "on",
    "aes-128-ccm",
    "aes-192-ccm",
    "aes-256-ccm",
    "aes-128-gcm",
    "aes-192-gcm",
    "aes-256-gcm",
)
_FILE_URL = re.compile(r"file:///[A-Za-z0-9_./@+-]+")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
ENCRYPTION_KEYS = {"keyformat", "keylocation", "key", "algorithm"}


class FilterError(ValueError):
    pass


def encryption_specs(projects, parent, key_dir, algorithm="aes-256-gcm", keyformat="raw"):
    specs = []
    for project in projects or []:
        enc = project.get("encryption")
        if enc is None or enc is False or project.get("state", "present") != "present":
            continue
        name = project["name"]
        if enc is True:
            enc = {}
        if not isinstance(enc, dict):
            raise FilterError(f"project {name}: encryption must be a mapping (or true)")
        unknown = set(enc) - ENCRYPTION_KEYS
        if unknown:
            raise FilterError(
                f"project {name}: unknown encryption settings {sorted(unknown)} "
                f"(known: {sorted(ENCRYPTION_KEYS)})"
            )
        fmt = str(enc.get("keyformat", keyformat))
        if fmt not in KEYFORMATS:
            raise FilterError(f"project {name}: keyformat must be one of {KEYFORMATS}, not {fmt!r}")
        algo = str(enc.get("algorithm", algorithm))
        if algo not in ALGORITHMS:
            raise FilterError(
                f"project {name}: encryption algorithm {algo!r} is not one of {ALGORITHMS}"
            )
        if algo == "on":
            algo = "aes-256-gcm"  # what `on` means in OpenZFS >= 0.8.4, and what zfs get reports
        location = str(enc.get("keylocation", f"file://{key_dir.rstrip('/')}/{name}.key"))
        if not _FILE_URL.fullmatch(location) or "/../" in location or location.endswith("/"):
            raise FilterError(
                f"project {name}: keylocation must be a file:///absolute/path URL, not {location!r}"
                " (prompt and https locations cannot be loaded unattended)"
            )
        has_key = enc.get("key") not in (None, "")
        if has_key:
            key = str(enc["key"])
            if fmt == "raw":
                raise FilterError(
                    f"project {name}: a provided key must be text: use keyformat hex "
                    "(64 hex digits) or passphrase, not raw"
                )
            if fmt == "hex" and not _HEX_KEY.fullmatch(key):
                raise FilterError(f"project {name}: a hex key is exactly 64 hex digits")
            if fmt == "passphrase" and not 8 <= len(key) <= 512:
                raise FilterError(f"project {name}: a passphrase is 8 to 512 characters")
        specs.append(
            {
                "name": name,
                "dataset": f"{parent}/{name}",
                "properties": {"encryption": algo, "keyformat": fmt, "keylocation": location},
                "key_file": location[len("file://") :],
                "has_key": has_key,
            }
        )
    return specs


def without_keys(projects):
    """The projects with any provided key replaced by "<hidden>" (for reports and checks)."""
    out = []
    for project in projects or []:
        enc = project.get("encryption")
        if isinstance(enc, dict) and "key" in enc:
            project = {**project, "encryption": {**enc, "key": "<hidden>"}}
        out.append(project)
    return out


class FilterModule:
    def filters(self):
        return {
            "dsg_datasets_encryption_specs": encryption_specs,
            "dsg_datasets_without_keys": without_keys,
        }
