"""dsg — HRDAG's data sync: atomic, numbered, immutable snapshots of research data.

The public Python API (what Fabric tasks, scripts and tests use) is `__all__`; each name is
imported on first use, so `dsg serve`, which imports this package, starts no slower.
Everything else is internal: docs/architecture.md shows the layers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.5.0"

_API = {
    "ops": ("dsg.sync.ops", None),
    "remote": ("dsg.admin.remote", None),
    "open_repository": ("dsg.backends.registry", "open_repository"),
    "Repository": ("dsg.backends.base", "Repository"),
    "ProjectConfig": ("dsg.workcopy.config", "ProjectConfig"),
    "RepositoryConfig": ("dsg.workcopy.config", "RepositoryConfig"),
    "UserConfig": ("dsg.workcopy.config", "UserConfig"),
    "load_project_config": ("dsg.workcopy.config", "load_project_config"),
    "load_user_config": ("dsg.workcopy.config", "load_user_config"),
    "Workspace": ("dsg.workcopy.workspace", "Workspace"),
    "ScanRules": ("dsg.workcopy.rules", "ScanRules"),
    "Manifest": ("dsg.core.manifest", "Manifest"),
    "Entry": ("dsg.core.manifest", "Entry"),
    "SnapshotRecord": ("dsg.core.manifest", "SnapshotRecord"),
    "DsgError": ("dsg.core.errors", "DsgError"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'dsg' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    return value if attr is None else getattr(value, attr)
