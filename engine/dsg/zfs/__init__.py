"""Layer 3: the `zfs`/`zpool` commands, checked and typed (OpenZFS and zfs-fuse)."""
