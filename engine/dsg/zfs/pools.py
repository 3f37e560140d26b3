"""Pools: listing them and their health."""

from __future__ import annotations

from dsg.zfs.command import ZfsCommand
from dsg.zfs.model import PoolStatus
from dsg.zfs.names import check_dataset_name, parse_size


class PoolOps(ZfsCommand):
    """Pools: listing them and their health.
    Mixed into :class:`dsg.zfs.ops.Zfs`."""

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
