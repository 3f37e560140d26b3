"""Import the roles' own Python (modules and filter plugins) as plain modules for unit tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"


def load(relpath: str) -> ModuleType:
    """Load roles/<relpath> (a module or filter plugin file) under a unique module name."""
    path = ROLES / relpath
    name = "dsg_role_" + relpath.replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
