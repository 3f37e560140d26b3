"""Filters of the dsg_baseline role: networks for the nftables sets, and whether an address
is admitted by a list of networks (the role refuses firewall rules that would shut out the
controller's own SSH connection)."""

from __future__ import annotations

import ipaddress
from typing import Any


def _networks(networks: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    if isinstance(networks, str):
        networks = [networks]
    out = []
    for n in networks or []:
        try:
            out.append(ipaddress.ip_network(str(n).strip(), strict=False))
        except ValueError as e:
            raise ValueError(f"not an IP network: {n!r} ({e})") from None
    return out


def dsg_baseline_networks(networks: Any, family: int) -> list[str]:
    """The networks of one IP family (4 or 6), normalised (host bits cleared), sorted and
    without duplicates or networks inside another one of the list: nftables refuses
    overlapping elements in an interval set."""
    nets = [n for n in _networks(networks) if n.version == int(family)]
    collapsed = ipaddress.collapse_addresses(nets)  # type: ignore[arg-type]
    return [str(n) for n in collapsed]


def dsg_baseline_admits(address: str, networks: Any) -> bool:
    """Whether `address` (an IPv4 or IPv6 address, an IPv4-mapped IPv6 one included) lies in
    one of `networks`."""
    addr = ipaddress.ip_address(str(address).strip())
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in n for n in _networks(networks) if n.version == addr.version)


def dsg_baseline_check_networks(networks: Any) -> list[str]:
    """Problems with a list of networks (empty when all parse)."""
    problems = []
    for n in [networks] if isinstance(networks, str) else networks or []:
        try:
            ipaddress.ip_network(str(n).strip(), strict=False)
        except ValueError as e:
            problems.append(f"{n!r}: {e}")
    return problems


# What `sshd -T` prints for a value that has another spelling in sshd_config.
SSHD_ALIASES = {("permitrootlogin", "prohibit-password"): "without-password"}


def dsg_baseline_sshd_mismatches(lines: list[str], want: dict[str, Any]) -> list[str]:
    """Settings of `want` ({Keyword: value}) that `sshd -T` output (`lines`: "keyword value")
    does not show, as "keyword <got> (want <value>)"."""
    got: dict[str, str] = {}
    for line in lines:
        key, _, value = line.strip().partition(" ")
        got.setdefault(key.lower(), value.strip())
    out = []
    for key, value in want.items():
        k = str(key).lower()
        v = str(value).lower() if not isinstance(value, bool) else ("yes" if value else "no")
        v = SSHD_ALIASES.get((k, v), v)
        if got.get(k) != v:
            out.append(f"{k} {got.get(k, '(unset)')} (want {v})")
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "dsg_baseline_networks": dsg_baseline_networks,
            "dsg_baseline_admits": dsg_baseline_admits,
            "dsg_baseline_check_networks": dsg_baseline_check_networks,
            "dsg_baseline_sshd_mismatches": dsg_baseline_sshd_mismatches,
        }
