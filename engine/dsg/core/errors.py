"""Exceptions and the stable exit codes of the `dsg` command.

Exit codes (a contract: scripts and tests drive them):
  0 ok, 1 error, 2 usage, 3 sync blocked by conflicts (nothing changed),
  4 sync stopped by the mass-delete guard (nothing changed; --allow-mass-delete).
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICTS = 3
EXIT_MASS_DELETE = 4


class DsgError(Exception):
    """An error with a message meant for the user; `hint` says what to do about it."""

    exit_code = EXIT_ERROR
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None, details: object = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        if self.details is not None:
            out["details"] = self.details
        return out


class LocalIOError(DsgError):
    """The local filesystem refused a read or write (full disk, quota, permissions)."""

    kind = "local_io"

    @classmethod
    def from_oserror(
        cls, e: OSError, *, needed: int | None = None, files: int | None = None
    ) -> LocalIOError:
        """`needed`: the bytes (of `files` files) the command still had to write when the
        disk filled up, for the message to say how much space to free."""
        where = f" ({e.filename})" if e.filename else ""
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        if full:
            hint = "free some space there (or ask for more quota), then run the command again"
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "check who may write there, then run the command again"
        else:
            hint = "fix the cause, then run the command again"
        more = ""
        if full and needed:
            of = f" for the {files} file(s) still to download" if files else ""
            more = f"; about {_bytes(needed)} more are needed{of}"
        return cls(
            f"{e.strerror or e}{where}{more}",
            hint=hint + "; nothing recorded is lost, and the next run picks up from here",
            details={"needed_bytes": needed, "path": e.filename} if full and needed else None,
        )


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class ConfigError(DsgError):
    kind = "config"


class UsageError(DsgError):
    exit_code = EXIT_USAGE
    kind = "usage"


class ManifestError(DsgError):
    """A manifest could not be read or failed validation. Never treated as empty."""

    kind = "manifest"


class PathError(DsgError):
    """A path that dsg refuses to store or accept (hostile, non-NFC, escaping, ...)."""

    kind = "path"


class ScanBlocked(DsgError):
    """The working copy holds names dsg will not sync until they are fixed."""

    kind = "scan_blocked"


class RepositoryError(DsgError):
    kind = "repository"


class RepositoryNotFound(RepositoryError):
    kind = "repository_not_found"


class RepositoryExists(RepositoryError):
    kind = "repository_exists"


class IntegrityError(RepositoryError):
    """Content or history does not match what was recorded."""

    kind = "integrity"


class LockTimeout(RepositoryError):
    kind = "lock_timeout"


class HeadMoved(RepositoryError):
    """Compare-and-swap failed: the repository head is not the base the plan was made on."""

    kind = "head_moved"


class ConflictsBlocked(DsgError):
    exit_code = EXIT_CONFLICTS
    kind = "conflicts"


class MassDelete(DsgError):
    """A sync (or revert) would delete more files than the project's safety limits allow."""

    exit_code = EXIT_MASS_DELETE
    kind = "mass_delete"


class UnknownRef(DsgError):
    """A snapshot reference (sN, a tag, head, head~N) that names no snapshot."""

    kind = "unknown_ref"


class WorkingCopyError(DsgError):
    kind = "working_copy"


class TransportError(DsgError):
    kind = "transport"


class PermissionDenied(DsgError):
    kind = "permission_denied"
