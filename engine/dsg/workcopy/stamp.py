"""The clean stamp: `.dsg/clean.json` says the working copy was exactly its base.

Written after a scan found every tracked file as the base records it (same paths, sizes,
hashes), with the digests of that walk's blocks (scan.py): each block is a directory's
sorted (name, size, mtime_ns, ctime_ns, inode) rows. A later walk with the same digests
saw the same files with the same stat, so it is clean too: `dsg status` then needs neither
the hash cache nor the base manifest, only the repository's head. Anything else (another
base, other rules, a block that differs, a problem, a link) means a full scan.

The stamp is a hint, never trusted alone: it binds the base manifest's file (by its stat,
replaced on every write) and the rules, and a stamp that cannot be read is ignored. Files
changed within RACY_NS of the scan keep a stamp from being written at all (scan.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from dsg.core.manifest import Manifest
from dsg.fs.durable import atomic_write, read_state_file
from dsg.workcopy.rules import ScanRules

STAMP = "clean.json"
BASE = "base.manifest.gz"
FORMAT = "dsg-clean/1"
MAX_BYTES = 256 << 20  # 16 bytes (32 in hex) a directory: millions of directories


@dataclass(frozen=True)
class Stamp:
    rules: str  # rules_key()
    base_file: str  # file_key() of base.manifest.gz
    snapshot: str | None
    manifest_digest: str
    files: int
    blocks: tuple[bytes, ...]
    # the file watcher's token (watch.py) taken before the scan's walk: while the watcher
    # still gives it, nothing has changed in the tree since
    watch: str | None = None

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "rules": self.rules,
                "base_file": self.base_file,
                "snapshot": self.snapshot,
                "manifest_digest": self.manifest_digest,
                "files": self.files,
                "blocks": [b.hex() for b in self.blocks],
                "watch": self.watch,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Stamp | None:
        try:
            d = orjson.loads(data)
            if not isinstance(d, dict) or d.get("format") != FORMAT:
                return None
            blocks = tuple(bytes.fromhex(b) for b in d["blocks"])
            stamp = cls(
                d["rules"],
                d["base_file"],
                d["snapshot"],
                d["manifest_digest"],
                d["files"],
                blocks,
                d.get("watch"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        fields_ok = (
            isinstance(stamp.rules, str)
            and isinstance(stamp.base_file, str)
            and isinstance(stamp.snapshot, str | None)
            and isinstance(stamp.manifest_digest, str)
            and isinstance(stamp.files, int)
            and stamp.files >= 0
            and all(len(b) == 16 for b in blocks)
            and (stamp.watch is None or (isinstance(stamp.watch, str) and len(stamp.watch) < 256))
        )
        return stamp if fields_ok else None


def rules_key(rules: ScanRules) -> str:
    return hashlib.blake2b(rules.to_json(), digest_size=16).hexdigest()


def file_key(path: Path) -> str | None:
    """The identity of a file written by atomic rename: a new write is a new inode."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def read(state_dir: Path) -> tuple[Stamp, str] | None:
    """The stamp and its signature (a hash of its bytes, for a prescan to name it)."""
    data = read_state_file(state_dir / STAMP, MAX_BYTES)
    stamp = None if data is None else Stamp.from_bytes(data)
    return None if stamp is None else (stamp, hashlib.blake2b(data, digest_size=16).hexdigest())


def load(state_dir: Path, rules: ScanRules) -> tuple[Stamp, str] | None:
    """The stamp, if it was written for these rules and the base manifest now in place."""
    found = read(state_dir)
    if found is None:
        return None
    stamp = found[0]
    if stamp.rules != rules_key(rules) or stamp.base_file != file_key(state_dir / BASE):
        return None
    return found


def write(state_dir: Path, stamp: Stamp) -> bool:
    """Best effort: a stamp only saves time, so failing to write one fails nothing."""
    try:
        atomic_write(state_dir / STAMP, stamp.to_bytes())
    except OSError:
        return False
    return True


def remove(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        (state_dir / STAMP).unlink()


def same_content(local: Manifest, base: Manifest) -> bool:
    """Every tracked file as the base has it: the same paths, sizes, hashes and targets."""
    if len(local) != len(base):
        return False
    return all(
        a.path == b.path and a.size == b.size and a.hash == b.hash and a.target == b.target
        for a, b in zip(local, base, strict=True)
    )
