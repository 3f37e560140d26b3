"""Fixtures of the SSH tests: a shared space on the lab host and a two-researcher team."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import skip_unless_lab_users_can_run
from tests.lab_ssh.space import AGENT, A, SshSpace


@pytest.fixture
def ssh_space(sshd_lab, tmp_path, monkeypatch):
    skip_unless_lab_users_can_run(sshd_lab, str(AGENT))
    monkeypatch.setenv("DSG_SSH_COMMAND", f"ssh -F {sshd_lab.ssh_config}")
    space = SshSpace(sshd_lab, tmp_path)
    yield space
    shutil.rmtree(space.base, ignore_errors=True)


@pytest.fixture
def ssh_team(ssh_space):
    ssh_space.grant("proj", alice="write", bob="write")
    alice = ssh_space.researcher("alice")
    alice.write(A, "a\n")
    alice.write("task1/output/r.txt", "r\n")
    alice.init("first over ssh")
    bob = ssh_space.researcher("bob")
    bob.clone()
    return alice, bob
