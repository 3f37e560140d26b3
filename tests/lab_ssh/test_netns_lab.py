"""scripts/lab/netns: two lab "hosts" as network namespaces, reachable only inside the machine.

No test here sends a packet towards anything outside the machine: isolation is shown with
route lookups (``ip route get``), which send nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "lab" / "netns"
NS_A, NS_B = "dsglab-a", "dsglab-b"


def netns(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), action], capture_output=True, text=True, timeout=60, check=False
    )


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


def parse_env(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if line.startswith("DSG_"))


@pytest.fixture(scope="module")
def lab_netns() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (scripts/lab/netns)")
    was_up = netns("status").returncode == 0
    proc = netns("up")
    if proc.returncode == 2:
        pytest.skip(f"lab netns unavailable: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    yield parse_env(proc.stdout)
    if not was_up:
        netns("down")


def test_up_is_idempotent(lab_netns: dict[str, str]) -> None:
    again = netns("up")
    assert again.returncode == 0, again.stderr
    assert parse_env(again.stdout) == lab_netns
    assert netns("status").returncode == 0
    assert lab_netns["DSG_LAB_NETNS_A"] == NS_A
    assert lab_netns["DSG_LAB_NETNS_B"] == NS_B


def test_namespaces_have_no_way_out(lab_netns: dict[str, str]) -> None:
    for ns in (NS_A, NS_B):
        routes = ip("-n", ns, "-4", "route", "show").stdout.splitlines()
        assert len(routes) == 1 and routes[0].startswith(
            lab_netns["DSG_LAB_NETNS_BRIDGE_ADDR"].rsplit(".", 1)[0] + ".0/24 dev eth0"
        ), routes
        assert not any(r.startswith("default") for r in routes)
        # A route lookup only: nothing is sent.
        for outside in ("192.0.2.1", "8.8.8.8", "10.214.0.1"):
            lookup = ip("-n", ns, "route", "get", outside)
            assert lookup.returncode != 0
            assert "unreachable" in lookup.stderr.lower()


def test_namespaces_reach_each_other(lab_netns: dict[str, str]) -> None:
    addr_b = lab_netns["DSG_LAB_NETNS_B_ADDR"]
    server_code = (
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind((sys.argv[1], 7000)); s.listen(1); print('ready', flush=True)\n"
        "c,a=s.accept(); c.sendall(('hello '+a[0]).encode()); c.close()\n"
    )
    client_code = (
        "import socket,sys\n"
        "s=socket.create_connection((sys.argv[1], 7000), timeout=5)\n"
        "print(s.recv(100).decode())\n"
    )
    server = subprocess.Popen(
        ["ip", "netns", "exec", NS_B, sys.executable, "-c", server_code, addr_b],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.run(
            ["ip", "netns", "exec", NS_A, sys.executable, "-c", client_code, addr_b],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.strip() == f"hello {lab_netns['DSG_LAB_NETNS_A_ADDR']}"
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_down_removes_everything_and_kills_what_runs_inside(lab_netns: dict[str, str]) -> None:
    sleeper = subprocess.Popen(["ip", "netns", "exec", NS_B, "sleep", "120"])
    try:
        deadline = time.monotonic() + 5
        while not ip("netns", "pids", NS_B).stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ip("netns", "pids", NS_B).stdout.strip()
        proc = netns("down")
        assert proc.returncode == 0, proc.stderr
        assert sleeper.wait(timeout=10) != 0
        names = ip("netns", "list").stdout.split()
        assert NS_A not in names and NS_B not in names
        assert ip("link", "show", "dev", "dsglab0").returncode != 0
        assert netns("status").returncode == 3
        assert netns("down").returncode == 0  # safe twice
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        up = netns("up")
    assert up.returncode == 0, up.stderr
