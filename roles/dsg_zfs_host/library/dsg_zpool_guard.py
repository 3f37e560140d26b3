#!/usr/bin/python
# Copyright (c) HRDAG. GPL-3.0-or-later.
"""Guard an existing ZFS pool: verify its vdev layout, reconcile pool properties.

This module never creates, adds to, removes from or destroys a pool.  Creation
is left to community.general.zpool, but that module must not be pointed at an
existing pool: it `zpool remove`s disks it does not find in the inventory and
mis-reads /dev/disk/by-id paths (community.general#10744, #10771, #12744).  So
for pools that exist, dsg compares the real layout with the declared one and
refuses to go on when they differ: growing or reshaping a pool is a human job.

It reads layout from `zpool status -P` (OpenZFS) or `zpool status` (zfs-fuse,
which has no -P and already prints full paths) and properties from
`zpool list -H -o`, which both implementations support.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dsg_zpool_guard
short_description: Verify the vdev layout of an existing ZFS pool and set its pool properties
description:
  - Compares the pool's real vdev layout with I(vdevs) after resolving symlinks and
    stripping partition suffixes, and fails (or warns) on any difference.
  - Sets the pool properties in I(properties) that differ (C(zpool set)); supports check
    mode and diff mode.
  - Never creates, grows, shrinks or destroys a pool.
options:
  name:
    description: Pool name.
    type: str
    required: true
  vdevs:
    description: Declared layout, the same shape as community.general.zpool's I(vdevs).
    type: list
    elements: dict
    default: []
  properties:
    description: Pool properties to enforce (for example C(autotrim), C(autoexpand), C(failmode)).
    type: dict
    default: {}
  layout_mismatch:
    description: C(fail) refuses to continue when the layout differs; C(warn) only warns.
    type: str
    choices: [fail, warn]
    default: fail
author: dsg maintainers
"""

EXAMPLES = r"""
- name: Verify tank's layout and properties
  dsg_zpool_guard:
    name: tank
    vdevs:
      - type: raidz2
        disks: [/dev/disk/by-id/ata-A, /dev/disk/by-id/ata-B,
                /dev/disk/by-id/ata-C, /dev/disk/by-id/ata-D]
    properties:
      autotrim: "on"
"""

RETURN = r"""
exists:
  description: Whether the pool is imported on this host.
  type: bool
  returned: always
layout:
  description: The pool's current layout, normalized.
  type: list
  returned: when the pool exists
layout_matches:
  description: Whether the current layout equals the declared one.
  type: bool
  returned: when the pool exists
health:
  description: The pool's health (ONLINE, DEGRADED, ...).
  type: str
  returned: when the pool exists
"""

import os
import re

GROUP_RE = re.compile(r"^(mirror|raidz[123]?|draid[123]?\S*)-\d+$")
SECTION_HEADERS = {
    "logs": "log",
    "cache": "cache",
    "spares": "spare",
    "special": "special",
    "dedup": "dedup",
}
TYPE_ALIAS = {"raidz": "raidz1"}


class LayoutError(ValueError):
    """The status output has something this parser does not understand."""


def _indent(line):
    expanded = line.expandtabs(8)
    return len(expanded) - len(expanded.lstrip(" "))


def parse_status_layout(text, pool):
    """Parse the config: section of `zpool status [-P] <pool>` into a vdev list.

    Returns [{"role": role-or-None, "type": "stripe"|"mirror"|"raidz1"..., "disks": [...]}],
    one entry per top-level vdev (a plain disk is a one-disk "stripe" vdev, which is how
    community.general.zpool describes it).
    """
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "config:")
    except StopIteration:
        raise LayoutError("no config: section in zpool status output") from None
    vdevs = []
    role = None
    base = None  # indentation of the pool line (and of section headers)
    current = None
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("errors:"):
            break
        words = stripped.split()
        name = words[0]
        if name == "NAME" and base is None:
            continue
        depth = _indent(line)
        if base is None:
            if name != pool:
                raise LayoutError(f"expected pool {pool!r} first in config, got {name!r}")
            base = depth
            continue
        if depth == base:
            if name not in SECTION_HEADERS:
                raise LayoutError(f"unknown section {name!r} in zpool status")
            role = SECTION_HEADERS[name]
            current = None
            continue
        level = depth - base
        m = GROUP_RE.match(name)
        if m and level <= 2:
            kind = TYPE_ALIAS.get(m.group(1), m.group(1))
            current = {"role": role, "type": kind, "disks": []}
            vdevs.append(current)
            continue
        if level <= 2:  # a top-level single-disk vdev
            current = None
            vdevs.append({"role": role, "type": "stripe", "disks": [name]})
            continue
        if current is None:
            raise LayoutError(f"device {name!r} nested under nothing")
        if GROUP_RE.match(name) or name.startswith(("replacing-", "spare-")):
            # a resilver or hot-spare swap in progress: not a layout we can compare
            raise LayoutError(f"pool {pool} is mid-operation ({name}); try again when done")
        current["disks"].append(name)
    if base is None:
        raise LayoutError(f"pool {pool!r} not found in zpool status output")
    return vdevs


_PART_RES = (
    re.compile(r"^(/dev/disk/by-\w+/.+)-part\d+$"),
    re.compile(r"^(/dev/(?:nvme\d+n\d+|mmcblk\d+|loop\d+))p\d+$"),
    re.compile(r"^(/dev/(?:sd|vd|xvd|hd)[a-z]+)\d+$"),
)


def strip_partition(path):
    for rx in _PART_RES:
        m = rx.match(path)
        if m:
            return m.group(1)
    return path


def normalize_disk(path, resolve=os.path.realpath):
    """A disk as ZFS names it -> a comparable key (resolved device, no partition suffix)."""
    if not path.startswith("/"):
        path = "/dev/" + path  # zpool status without -P prints bare device names
    resolved = resolve(strip_partition(path)) if path.startswith("/dev/") else resolve(path)
    return strip_partition(resolved)


def normalize_layout(vdevs, resolve=os.path.realpath):
    out = []
    for vdev in vdevs:
        kind = vdev.get("type") or "stripe"
        kind = TYPE_ALIAS.get(kind, kind)
        role = vdev.get("role")
        disks = [normalize_disk(str(d), resolve) for d in vdev.get("disks", [])]
        if kind == "stripe" and len(disks) > 1:
            # a declared multi-disk stripe is N single-disk top-level vdevs in ZFS
            out += [{"role": role, "type": "stripe", "disks": [d]} for d in disks]
        else:
            out.append({"role": role, "type": kind, "disks": sorted(disks)})
    return sorted(out, key=lambda v: (v["role"] or "", v["type"], v["disks"]))


def layout_diff(current, declared):
    """Return a human message describing the difference, or '' when equal."""
    if current == declared:
        return ""

    def fmt(v):
        role = f"{v['role']} " if v["role"] else ""
        return f"{role}{v['type']}[{', '.join(v['disks'])}]"

    missing = [fmt(v) for v in declared if v not in current]
    extra = [fmt(v) for v in current if v not in declared]
    parts = []
    if missing:
        parts.append("declared but not in the pool: " + "; ".join(missing))
    if extra:
        parts.append("in the pool but not declared: " + "; ".join(extra))
    return "; ".join(parts)


def prop_value(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def parse_list_props(line, names):
    values = line.rstrip("\n").split("\t")
    if len(values) != len(names):
        raise LayoutError(f"expected {len(names)} columns from zpool list, got {line!r}")
    return dict(zip(names, values, strict=True))


def main():  # pragma: no cover - exercised by the lab run
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            vdevs=dict(type="list", elements="dict", default=[]),
            properties=dict(type="dict", default={}),
            layout_mismatch=dict(type="str", default="fail", choices=["fail", "warn"]),
        ),
        supports_check_mode=True,
    )
    pool = module.params["name"]
    zpool = module.get_bin_path("zpool", required=True)
    result = dict(changed=False, name=pool, exists=False)

    rc, out, err = module.run_command([zpool, "list", "-H", "-o", "name,health", pool])
    if rc != 0:
        if module.check_mode:
            result["msg"] = f"pool {pool} is not imported (it would be created first)"
            module.exit_json(**result)
        module.fail_json(msg=f"pool {pool} is not imported on this host: {err.strip()}", **result)
    result["exists"] = True
    result["health"] = out.split("\t")[1].strip()

    rc, out, err = module.run_command([zpool, "status", "-P", pool])
    if rc != 0 and "invalid option" in (err + out):
        rc, out, err = module.run_command([zpool, "status", pool])  # zfs-fuse
    if rc != 0:
        module.fail_json(msg=f"zpool status {pool} failed: {err.strip()}", **result)
    try:
        current = normalize_layout(parse_status_layout(out, pool))
    except LayoutError as exc:
        module.fail_json(msg=str(exc), **result)
    result["layout"] = current
    if module.params["vdevs"]:
        declared = normalize_layout(module.params["vdevs"])
        message = layout_diff(current, declared)
        result["layout_matches"] = not message
        if message:
            text = (
                f"refusing to change the vdev layout of existing pool {pool}: {message}. "
                "Grow or reshape pools by hand (zpool add/attach/replace), then update "
                "the inventory to match."
            )
            if module.params["layout_mismatch"] == "fail":
                module.fail_json(msg=text, declared=declared, **result)
            module.warn(text)

    props = {k: prop_value(v) for k, v in module.params["properties"].items()}
    if props:
        names = sorted(props)
        rc, out, err = module.run_command([zpool, "list", "-H", "-o", ",".join(names), pool])
        if rc != 0:
            module.fail_json(msg=f"cannot read pool properties {names}: {err.strip()}", **result)
        have = parse_list_props(out.splitlines()[0], names)
        before = {k: have[k] for k in names if have[k] != props[k]}
        after = {k: props[k] for k in before}
        if before:
            result["changed"] = True
            result["diff"] = dict(
                before={"pool_properties": before},
                after={"pool_properties": after},
                before_header=pool,
                after_header=pool,
            )
            if not module.check_mode:
                for k in sorted(after):
                    module.run_command([zpool, "set", f"{k}={after[k]}", pool], check_rc=True)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
