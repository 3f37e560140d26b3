# The zfs-fuse lab fixtures live in tests/fixtures/zfs_lab.py. Until they are registered for
# the whole suite (pytest_plugins in tests/conftest.py), import them here for these tests.
# pytest refuses pytest_plugins in a non-top-level conftest, hence the import.
from tests.fixtures.zfs_lab import zfs_backup_target, zfs_dataset, zfs_lab  # noqa: F401
