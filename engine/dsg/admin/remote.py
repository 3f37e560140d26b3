"""Remote operations over Fabric: thin layers over the `dsg` command and the playbooks.

Researchers run status / sync / log / fetch in a working copy on a remote analysis host;
admins list repositories, run the health check, create projects and add users (the
Ansible playbooks, so there is one implementation of each). Every task takes one explicit
`RemoteConfig` (timeouts, keepalive, dry-run); writes run host by host, read-only tasks in
parallel; each host gets a `HostResult`, and `exit_code` is non-zero when any host failed.

Host keys are verified against known_hosts (paramiko RejectPolicy): Fabric's default of
accepting unknown keys is switched off. Commands are built from argv lists with every word
quoted (shlex.quote): no path or name is ever interpreted by the remote shell.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class RemoteConfig:
    connect_timeout: float = 15.0
    command_timeout: float = 3600.0
    keepalive: int = 15
    dry_run: bool = False
    parallel: int = 4
    ssh_config: str | None = None  # an ssh_config file for host aliases
    known_hosts: str = str(Path.home() / ".ssh" / "known_hosts")
    key_file: str | None = None
    dsg: str = "dsg"  # the dsg command on the remote host
    ansible_playbook: str | None = None  # default: <repo>/.venv-ansible/bin/ansible-playbook


@dataclass
class HostResult:
    host: str
    ok: bool
    data: Any = None
    error: str | None = None
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def exit_code(results: Sequence[HostResult]) -> int:
    return 0 if results and all(r.ok for r in results) else 1


def connect(host: str, cfg: RemoteConfig):
    import paramiko
    from fabric import Config, Connection

    config = Config(runtime_ssh_path=cfg.ssh_config) if cfg.ssh_config else Config()
    conn = Connection(
        host,
        config=config,
        connect_timeout=cfg.connect_timeout,
        connect_kwargs={
            "allow_agent": cfg.key_file is None,
            "look_for_keys": cfg.key_file is None,
            **({"key_filename": cfg.key_file} if cfg.key_file else {}),
        },
    )
    conn.client.load_host_keys(cfg.known_hosts)
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


def remote_command(workdir: str | None, argv: Sequence[str]) -> str:
    cmd = shlex.join(argv)
    return f"cd {shlex.quote(workdir)} && {cmd}" if workdir else cmd


def run_dsg(host: str, cfg: RemoteConfig, workdir: str | None, args: Sequence[str]) -> HostResult:
    """Run `dsg ARGS --json` on `host`; the JSON document is the result."""
    try:
        conn = connect(host, cfg)
        try:
            if cfg.keepalive:
                conn.open()
                conn.transport.set_keepalive(cfg.keepalive)  # type: ignore[union-attr]
            res = conn.run(
                remote_command(workdir, [*shlex.split(cfg.dsg), *args, "--json"]),
                hide=True,
                warn=True,
                timeout=cfg.command_timeout,
                in_stream=False,
            )
        finally:
            conn.close()
    except Exception as e:
        return HostResult(host, False, error=f"{type(e).__name__}: {e}", dry_run=cfg.dry_run)
    try:
        doc = json.loads(res.stdout)
    except json.JSONDecodeError:
        return HostResult(host, False, error=(res.stderr or res.stdout).strip()[-500:])
    ok = res.exited == 0 and doc.get("ok", False)
    err = None if ok else (doc.get("error") or {}).get("message", res.stderr.strip())
    return HostResult(host, ok, data=doc, error=err, dry_run=cfg.dry_run)


def for_hosts(
    hosts: Sequence[str], cfg: RemoteConfig, task: Callable[[str], HostResult], *, write: bool
) -> list[HostResult]:
    """Writes run one host after another; read-only tasks run in parallel."""
    if write or cfg.parallel <= 1:
        return [task(h) for h in hosts]
    with ThreadPoolExecutor(min(cfg.parallel, len(hosts))) as pool:
        return list(pool.map(task, hosts))


# --- researchers -------------------------------------------------------------------------


def status(hosts: Sequence[str], workdir: str, cfg: RemoteConfig) -> list[HostResult]:
    return for_hosts(hosts, cfg, lambda h: run_dsg(h, cfg, workdir, ["status"]), write=False)


def log(hosts: Sequence[str], workdir: str, cfg: RemoteConfig, n: int = 20) -> list[HostResult]:
    return for_hosts(hosts, cfg, lambda h: run_dsg(h, cfg, workdir, ["log", "-n", str(n)]),
                     write=False)  # fmt: skip


def sync(hosts: Sequence[str], workdir: str, cfg: RemoteConfig, message: str) -> list[HostResult]:
    """A dry run prints the plan (`dsg sync --dry-run`) and changes nothing."""
    args = ["sync", "-m", message] + (["--dry-run"] if cfg.dry_run else [])
    return for_hosts(hosts, cfg, lambda h: run_dsg(h, cfg, workdir, args), write=True)


def fetch(
    host: str, workdir: str, cfg: RemoteConfig, path: str, snapshot: str, output: str
) -> HostResult:
    """A file from a past snapshot, written on the remote host (`dsg snapfetch`)."""
    if cfg.dry_run:
        return run_dsg(host, cfg, workdir, ["log", "-n", "1"])
    return run_dsg(host, cfg, workdir, ["snapfetch", path, "--snapshot", snapshot, "-o", output])


# --- admins ----------------------------------------------------------------------------------


def list_repos(hosts: Sequence[str], cfg: RemoteConfig) -> list[HostResult]:
    return for_hosts(hosts, cfg, lambda h: run_dsg(h, cfg, None, ["list-repos"]), write=False)


def health(hosts: Sequence[str], cfg: RemoteConfig) -> list[HostResult]:
    return for_hosts(hosts, cfg, lambda h: run_dsg(h, cfg, None, ["admin", "health"]),
                     write=False)  # fmt: skip


def backup(
    hosts: Sequence[str], cfg: RemoteConfig, to: str, projects: Sequence[str] = ()
) -> list[HostResult]:
    """`dsg admin backup` on each repository host (a dry run prints the plan)."""
    args = ["admin", "backup", *projects, "--to", to] + (["--dry-run"] if cfg.dry_run else [])
    return for_hosts(hosts, cfg, lambda h: run_dsg(h, cfg, None, args), write=True)


def restore_drill(
    hosts: Sequence[str], cfg: RemoteConfig, project: str, from_: str, scratch: str = ""
) -> list[HostResult]:
    """`dsg admin restore-drill` on each host holding the backup (a dry run says which
    snapshot it would restore, and where, without restoring)."""
    args = ["admin", "restore-drill", project, "--from", from_]
    args += (["--scratch", scratch] if scratch else []) + (["--dry-run"] if cfg.dry_run else [])
    return for_hosts(hosts, cfg, lambda h: run_dsg(h, cfg, None, args), write=True)


def playbook(inventory: str, name: str, extra: dict[str, str], cfg: RemoteConfig) -> HostResult:
    """Run one of the repository's playbooks (dry-run: --check --diff)."""
    exe = cfg.ansible_playbook or str(REPO / ".venv-ansible" / "bin" / "ansible-playbook")
    argv = [exe, "-i", inventory, str(REPO / "playbooks" / name)]
    for k, v in extra.items():
        argv += ["-e", f"{k}={v}"]
    if cfg.dry_run:
        argv += ["--check", "--diff"]
    env = {
        **os.environ,
        "PATH": f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
    }
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=cfg.command_timeout, cwd=REPO, env=env
    )
    ok = proc.returncode == 0
    return HostResult(
        inventory, ok, data={"stdout": proc.stdout[-4000:]},
        error=None if ok else (proc.stderr or proc.stdout)[-2000:], dry_run=cfg.dry_run,
    )  # fmt: skip


def create_project(inventory: str, project: str, cfg: RemoteConfig) -> HostResult:
    """Dataset, group, access and delegation for a project declared in the inventory."""
    return playbook(inventory, "add-project.yml", {"project": project}, cfg)


def add_user(inventory: str, user: str, cfg: RemoteConfig) -> HostResult:
    """Account, memberships, keys and access for a user declared in the inventory."""
    return playbook(inventory, "add-user.yml", {"user": user}, cfg)


__all__ = [
    "HostResult",
    "RemoteConfig",
    "add_user",
    "create_project",
    "exit_code",
    "fetch",
    "health",
    "list_repos",
    "log",
    "status",
    "sync",
]
