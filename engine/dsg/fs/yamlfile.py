"""Reading a YAML configuration file: clear errors with line numbers (the project's
.dsgconfig.yml, the user's dsg.yml, the server's access file and alert settings).

Imports no pydantic: the agent reads its access file through here at the start of every
session."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dsg.core.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import ValidationError


def _key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map each key path in a YAML mapping tree to its 1-based line number."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*prefix, k.value)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[(*prefix, i)] = v.start_mark.line + 1
                walk(v, (*prefix, i))

    if root is not None:
        walk(root, ())
    return lines


def load_yaml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data, text


Issue = tuple[tuple[Any, ...], str]  # where (a key path), what is wrong


def explain_issues(path: Path, text: str, issues: list[Issue]) -> ConfigError:
    """A ConfigError naming each problem's key path and, where found, its line."""
    lines = _key_lines(text)
    msgs = []
    for loc, msg in issues:
        field = ".".join(str(x) for x in loc) or "(top level)"
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        where = f" (line {line})" if line else ""
        msgs.append(f"{field}{where}: {msg}")
    return ConfigError(f"{path}: invalid configuration: " + "; ".join(msgs), details=msgs)


def explain(path: Path, text: str, err: ValidationError, key_map: dict[str, str]) -> ConfigError:
    """explain_issues for a pydantic ValidationError (`key_map` renames model fields back
    to the keys written in the file)."""
    issues: list[Issue] = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x in ("posix", "zfs")))
        loc = tuple(key_map.get(x, x) if isinstance(x, str) else x for x in loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        issues.append((loc, msg))
    return explain_issues(path, text, issues)
