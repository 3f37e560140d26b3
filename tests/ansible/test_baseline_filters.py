"""The dsg_baseline role's filters: the nftables sets, the controller lock-out guard and the
`sshd -T` comparison."""

from __future__ import annotations

import pytest

from tests.ansible._load import load

baseline = load("dsg_baseline/filter_plugins/dsg_baseline.py")


def test_networks_are_split_by_family_normalised_and_collapsed():
    nets = ["10.20.3.0/24", "10.20.0.0/16", "192.0.2.7", "10.0.2.2/32", "2001:db8::1/48"]
    assert baseline.dsg_baseline_networks(nets, 4) == [
        "10.0.2.2/32",
        "10.20.0.0/16",
        "192.0.2.7/32",
    ]
    assert baseline.dsg_baseline_networks(nets, 6) == ["2001:db8::/48"]
    assert baseline.dsg_baseline_networks([], 4) == []
    with pytest.raises(ValueError, match="not an IP network"):
        baseline.dsg_baseline_networks(["10.0.0.0/33"], 4)


def test_admits_the_controller_only_from_a_listed_network():
    nets = ["10.20.0.0/16", "2001:db8::/48"]
    assert baseline.dsg_baseline_admits("10.20.5.1", nets)
    assert baseline.dsg_baseline_admits("::ffff:10.20.5.1", nets)  # v4-mapped
    assert baseline.dsg_baseline_admits("2001:db8:0:1::5", nets)
    assert not baseline.dsg_baseline_admits("10.21.0.1", nets)
    assert not baseline.dsg_baseline_admits("192.0.2.1", [])
    assert baseline.dsg_baseline_check_networks(["10.0.0.0/8", "nope"]) == [
        "'nope': 'nope' does not appear to be an IPv4 or IPv6 network"
    ]


def test_sshd_mismatches_read_sshd_T_output():
    out = [
        "port 22",
        "passwordauthentication no",
        "kbdinteractiveauthentication yes",
        "permitrootlogin without-password",
        "x11forwarding no",
    ]
    want = {
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "PermitRootLogin": "prohibit-password",  # sshd -T prints without-password
        "X11Forwarding": False,
        "PermitEmptyPasswords": "no",
    }
    assert baseline.dsg_baseline_sshd_mismatches(out, want) == [
        "kbdinteractiveauthentication yes (want no)",
        "permitemptypasswords (unset) (want no)",
    ]
