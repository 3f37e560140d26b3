"""The working copy's own state, kept in `<project>/.dsg/`.

    base.manifest.gz   the manifest of the snapshot this copy last synced to (C)
    base.json          that snapshot's record (its chain hash proves the history)
    base.cache         the base's entries as columns, sealed by this user (basecache.py)
    hashcache.bin      path -> (size, mtime_ns, ctime_ns, inode, hash) (hashcache.py)
    clean.json         the clean stamp: the last scan that found the copy exactly its base
    resolutions.json   conflict choices recorded by `dsg resolve`
    conflicts.txt      the conflicts of the last blocked sync, editable for --continue
    lock               flock(2): one dsg command at a time per working copy
    log/dsg.jsonl      structured log

The base manifest is replaced atomically and only after every local change of a sync is
done, so an interrupted sync is simply re-planned from the same base next time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

from dsg.core.changes import Change
from dsg.core.compression import FAST
from dsg.core.errors import ManifestError, WorkingCopyError
from dsg.core.manifest import Manifest, SnapshotRecord
from dsg.core.paths import show
from dsg.core.plan import CHOICES, Item, Resolution, fingerprint
from dsg.core.stored import StoredManifest
from dsg.fs.durable import atomic_write, read_manifest, read_state_file, write_manifest
from dsg.workcopy import basecache, prescan, watch
from dsg.workcopy import stamp as stamp_mod
from dsg.workcopy.config import PROJECT_CONFIG, ProjectConfig, load_project_config
from dsg.workcopy.hashcache import HashCache
from dsg.workcopy.rules import ScanRules
from dsg.workcopy.scan import ScanResult, scan, walk

STATE_DIR = prescan.STATE_DIR
MAX_BASE_BYTES = 1 << 32  # a compressed manifest of tens of millions of entries


class Workspace:
    def __init__(self, root: Path, config: ProjectConfig | None = None) -> None:
        self.root = Path(root).absolute()
        self.dir = self.root / STATE_DIR
        self._config = config
        self._cache: HashCache | None = None
        self._watch_token: str | None = None  # the watcher's, taken before the last walk

    @property
    def config(self) -> ProjectConfig:
        if self._config is None:
            self._config = load_project_config(self.root / PROJECT_CONFIG)
        return self._config

    def ensure_dir(self) -> None:
        for d in (self.dir, self.dir / "log"):
            with contextlib.suppress(FileExistsError):
                d.mkdir()
            if not prescan.is_real_dir(d):  # a link (from git, say) would take our writes away
                raise WorkingCopyError(
                    f"{d} is not a directory (a symlink or a file): dsg keeps its state only "
                    "in a real directory of the working copy",
                    hint=f"remove it ('rm {d}'; it is not dsg's) and run the command again",
                )

    # --- lock -----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.ensure_dir()
        fd = prescan.adopt_lock(self.dir)  # taken before a prescan, if there was one
        if fd is None:
            fd = self._take_lock()
        try:
            yield
        finally:
            os.close(fd)

    def _take_lock(self) -> int:
        fd = prescan.try_lock(self.dir)
        if fd is None:
            raise WorkingCopyError(
                f"another dsg command is running in {self.root}", hint="wait for it to finish"
            )
        return fd

    # --- base ------------------------------------------------------------------------
    @property
    def has_base(self) -> bool:
        return (self.dir / "base.manifest.gz").is_file()

    def base(self) -> Manifest:
        if not self.has_base:
            raise WorkingCopyError(
                f"{self.root} is not a dsg working copy yet",
                hint="run 'dsg clone' to fetch the repository (or 'dsg init' to create one)",
            )
        base_file = self.dir / "base.manifest.gz"
        key = basecache.user_key()
        if key is not None:
            cached = basecache.load(self.dir, base_file, key)
            if cached is not None:
                return cached
        try:
            m = read_manifest(base_file)
            if key is not None and prescan.is_real_dir(self.dir):
                basecache.write(self.dir, base_file, m, key, checked=True)
            return m
        except ManifestError as e:
            raise WorkingCopyError(
                f"the working copy's base manifest is damaged: {e.message}",
                hint="move .dsg/ aside and run 'dsg clone' again; your data files are untouched",
            ) from e

    def spliced_base(
        self, base: Manifest, changes: list[Change], snap: int, user: str, digest: str
    ) -> StoredManifest | None:
        """The manifest of snapshot `snap`, a commit of `changes` onto `base` (this copy's
        base) attributed to `user`, as the repository made it: the base file's lines with
        the changed ones spliced in (core/stored.py), so the new base costs the change
        rather than the project. None unless it is exactly the one of `digest`: then the
        caller builds it whole."""
        data = read_state_file(self.dir / "base.manifest.gz", MAX_BASE_BYTES)
        if data is None:
            return None
        try:
            stored = StoredManifest.from_bytes(data, origin=".dsg/base.manifest.gz")
            if stored.digest != base.digest():
                return None
            edited, _ = stored.edit(changes, snap, user)
        except ManifestError:
            return None
        return edited if edited.digest == digest else None

    def base_record(self) -> SnapshotRecord | None:
        try:
            data = (self.dir / "base.json").read_bytes()
        except FileNotFoundError:
            return None
        try:
            return SnapshotRecord.from_bytes(data, origin=".dsg/base.json")
        except ManifestError:
            return None

    def set_base(
        self,
        manifest: Manifest,
        record: SnapshotRecord | None,
        *,
        cache: bool = True,
        data: bytes | None = None,
        checked: bool = False,
    ) -> None:
        """Record `manifest` as the new base (and keep its cache unless not `cache`: an
        initial upload or download, which a first status with changes then pays for).
        `data`: its file's bytes, when they are at hand (`spliced_base`); `checked`: its
        `suspect` is known to be what loading them sets aside (basecache.write)."""
        self.ensure_dir()
        stamp_mod.remove(self.dir)  # it names the old base
        base_file = self.dir / "base.manifest.gz"
        if data is not None:
            atomic_write(base_file, data)
        else:
            write_manifest(base_file, manifest, FAST)
        key = basecache.user_key() if cache else None
        if key is not None:  # the next command with changes loads it without a parse
            basecache.write(self.dir, base_file, manifest, key, checked=checked)
        if record is not None:
            atomic_write(self.dir / "base.json", record.to_bytes())

    # --- scanning ----------------------------------------------------------------------
    def hash_cache(self) -> HashCache:
        if self._cache is None:
            self._cache = HashCache.load(self.dir / HashCache.FILE)
        return self._cache

    def rules(self) -> ScanRules:
        return ScanRules.of(self.config)

    def clean_stamp(self) -> tuple[stamp_mod.Stamp, str] | None:
        """The clean stamp and its signature, if it names this copy's base and rules."""
        found = stamp_mod.load(self.dir, self.rules())
        if found is None:
            return None
        rec = self.base_record()
        stamp = found[0]
        if rec is None or (rec.id, rec.manifest_digest) != (stamp.snapshot, stamp.manifest_digest):
            return None
        return found

    def scan(
        self,
        progress: Callable[[int], None] | None = None,
        *,
        quick: bool = False,
        on_dirty: Callable[[], None] | None = None,
    ) -> ScanResult:
        """The working copy now; `progress(n)` is called every 1,000 files (it may raise
        to stop the scan). With `quick`, a tree exactly as the clean stamp recorded it gives
        a result with `clean` set and no manifest; `on_dirty` runs before a full scan's work
        (or, with a prescan, as soon as the tree is known not to be clean)."""
        rules = self.rules()
        found = self.clean_stamp() if quick else None
        # Taken before any walk: a change after this moment changes the token.
        self._watch_token = watch.token(self.dir)
        if found is not None and found[0].watch is not None and found[0].watch == self._watch_token:
            prescan.discard_scan()  # the watcher saw nothing change since the stamp's scan
            return ScanResult(Manifest.empty(), clean=True)
        child_token = prescan.watch_token()  # the child walked after it, not after ours

        def dirty() -> None:
            if on_dirty is not None:
                on_dirty()
            _ = self.hash_cache().data  # read while the child still walks

        early = prescan.take(
            self.root, rules, clean_sig=found[1] if found else None, on_dirty=dirty
        )
        if isinstance(early, ScanResult):  # the tree as the clean stamp recorded it
            self._watch_token = child_token
            self._restamp(found, child_token)
            return early
        if early is not None:  # the child's walk, taken while the command loaded
            self._watch_token = child_token
            result = scan(self.root, rules, self.hash_cache(), progress, walked=early)
            result.prescanned = True
            self._save_hash_cache()
            return result
        expect = found[0].blocks if found is not None else None
        if expect is None and on_dirty is not None:
            on_dirty()
        walked = walk(self.root, rules, expect, on_mismatch=on_dirty)
        if walked.is_clean(expect):
            self._restamp(found, self._watch_token)
            return ScanResult(Manifest.empty(), clean=True)
        result = scan(self.root, rules, self.hash_cache(), progress, walked=walked)
        self._save_hash_cache()
        return result

    def _save_hash_cache(self) -> None:
        """Save the cache a scan updated, and let go of it: what comes after a scan rarely
        needs it (a download or a deletion reads it again), and it is a row per file."""
        if self.dir.is_dir():
            self.hash_cache().save()
        if not self.hash_cache().dirty:
            self._cache = None

    def _restamp(self, found: tuple[stamp_mod.Stamp, str] | None, tok: str | None) -> None:
        """A walk after `tok` was taken found the tree as the stamp has it: the stamp takes
        `tok` (a watcher started since), so the next status need not walk."""
        if found is not None and tok is not None and found[0].watch != tok:
            stamp_mod.write(self.dir, dataclasses.replace(found[0], watch=tok))

    def note_scan(self, result: ScanResult, base: Manifest) -> bool:
        """Write the clean stamp if `result` (a full scan, taken under this copy's current
        base `base`) found every tracked file as the base has it. True if written."""
        if result.clean or result.digests is None or not prescan.is_real_dir(self.dir):
            return False
        rec = self.base_record()
        if rec is None or rec.id != base.snapshot:
            return False
        # Only a base that is exactly the repository's snapshot: one that kept other entries
        # for paths this copy leaves alone (ops.base_after) must be planned against in full.
        if base.digest() != rec.manifest_digest:
            return False
        if not stamp_mod.same_content(result.manifest, base):
            return False
        base_file = stamp_mod.file_key(self.dir / stamp_mod.BASE)
        if base_file is None:
            return False
        stamp = stamp_mod.Stamp(
            stamp_mod.rules_key(self.rules()),
            base_file,
            rec.id,
            rec.manifest_digest,
            len(base),
            tuple(result.digests),
            self._watch_token,
        )
        return stamp_mod.write(self.dir, stamp)

    # --- resolutions ---------------------------------------------------------------------
    def resolutions(self) -> dict[str, Resolution]:
        try:
            raw = orjson.loads((self.dir / "resolutions.json").read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as e:
            raise WorkingCopyError(
                ".dsg/resolutions.json is damaged; delete it and resolve again"
            ) from e
        out = {}
        for d in raw:
            if d.get("choice") not in CHOICES:
                continue
            r = Resolution(**d)
            out[r.path] = r
        return out

    def save_resolutions(self, res: dict[str, Resolution]) -> None:
        self.ensure_dir()
        path = self.dir / "resolutions.json"
        if not res:
            path.unlink(missing_ok=True)
            return
        data = [r.to_dict() for r in sorted(res.values(), key=lambda r: r.path)]
        atomic_write(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))

    def record_resolution(self, item: Item, choice: str) -> Resolution:
        if choice not in CHOICES:
            raise WorkingCopyError(f"unknown choice {choice!r}; use local, remote or base")
        res = Resolution(
            item.path,
            choice,  # type: ignore[arg-type]
            fingerprint(item.local),
            fingerprint(item.base),
            fingerprint(item.remote),
        )
        all_res = self.resolutions()
        all_res[item.path] = res
        self.save_resolutions(all_res)
        return res

    # --- conflicts file ---------------------------------------------------------------------
    @property
    def conflicts_path(self) -> Path:
        return self.dir / "conflicts.txt"

    def write_conflicts(self, items: list[Item], user: str) -> Path:
        self.ensure_dir()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        lines = [
            "# dsg conflicts -- edit and run 'dsg sync --continue'",
            f"# written {now} for {user}",
            "#",
            "# Each conflict has a 'use:' line. Replace '?' with one of:",
            "#   local   keep your version (it is uploaded; a deletion is propagated)",
            "#   remote  take the repository's version (yours is kept as a conflict copy)",
            "#   base    go back to the version you last synced (yours is kept as a copy)",
            "# Lines starting with '#' are ignored. Conflicts left at '?' stay unresolved.",
            "",
        ]
        for it in items:
            lines.append(f"path: {orjson.dumps(it.path).decode()}")
            lines.append(f"# {it.state.value}: {describe_sides(it)}")
            lines.append("use: ?")
            lines.append("")
        atomic_write(self.conflicts_path, "\n".join(lines).encode())
        return self.conflicts_path

    def read_conflicts_file(self) -> dict[str, str]:
        """Parse conflicts.txt into {path: choice}. Errors name the line."""
        try:
            text = self.conflicts_path.read_text(encoding="utf-8")
        except FileNotFoundError as e:
            raise WorkingCopyError(
                "no conflicts file to continue from (.dsg/conflicts.txt)",
                hint="run 'dsg sync' first; it writes the file when conflicts block it",
            ) from e
        choices: dict[str, str] = {}
        current: str | None = None
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition(":")
            value = value.strip()
            if not sep:
                raise WorkingCopyError(f"conflicts.txt line {n}: expected 'path:' or 'use:'")
            if key == "path":
                try:
                    current = orjson.loads(value)
                except orjson.JSONDecodeError as e:
                    raise WorkingCopyError(f"conflicts.txt line {n}: path must be quoted") from e
            elif key == "use":
                if current is None:
                    raise WorkingCopyError(f"conflicts.txt line {n}: 'use:' before any 'path:'")
                if value == "?":
                    continue
                if value not in CHOICES:
                    raise WorkingCopyError(
                        f"conflicts.txt line {n}: {value!r} is not local, remote or base"
                    )
                choices[current] = value
            else:
                raise WorkingCopyError(f"conflicts.txt line {n}: unknown key {key!r}")
        return choices


def describe_sides(it: Item) -> str:
    def side(name: str, e: object) -> str:
        if e is None:
            return f"{name}: absent"
        from dsg.core.manifest import Entry

        assert isinstance(e, Entry)
        if e.is_link:
            return f"{name}: link -> {show(e.target or '')}"
        who = f" (s{e.snap} {e.user})" if e.snap else ""
        return f"{name}: {e.size} bytes{who}"

    return "; ".join((side("local", it.local), side("base", it.base), side("remote", it.remote)))
