# The sshd_lab fixture lives in tests/fixtures/sshd_lab.py. Until it is registered for the
# whole suite (pytest_plugins in tests/conftest.py), import it here for these tests.
# pytest refuses pytest_plugins in a non-top-level conftest, hence the import.
from tests.fixtures.sshd_lab import sshd_lab  # noqa: F401
