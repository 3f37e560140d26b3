"""Datasets, snapshots, rollback and clones."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dsg.zfs.command import ZfsCommand
from dsg.zfs.model import Snapshot
from dsg.zfs.names import (
    USER_NAMESPACE,
    DatasetNotFound,
    RollbackRefused,
    ZfsError,
    _check_any_name,
    _prop_args,
    check_dataset_name,
    check_snapshot_name,
    check_user_property,
    split_snapshot,
)


class DatasetOps(ZfsCommand):
    """Datasets, snapshots, rollback and clones.
    Mixed into :class:`dsg.zfs.ops.Zfs`."""

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
