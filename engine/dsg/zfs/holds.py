"""User holds on snapshots (what keeps a backup's base from being destroyed)."""

from __future__ import annotations

from dsg.zfs.command import ZfsCommand
from dsg.zfs.names import ZfsUnsupported, _check_tag, check_snapshot_name


class HoldOps(ZfsCommand):
    """User holds on snapshots (what keeps a backup's base from being destroyed).
    Mixed into :class:`dsg.zfs.ops.Zfs`."""

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
