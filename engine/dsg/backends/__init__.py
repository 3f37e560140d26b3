"""Layer 6: repository backends (posix, zfs, ssh) behind one interface (`base`), opened from
plain values by `registry`."""
