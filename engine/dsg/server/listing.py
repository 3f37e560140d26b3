"""`dsg list-repos`: the repositories a user can see on a host, from its access file."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from dsg.backends.registry import open_local
from dsg.core.errors import DsgError
from dsg.server.access import AccessFile


def list_projects(access: AccessFile, login: str) -> list[dict[str, Any]]:
    """Every project where `login` has a role: head, last sync, size and files."""
    out: list[dict[str, Any]] = []
    for name, project in sorted(access.projects.items()):
        role = project.users.get(login)
        if role is None:
            continue
        row: dict[str, Any] = {
            "name": name,
            "role": role,
            "type": project.type,
            "location": project.mountpoint,
        }
        repo = None
        try:
            repo = open_local(project.type, Path(project.mountpoint), name, project.pool)
            head = repo.head() if repo.exists() else None
            row["head"] = head
            if head:
                rec = repo.record(head)
                row.update(
                    last_sync=rec.imported_at or rec.created_at,
                    last_author=rec.author,
                    bytes=rec.total_bytes,
                    files=rec.entry_count,
                )
        except DsgError as e:
            row["error"] = e.message
        finally:
            if repo is not None:
                with contextlib.suppress(Exception):
                    repo.close()
        out.append(row)
    return out
