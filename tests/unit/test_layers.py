"""The package's layout is its architecture: each layer imports only from layers below it (or
from its own), and no module imports another that imports it back, not even inside a function.
docs/architecture.md draws the same layers."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "engine" / "dsg"

# Bottom to top. `dsg` itself (the version) may be imported by anyone; entry.py is the top.
LAYERS = [
    "core",
    "fs",
    "zfs",
    "wire",
    "workcopy",
    "backends",
    "server",
    "sync",
    "admin",
    "cli",
    "entry",
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """Every dsg module `path` imports, at module level or inside a function, with its line."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "dsg" or a.name.startswith("dsg."):
                    yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not (mod == "dsg" or mod.startswith("dsg.")):
                continue
            for a in node.names:  # `from dsg.x import y` may name the module dsg.x.y
                sub = f"{mod}.{a.name}"
                yield (sub if sub in known else mod), node.lineno


def layer_of(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:
        return -1  # the package root: its version, readable from any layer
    return LAYERS.index(parts[1])


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {
        name: {m for m, _ in imports_of(name, path, known) if m != name}
        for name, path in mods.items()
    }


def test_every_module_belongs_to_a_layer() -> None:
    strays = [n for n in modules() if n != "dsg" and n.split(".")[1] not in LAYERS]
    assert not strays, f"modules outside every layer (add them to one): {strays}"


def test_each_layer_imports_only_from_layers_below_it() -> None:
    mods = modules()
    known = set(mods)
    upward = [
        f"{name}:{line} imports {target} ({LAYERS[layer_of(name)]} -> {LAYERS[layer_of(target)]})"
        for name, path in mods.items()
        if name != "dsg"
        for target, line in imports_of(name, path, known)
        if layer_of(target) > layer_of(name)
    ]
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in `g`, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycles() -> None:
    g = graph()
    # a package's __init__ is imported by its modules' own imports; count only real edges
    cycle = find_cycle({n: {m for m in deps if not n.startswith(m + ".")} for n, deps in g.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    ("g", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"a2"}, "a2": set(), "x": {"y"}, "y": {"x"}}, ["x", "y", "x"]),
    ],
)
def test_the_cycle_finder_finds_cycles(g: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(g) == expected


def test_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The walk of imports sees function-level and relative imports (the ways an upward
    import would hide)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from ..cli import daily\n    import dsg.sync.ops\n")
    got = list(imports_of("dsg.core.m", f, {"dsg.cli.daily", "dsg.sync.ops"}))
    assert got == [("dsg.cli.daily", 2), ("dsg.sync.ops", 3)]
    assert all(layer_of(t) > layer_of("dsg.core.m") for t, _ in got)


def test_the_public_api_resolves_and_costs_nothing_until_used() -> None:
    import subprocess
    import sys

    import dsg

    for name in dsg.__all__:
        assert getattr(dsg, name) is not None, name
    code = "import sys, dsg; print(sorted(m for m in sys.modules if m.startswith('dsg.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr
    with pytest.raises(AttributeError):
        dsg.no_such_name  # noqa: B018
