#!/usr/bin/env python3
"""Raw channel throughput: OpenSSH (what dsg uses) vs paramiko, to the lab host.

    .venv/bin/pip install paramiko   # only for this comparison; dsg does not depend on it
    .venv/bin/python scripts/benchmarking/ssh_transport_bench.py [--mib 256]

Sends N MiB to `cat > /dev/null` on the lab host and reads N MiB from `head -c`, through
(a) the OpenSSH client over a pipe, as dsg's ssh transport does, and (b) a paramiko exec
channel with the same key and host-key verification (RejectPolicy + the lab known_hosts).
Prints MiB/s and the ratio. Needs the lab sshd (scripts/lab/sshd up; root).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHUNK = 1 << 20


def lab_env() -> dict[str, str]:
    out = subprocess.run(
        [str(REPO / "scripts/lab/sshd"), "up"], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def openssh(cfg: str, mib: int) -> tuple[float, float]:
    block = b"\0" * CHUNK
    t = time.perf_counter()
    p = subprocess.Popen(
        ["ssh", "-F", cfg, "-T", "lab-alice", "cat > /dev/null"], stdin=subprocess.PIPE
    )
    for _ in range(mib):
        p.stdin.write(block)  # type: ignore[union-attr]
    p.stdin.close()  # type: ignore[union-attr]
    p.wait()
    up = time.perf_counter() - t
    t = time.perf_counter()
    p = subprocess.Popen(
        ["ssh", "-F", cfg, "-T", "lab-alice", f"head -c {mib << 20} /dev/zero"],
        stdout=subprocess.PIPE,
    )
    while p.stdout.read(CHUNK):  # type: ignore[union-attr]
        pass
    p.wait()
    return up, time.perf_counter() - t


def paramiko_run(known_hosts: str, key: str, port: int, mib: int) -> tuple[float, float]:
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    t = time.perf_counter()
    client.connect("127.0.0.1", port=port, username="alice", key_filename=key, allow_agent=False,
                   look_for_keys=False)  # fmt: skip
    stdin, stdout, _ = client.exec_command("cat > /dev/null")
    block = b"\0" * CHUNK
    for _ in range(mib):
        stdin.write(block)
    stdin.channel.shutdown_write()
    stdout.channel.recv_exit_status()
    up = time.perf_counter() - t
    t = time.perf_counter()
    _, stdout, _ = client.exec_command(f"head -c {mib << 20} /dev/zero")
    while stdout.read(CHUNK):
        pass
    down = time.perf_counter() - t
    client.close()
    return up, down


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args()
    env = lab_env()
    lab = Path(env["DSG_LAB_SSH_CONFIG"]).parent
    o_up, o_down = openssh(env["DSG_LAB_SSH_CONFIG"], args.mib)
    try:
        p_up, p_down = paramiko_run(env["DSG_LAB_KNOWN_HOSTS"], str(lab / "keys" / "alice"),
                                    2222, args.mib)  # fmt: skip
    except ImportError:
        print("paramiko is not installed: .venv/bin/pip install paramiko")
        p_up = p_down = float("nan")
    head = f"{'direction':<10} {'OpenSSH MiB/s':>14} {'paramiko MiB/s':>15} {'ratio':>7}"
    print(head)
    for name, o, p in (("upload", o_up, p_up), ("download", o_down, p_down)):
        print(f"{name:<10} {args.mib / o:14.1f} {args.mib / p:15.1f} {p / o:6.2f}x")


if __name__ == "__main__":
    main()
