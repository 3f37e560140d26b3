"""The host baseline (role dsg_baseline): firewall, unattended upgrades, sshd as a whole,
mail relay with zed mail, node exporter. Skips where the inventory turns the role off (the
zfs-fuse lab, whose host is the test machine)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from tests.infra.conftest import check_path, report, sh


def baseline(declared: dict[str, Any], part: str | None = None) -> dict[str, Any]:
    if "dsg_zfs_hosts" not in declared["group_names"]:
        pytest.skip("host is not in dsg_zfs_hosts")
    b = declared["baseline"]
    if not b["enabled"]:
        pytest.skip("dsg_baseline_enabled is false for this host")
    if part and not b[part]:
        pytest.skip(f"dsg_baseline_{part} is false for this host")
    return b


def networks(nets: list[str], family: int) -> set[str]:
    parsed = [ipaddress.ip_network(n, strict=False) for n in nets]
    return {str(n) for n in ipaddress.collapse_addresses(p for p in parsed if p.version == family)}


def nft_set(ruleset: str, name: str) -> set[str]:
    """Elements of set `name` in `nft list table` output (host addresses print without /32)."""
    start = ruleset.find(f"set {name} {{")
    if start < 0:
        return set()
    body = ruleset[start : ruleset.find("}", ruleset.find("{", start) + 1) + 1]
    if "elements = {" not in body:
        return set()
    inner = body.split("elements = {", 1)[1].rsplit("}", 1)[0]
    out = set()
    for e in inner.replace("\n", " ").split(","):
        e = e.strip()
        if e:
            out.add(str(ipaddress.ip_network(e, strict=False)))
    return out


def test_firewall_admits_ssh_and_metrics_from_declared_networks_only(host, declared):
    b = baseline(declared, "firewall")
    problems: list[str] = []
    svc = host.service("nftables")
    if not svc.is_enabled:
        problems.append("nftables.service is not enabled (the rules would not come back at boot)")
    r = host.run("nft list table inet %s", b["table"])
    if r.rc != 0:
        report([f"table inet {b['table']} is not loaded: {r.stderr.strip()}"], "the firewall")
    rules = r.stdout
    for chain, policy in (("input", "drop"), ("forward", "drop")):
        if f"hook {chain} priority filter; policy {policy};" not in rules:
            problems.append(f"chain {chain}: not policy {policy}")
    for needle in (
        'iif "lo" accept',
        "ct state established,related accept",
        f"tcp dport {b['ssh_port']} ip saddr @ssh_v4 accept",
        f"tcp dport {b['metrics_port']} ip saddr @metrics_v4 accept",
    ):
        if needle not in rules:
            problems.append(f"input chain: no {needle!r}")
    for name, nets in (("ssh", b["ssh_networks"]), ("metrics", b["metrics_networks"])):
        for family in (4, 6):
            got, want = nft_set(rules, f"{name}_v{family}"), networks(nets, family)
            if got != want:
                problems.append(f"set {name}_v{family}: {sorted(got)}, declared {sorted(want)}")
    # nothing else is accepted by port
    accepted = [
        line.strip() for line in rules.splitlines()
        if "dport" in line and "accept" in line
        and f"dport {b['ssh_port']} " not in line and f"dport {b['metrics_port']} " not in line
    ]  # fmt: skip
    if accepted:
        problems.append(f"input accepts other ports: {accepted}")
    report(problems, "the firewall")


def test_unattended_upgrades_take_security_updates_only(host, declared):
    b = baseline(declared, "unattended_upgrades")
    problems: list[str] = []
    if not host.package("unattended-upgrades").is_installed:
        problems.append("unattended-upgrades is not installed")
    periodic = sh(host, "apt-config dump APT::Periodic")
    for key in ("Update-Package-Lists", "Unattended-Upgrade"):
        if f'APT::Periodic::{key} "1";' not in periodic:
            problems.append(f"APT::Periodic::{key} is not 1")
    dump = sh(host, "apt-config dump Unattended-Upgrade::Origins-Pattern")
    got = [
        line.split(":: ", 1)[1].strip().removesuffix(";").strip('"')
        for line in dump.splitlines()
        if line.startswith("Unattended-Upgrade::Origins-Pattern:: ")
    ]
    if got != b["unattended_origins"]:
        problems.append(f"origins {got}, declared {b['unattended_origins']}")
    if any('label=Debian"' in o or o.endswith("label=Debian") for o in got):
        problems.append("the point-release origin (label=Debian) is still in")
    if b["unattended_manage_timers"]:
        for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
            t = host.service(timer)
            if not (t.is_enabled and t.is_running):
                problems.append(f"{timer} is not enabled and active")
    report(problems, "unattended upgrades")


def test_sshd_effective_settings_are_hardened(host, declared):
    b = baseline(declared, "sshd")
    problems: list[str] = []
    if sh(host, "/usr/sbin/sshd -t; echo rc=$?").strip().splitlines()[-1] != "rc=0":
        problems.append("sshd -t refuses the configuration")
    contexts = [""] + [
        f"-C user={u},host=dsg-baseline-check,addr=192.0.2.1" for u in b["sshd_check_users"]
    ]
    aliases = {("permitrootlogin", "prohibit-password"): "without-password"}
    for ctx in contexts:
        out = sh(host, f"/usr/sbin/sshd -T {ctx}")
        got: dict[str, str] = {}
        for line in out.splitlines():
            k, _, v = line.partition(" ")
            got.setdefault(k, v)
        for key, value in b["sshd_settings"].items():
            k, v = key.lower(), str(value).lower()
            v = aliases.get((k, v), v)
            if got.get(k) != v:
                problems.append(f"sshd -T {ctx or '(global)'}: {k} {got.get(k)}, expected {v}")
    if not host.service("ssh").is_running:
        problems.append("ssh.service is not running")
    report(problems, "sshd")


def test_mail_relay_and_zed_mail(host, declared):
    b = baseline(declared, "mta")
    problems: list[str] = []
    for pkg in ("nullmailer", "bsd-mailx"):
        if not host.package(pkg).is_installed:
            problems.append(f"{pkg} is not installed")
    svc = host.service("nullmailer")
    if not (svc.is_enabled and svc.is_running):
        problems.append("nullmailer is not enabled and running")
    check_path(problems, host, "/etc/nullmailer/remotes", "regular", "mail", "mail", 0o600)
    admin = host.file("/etc/nullmailer/adminaddr")
    if not admin.exists or admin.content_string.strip() != b["mail_admin"]:
        problems.append(f"/etc/nullmailer/adminaddr is not {b['mail_admin']!r}")
    if not host.exists("mail"):
        problems.append("no `mail` command (zfs-zed sends its mail with it)")
    if b["zed_email"] and host.file(b["zed_rc"]).exists:
        line = f'ZED_EMAIL_ADDR="{b["zed_email_addr"]}"'
        if line not in host.file(b["zed_rc"]).content_string.splitlines():
            problems.append(f"{b['zed_rc']}: no {line}")
    report(problems, "mail")


def test_node_exporter_serves_the_textfile_directory(host, declared):
    b = baseline(declared, "node_exporter")
    problems: list[str] = []
    svc = host.service("prometheus-node-exporter")
    if not (svc.is_enabled and svc.is_running):
        problems.append("prometheus-node-exporter is not enabled and running")
    check_path(problems, host, b["textfile_dir"], "directory", "root", "root", 0o755)
    args = host.file("/etc/default/prometheus-node-exporter").content_string
    if f"--collector.textfile.directory={b['textfile_dir']}" not in args:
        problems.append(f"/etc/default/prometheus-node-exporter does not name {b['textfile_dir']}")
    listen = "" if b["metrics_networks"] else "127.0.0.1"
    if f"--web.listen-address={listen}:{b['metrics_port']}" not in args:
        problems.append(f"/etc/default/prometheus-node-exporter: not listening on {listen}:port")
    r = host.run(
        "python3 -c %s %s",
        "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=20)"
        ".read().decode())",
        f"http://127.0.0.1:{b['metrics_port']}/metrics",
    )
    if r.rc != 0:
        problems.append(f"no metrics on 127.0.0.1:{b['metrics_port']}: {r.stderr.strip()[-300:]}")
    elif "node_textfile_scrape_error 0" not in r.stdout:
        problems.append("node_textfile_scrape_error is not 0 (a bad .prom file in the directory?)")
    report(problems, "the node exporter")
