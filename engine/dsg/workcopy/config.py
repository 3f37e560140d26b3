"""Configuration: the project's `.dsgconfig.yml` and the user's `dsg.yml`.

`.dsgconfig.yml` lives at the project root and is committed to git. It uses the
repository-centric format of the original dsg:

    name: my-project
    repository: {type: posix, host: localhost, mountpoint: /var/repos/dsg}
    data_dirs: [input, output, frozen]
    ignore: {names: [.DS_Store], suffixes: [.tmp], paths: [task1/input/secret.csv]}
    safety: {max_delete_count: 50, max_delete_share: 0.2}   # optional: the mass-delete guard

Older forms are read and converted (`dsg config upgrade` rewrites them): the legacy
`transport: ssh` + `ssh: {host, path, name, type}` (and a `project:` wrapper), and the oldest,
`.dsg/config.yml` with `repo_name`, `repo_path`, `host`, `repo_type`, `ignored_names`,
`ignored_suffixes`, `ignored_paths`. Where either names `type: zfs` without a pool (the
original found it on the host), the pool is that of the ZFS dataset mounted at the
repository's path on this machine, else an error says to add `pool:`. Unknown keys are errors
that name the field and its line.

`repository.remote_command` in the project file is ignored with a warning: the file is
written by every member, so a command there would run as each colleague on the server. The
agent command comes from the user's own `dsg.yml` or $DSG_REMOTE_COMMAND (`user_remote_command`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dsg.core.errors import ConfigError
from dsg.fs.yamlfile import explain, load_yaml
from dsg.wire.sshstart import LOCAL_HOSTS as LOCAL_HOSTS  # these live where the CLI starts early
from dsg.wire.sshstart import PROJECT_CONFIG as PROJECT_CONFIG
from dsg.wire.sshstart import USER_CONFIG as USER_CONFIG
from dsg.wire.sshstart import find_project_root as find_project_root
from dsg.wire.sshstart import is_local_host as is_local_host
from dsg.wire.sshstart import user_config_dirs as user_config_dirs
from dsg.wire.sshstart import user_remote_command as user_remote_command
from dsg.workcopy.rules import DEFAULT_DATA_DIRS, DEFAULT_IGNORE_NAMES, DEFAULT_IGNORE_SUFFIXES

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IgnoreRules(_Strict):
    names: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE_NAMES))
    suffixes: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE_SUFFIXES))
    paths: list[str] = Field(default_factory=list)

    @field_validator("paths")
    @classmethod
    def _strip_paths(cls, v: list[str]) -> list[str]:
        return [p.strip("/") for p in v if p.strip("/")]


class RepositoryConfig(_Strict):
    type: Literal["posix", "zfs"]
    host: str = "localhost"
    mountpoint: str
    pool: str | None = None
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    # Set only by code (tests, tools that build a config); load_project_config drops it from
    # the file, and to_yaml never writes it. Users set it in dsg.yml.
    remote_command: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") == "xfs":
            data = {**data, "type": "posix"}
        return data

    @field_validator("mountpoint")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("mountpoint must be an absolute path on the repository host")
        return v.rstrip("/") or "/"

    @model_validator(mode="after")
    def _zfs_needs_pool(self) -> RepositoryConfig:
        if self.type == "zfs" and not self.pool:
            raise ValueError("repository type zfs needs 'pool'")
        return self

    @property
    def transport(self) -> Literal["local", "ssh"]:
        return "local" if is_local_host(self.host) else "ssh"


class SafetyRules(_Strict):
    """When a sync stops and asks for `--allow-mass-delete`: it would delete more than
    `max_delete_count` files AND more than `max_delete_share` of them (of the repository's
    files when sending, of this copy's when receiving). Like rsync's --max-delete."""

    max_delete_count: int = Field(default=50, ge=0)
    max_delete_share: float = Field(default=0.2, ge=0.0, le=1.0)


class ProjectConfig(_Strict):
    name: str
    repository: RepositoryConfig
    data_dirs: list[str] = Field(default_factory=lambda: list(DEFAULT_DATA_DIRS))
    ignore: IgnoreRules = Field(default_factory=IgnoreRules)
    safety: SafetyRules = Field(default_factory=SafetyRules)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _SAFE_NAME.match(v):
            raise ValueError(
                "name must start with a letter or digit and use only letters, digits, '.', '_', '-'"
            )
        return v

    @field_validator("data_dirs")
    @classmethod
    def _dirs(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("data_dirs must list at least one directory name (or '*')")
        for d in v:
            if d != "*" and ("/" in d or d in (".", "..") or not d):
                raise ValueError(f"data_dirs entry {d!r} must be a single directory name or '*'")
        return v

    @property
    def repo_path(self) -> str:
        """The repository's directory on its host: `<mountpoint>/<name>`."""
        return f"{self.repository.mountpoint.rstrip('/')}/{self.name}"

    def to_yaml(self) -> str:
        data = self.model_dump(exclude_none=True)
        data["repository"].pop("remote_command", None)  # never in a project file
        if self.ignore == IgnoreRules():
            del data["ignore"]  # defaults apply; keep the file short
        if self.safety == SafetyRules():
            del data["safety"]
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


class UserConfig(_Strict):
    user_name: str
    user_id: str
    lock_timeout: float = Field(default=600.0, ge=0)
    backup_on_conflict: bool = True
    # The agent command on the repository host (one for every host, or host -> command);
    # read by user_remote_command, which the early SSH start uses before this model loads.
    remote_command: str | dict[str, str] | None = None

    @field_validator("user_id")
    @classmethod
    def _email(cls, v: str) -> str:
        if not _EMAIL.match(v):
            raise ValueError("user_id must be an email address, e.g. alice@hrdag.org")
        return v


OLDEST_CONFIG = ".dsg/config.yml"  # the first dsg's project file, inside .dsg/
OLDEST_KEYS = frozenset(
    {"repo_name", "repo_path", "repo_type", "ignored_names", "ignored_suffixes", "ignored_paths"}
)
ZFS_LIST_LIMIT = 1 << 20  # bytes of `zfs list` output read when looking for a pool


def find_pool(mountpoint: str, name: str) -> tuple[str, str] | None:
    """(pool, dataset) of the ZFS dataset mounted at `mountpoint/name` (the project's), else
    at `mountpoint` (its parent), on this machine; None when there is none or no zfs."""
    from dsg.zfs.ops import Zfs  # only for the old forms that lack a pool

    try:
        proc = Zfs.from_env().run(
            "zfs", ["list", "-H", "-o", "name,mountpoint"], check=False, timeout=20
        )
    except Exception:  # no zfs here (or it failed): the caller says to add `pool:`
        return None
    if proc.returncode != 0:
        return None
    mounted: dict[str, str] = {}
    for line in proc.stdout[:ZFS_LIST_LIMIT].splitlines():
        ds, _, mnt = line.partition("\t")
        if ds and mnt.startswith("/"):
            mounted.setdefault(mnt.rstrip("/") or "/", ds)
    base = mountpoint.rstrip("/") or "/"
    for where in (f"{base.rstrip('/')}/{name}", base):
        ds = mounted.get(where)
        if ds:
            return ds.split("/", 1)[0], ds
    return None


def _pool_for(repo: dict[str, Any], name: Any, form: str, notes: list[str] | None) -> None:
    """Fill in the pool of an old-form zfs repository from this machine's datasets."""
    if repo.get("type") == "xfs" and notes is not None:
        notes.append("type xfs -> posix (the same plain-directory repository)")
    if repo.get("type") != "zfs" or repo.get("pool"):
        return
    mnt = repo.get("mountpoint")
    found = find_pool(mnt, str(name or "")) if isinstance(mnt, str) else None
    if found is None:
        raise ConfigError(
            f"the {form} config names a zfs repository without its pool, and no ZFS dataset "
            f"on this machine is mounted at {mnt}/{name or '<name>'} or {mnt}",
            hint="add 'pool: <zfs pool>' to it, or convert it with "
            "'dsg config upgrade --pool POOL --write'",
        )
    repo["pool"] = found[0]
    if notes is not None:
        notes.append(
            f"pool {found[0]}: found on this machine (dataset {found[1]} is mounted there)"
        )


def _from_oldest(
    data: dict[str, Any], notes: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The first dsg's `.dsg/config.yml` (repo_name, repo_path, host, repo_type, ignored_*)."""
    if not (OLDEST_KEYS & data.keys()) or "repository" in data or "transport" in data:
        return data, {}
    data = dict(data)
    out: dict[str, Any] = {}
    key_map: dict[str, str] = {}
    if "repo_name" in data:
        out["name"] = data.pop("repo_name")
        key_map["name"] = "repo_name"
    repo: dict[str, Any] = {}
    for old, new in (("repo_type", "type"), ("host", "host"), ("repo_path", "mountpoint")):
        if old in data:
            repo[new] = data.pop(old)
            key_map[new] = old
    if "pool" in data:
        repo["pool"] = data.pop("pool")
    out["repository"] = repo
    ignore: dict[str, Any] = {}
    for old, new in (
        ("ignored_names", "names"),
        ("ignored_suffixes", "suffixes"),
        ("ignored_paths", "paths"),
    ):
        if old in data:
            ignore[new] = data.pop(old)
            key_map[new] = old
    if ignore:
        out["ignore"] = ignore
    dirs = data.pop("data_dirs", None)
    if isinstance(dirs, list):
        stripped = [d.strip("/") if isinstance(d, str) and d != "/" else d for d in dirs]
        if notes is not None and stripped != dirs:
            notes.append("data_dirs: trailing '/' removed (" + ", ".join(map(str, dirs)) + ")")
        out["data_dirs"] = stripped
    elif dirs is not None:
        out["data_dirs"] = dirs
    out.update(data)  # leftovers are reported as unknown keys
    if notes is not None:
        notes.append(
            "oldest form (.dsg/config.yml): repo_name -> name; repo_type, host, repo_path -> "
            "repository: {type, host, mountpoint}; ignored_names/suffixes/paths -> ignore: "
            "{names, suffixes, paths}"
        )
    _pool_for(repo, out.get("name"), "oldest (.dsg/config.yml)", notes)
    return out, key_map


def _from_legacy(
    data: dict[str, Any], notes: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Convert the original dsg's legacy forms; returns new data and a key map for errors.
    `notes` (when given) collects a line per conversion, for `dsg config upgrade`."""
    data = dict(data)
    key_map: dict[str, str] = {}
    project = data.pop("project", None)
    if isinstance(project, dict):
        for k in ("data_dirs", "ignore"):
            if k in project and k not in data:
                data[k] = project[k]
        if notes is not None:
            notes.append("project: wrapper flattened (its data_dirs and ignore moved up)")
    transport = data.pop("transport", None)
    if transport is None:
        return data, key_map
    if transport != "ssh":
        raise ConfigError(
            f"transport {transport!r} is not supported (rclone and ipfs were never implemented); "
            "use a 'repository:' section"
        )
    if "repository" in data:
        raise ConfigError("give either 'repository:' or the legacy 'transport:'/'ssh:', not both")
    ssh = data.pop("ssh", None)
    if not isinstance(ssh, dict):
        raise ConfigError("legacy 'transport: ssh' needs an 'ssh:' section (host, path, type)")
    ssh = dict(ssh)
    if "name" in ssh and "name" not in data:
        data["name"] = ssh.pop("name")
    else:
        ssh.pop("name", None)
    repo: dict[str, Any] = {}
    for old, new in (("host", "host"), ("path", "mountpoint"), ("type", "type"), ("pool", "pool")):
        if old in ssh:
            repo[new] = ssh.pop(old)
            key_map[new] = old
    if notes is not None:
        notes.append(
            "legacy form: transport: ssh and ssh: {host, path, type} -> repository: "
            "{type, host, mountpoint}"
        )
    _pool_for(repo, data.get("name"), "legacy 'transport: ssh'", notes)
    repo.update(ssh)  # leftovers are reported as unknown keys
    data["repository"] = repo
    return data, {"repository": "ssh", **key_map}


_warned: set[Path] = set()


def _drop_remote_command(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The project file without `repository.remote_command`, with a warning (once)."""
    repo = data.get("repository")
    if not isinstance(repo, dict) or "remote_command" not in repo:
        return data
    if path not in _warned:
        _warned.add(path)
        sys.stderr.write(
            f"dsg: warning: ignoring repository.remote_command in {path}: a project file is "
            "written by every member and may not choose a command to run; set remote_command "
            "in your own dsg.yml (or DSG_REMOTE_COMMAND) instead\n"
        )
    return {**data, "repository": {k: v for k, v in repo.items() if k != "remote_command"}}


def load_project_config(path: Path) -> ProjectConfig:
    data, text = load_yaml(path)
    return _validated(path, text, data, None)


def _validated(
    path: Path, text: str, data: dict[str, Any], notes: list[str] | None
) -> ProjectConfig:
    """Any form of project file data, converted and validated."""
    data, key_map = _from_oldest(data, notes)
    if not key_map:
        data, key_map = _from_legacy(data, notes)
    repo = data.get("repository")
    if notes is not None and isinstance(repo, dict) and "remote_command" in repo:
        notes.append("repository.remote_command dropped (a project file may not choose it)")
    data = _drop_remote_command(path, data)
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as e:
        raise explain(path, text, e, key_map) from e


def find_config_file(start: Path | None = None) -> Path:
    """The project file nearest `start` (default: cwd): `.dsgconfig.yml`, or the oldest
    form's `.dsg/config.yml` in a directory without one."""
    here = (start or Path.cwd()).absolute()
    for d in (here, *here.parents):
        if (d / PROJECT_CONFIG).is_file():
            return d / PROJECT_CONFIG
        if (d / OLDEST_CONFIG).is_file():
            return d / OLDEST_CONFIG
    raise ConfigError(
        f"no {PROJECT_CONFIG} (nor {OLDEST_CONFIG}) found in {here} or any parent directory",
        hint="run dsg inside a project, or create one with 'dsg init'",
    )


class ConfigUpgrade(_Strict):
    """What `dsg config upgrade` would write: the current form of a project file."""

    source: str  # the file read
    target: str  # the .dsgconfig.yml to write
    form: Literal["current", "legacy", "oldest"]
    changes: list[str]
    old_text: str
    new_text: str

    @property
    def needed(self) -> bool:
        return self.source != self.target or self.old_text != self.new_text


def plan_upgrade(path: Path, pool: str | None = None) -> ConfigUpgrade:
    """Read any form of project file at `path` and render it in the current form. `pool`
    fills in a zfs repository's pool that the file lacks (and this machine cannot find)."""
    notes: list[str] = []
    data, text = load_yaml(path)
    if pool:
        data = _with_pool(data, pool, notes)
    oldest = bool(OLDEST_KEYS & data.keys()) and not ({"repository", "transport"} & data.keys())
    legacy = not oldest and ("transport" in data or "project" in data)
    new_text = _validated(path, text, data, notes).to_yaml()
    in_meta = path.name == "config.yml" and path.parent.name == ".dsg"
    target = (path.parent.parent if in_meta else path.parent) / PROJECT_CONFIG
    if oldest:
        notes.append(f"goes to {target}; {path} is left as it is (dsg does not read it)")
    elif not legacy and text != new_text:
        notes.append("rewritten in the current layout (defaults left out, keys in order)")
    form: Literal["current", "legacy", "oldest"] = (
        "oldest" if oldest else "legacy" if legacy else "current"
    )
    return ConfigUpgrade(
        source=str(path),
        target=str(target),
        form=form,
        changes=notes,
        old_text=text,
        new_text=new_text,
    )


def _with_pool(data: dict[str, Any], pool: str, notes: list[str]) -> dict[str, Any]:
    """`data` with `pool` where its zfs repository section has none."""
    data = dict(data)
    for key in ("ssh", "repository"):
        sec = data.get(key)
        if isinstance(sec, dict) and sec.get("type") == "zfs" and not sec.get("pool"):
            data[key] = {**sec, "pool": pool}
            notes.append(f"pool {pool}: from --pool")
            return data
    if data.get("repo_type") == "zfs" and not data.get("pool"):
        notes.append(f"pool {pool}: from --pool")
        return {**data, "pool": pool}
    return data


def load_user_config() -> UserConfig:
    merged: dict[str, Any] = {}
    found: list[Path] = []
    for d in user_config_dirs():
        f = d / USER_CONFIG
        if not f.is_file():
            continue
        data, _text = load_yaml(f)
        if d == Path("/etc/dsg") and ({"user_name", "user_id"} & data.keys()):
            raise ConfigError(
                f"{f} must not hold personal fields (user_name, user_id); "
                "put them in ~/.config/dsg/dsg.yml"
            )
        merged.update(data)
        found.append(f)
    if not found:
        raise ConfigError(
            "no dsg.yml user config found",
            hint="create ~/.config/dsg/dsg.yml with 'user_name: Your Name' and "
            "'user_id: you@example.org' (or set DSG_CONFIG_HOME)",
        )
    try:
        return UserConfig.model_validate(merged)
    except ValidationError as e:
        raise explain(found[-1], found[-1].read_text(encoding="utf-8"), e, {}) from e
