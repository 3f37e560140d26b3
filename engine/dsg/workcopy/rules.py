"""What a scan records: the data directories and the ignore rules, with their defaults."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from dsg.core.errors import ConfigError

SHAPE_FORMAT = "dsg-shape/1"
MAX_SHAPE_BYTES = 64 << 10
MAX_RULES = 1024
# Directories whose `tracks` answer is kept, then it starts over: a path (and so a key) may
# be 4 KiB, and the agent asks for paths a client sends, so this bounds it to ~16 MB.
_DIRS_KEPT = 1 << 12


class ShapeError(ConfigError):
    kind = "shape"


CONFLICT_COPY = re.compile(r"\.dsg-conflict-\d{8}T\d{6}Z-")


class IgnoreSource(Protocol):
    names: Sequence[str]
    suffixes: Sequence[str]
    paths: Sequence[str]


class RulesSource(Protocol):
    """What ScanRules.of reads (a ProjectConfig): kept structural so the rules need no config."""

    data_dirs: Sequence[str]
    ignore: IgnoreSource


DEFAULT_DATA_DIRS = ("input", "output", "frozen")
DEFAULT_IGNORE_NAMES = (".DS_Store", "__pycache__", ".Rproj.user", "Thumbs.db")
DEFAULT_IGNORE_SUFFIXES = (".tmp", ".pyc")


@dataclass(frozen=True)
class ScanRules:
    """What a scan records: the data directories (`*`: all) and the ignore rules."""

    data_dirs: frozenset[str] = frozenset(DEFAULT_DATA_DIRS)
    names: frozenset[str] = frozenset(DEFAULT_IGNORE_NAMES)
    suffixes: tuple[str, ...] = DEFAULT_IGNORE_SUFFIXES
    paths: frozenset[str] = frozenset()
    # `tracks`'s answers per directory (not part of the rules: no effect on ==, hash, repr)
    _dirs: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, config: RulesSource) -> ScanRules:
        return cls(
            frozenset(config.data_dirs),
            frozenset(config.ignore.names),
            tuple(config.ignore.suffixes),
            frozenset(config.ignore.paths),
        )

    @property
    def all_dirs(self) -> bool:
        return "*" in self.data_dirs

    def ignored(self, name: str, rel: str) -> bool:
        if name in self.names or rel in self.paths:
            return True
        if self.suffixes and name.endswith(self.suffixes):
            return True
        return ".dsg-conflict-" in name and bool(CONFLICT_COPY.search(name))

    def tracks(self, path: str) -> bool:
        """Whether a scan under these rules would record `path`: inside a data directory (a
        directory component named in `data_dirs`, or any with `*`), no hidden or ignored
        component. A path from a peer outside this is never applied here."""
        head, _, name = path.rpartition("/")
        if name.startswith(".") or self.ignored(name, path):
            return False
        if not head:
            return self.all_dirs
        # Asked for every path of a manifest: a directory's answer serves all its files.
        known = self._dirs.get(head)
        if known is None:
            if len(self._dirs) >= _DIRS_KEPT:
                self._dirs.clear()
            known = self._dirs[head] = self._tracks_dir(head)
        return known

    def _tracks_dir(self, head: str) -> bool:
        """`tracks` for the directory part of a path: no hidden or ignored component, and
        one of them a data directory (or any, with `*`)."""
        in_data = self.all_dirs
        rel = ""
        for name in head.split("/"):
            if name.startswith("."):
                return False
            rel = f"{rel}/{name}" if rel else name
            if self.ignored(name, rel):
                return False
            if name in self.data_dirs:
                in_data = True
        return in_data

    def describe(self) -> str:
        return ", ".join(sorted(self.data_dirs))

    # --- the repository's record of the project's shape (shape.json, dsg:shape)
    def to_json(self) -> bytes:
        doc = {
            "format": SHAPE_FORMAT,
            "data_dirs": sorted(self.data_dirs),
            "ignore": {
                "names": sorted(self.names),
                "suffixes": list(self.suffixes),
                "paths": sorted(self.paths),
            },
        }
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, data: bytes, *, origin: str = "project shape") -> ScanRules:
        """Rules from their stored form, every field checked and bounded."""
        if len(data) > MAX_SHAPE_BYTES:
            raise ShapeError(f"{origin} is larger than {MAX_SHAPE_BYTES} bytes")
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ShapeError(f"{origin} is not JSON") from e
        if not isinstance(doc, dict) or doc.get("format") != SHAPE_FORMAT:
            raise ShapeError(f"{origin} is not a {SHAPE_FORMAT} document")
        ignore = doc.get("ignore")
        if not isinstance(ignore, dict):
            raise ShapeError(f"{origin}: 'ignore' must be a mapping")

        def strings(value: object, what: str) -> list[str]:
            if not isinstance(value, list) or len(value) > MAX_RULES:
                raise ShapeError(f"{origin}: {what} must be a list of at most {MAX_RULES}")
            for s in value:
                if not isinstance(s, str) or not s or len(s.encode()) > 4096 or "\x00" in s:
                    raise ShapeError(f"{origin}: invalid entry in {what}")
            return value

        dirs = strings(doc.get("data_dirs"), "data_dirs")
        if not dirs:
            raise ShapeError(f"{origin}: data_dirs is empty")
        for d in dirs:
            if d != "*" and ("/" in d or d.startswith(".") or len(d.encode()) > 255):
                raise ShapeError(f"{origin}: data dir {d!r} is not a plain directory name")
        return cls(
            frozenset(dirs),
            frozenset(strings(ignore.get("names", []), "ignore.names")),
            tuple(strings(ignore.get("suffixes", []), "ignore.suffixes")),
            frozenset(strings(ignore.get("paths", []), "ignore.paths")),
        )


def tracked_by(*rules: ScanRules | None) -> Callable[[str], bool]:
    """A path predicate: tracked by every one of `rules` (None: no rule of that side)."""
    present = [r for r in rules if r is not None]
    return lambda path: all(r.tracks(path) for r in present)
