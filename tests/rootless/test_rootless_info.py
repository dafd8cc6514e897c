"""Issue 16: `pybuild info` as the user names the snapshotter the probe
chose and why, and that the process is rootless."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_info_reports_the_snapshotter_and_its_reason(rootless):
    facts = json.loads(rootless.ok("info", "--format", "json").stdout)
    assert facts["rootless"].startswith(f"yes: uid {rootless.uid} is root of its own user namespace")
    assert facts["root"] == str(rootless.root)
    assert (facts["snapshotter"], facts["snapshotter reason"]) == \
        ("overlayfs", "kernel overlayfs with userxattr, in a user namespace")
    forced = json.loads(rootless.ok("info", "--format", "json", env={"PYBUILD_SNAPSHOTTER": "native"}).stdout)
    assert (forced["snapshotter"], forced["snapshotter reason"]) == ("native", "set by PYBUILD_SNAPSHOTTER")


def test_the_system_files_root_is_not_a_rootless_users(rootless):
    """/etc/pybuild/config.toml's `root` is root's (/var/lib/pybuild): a user
    cannot use it, so a rootless pybuild keeps its own default, as podman
    ignores the system storage path; the rest of the file still applies."""
    system = Path("/etc/pybuild/config.toml")
    if system.exists():
        pytest.skip("this host has a /etc/pybuild/config.toml of its own")
    created_dir = not system.parent.exists()
    system.parent.mkdir(exist_ok=True)
    try:
        system.write_text('root = "/var/lib/pybuild-not-for-users"\nisolation = "builtin"\n')
        facts = json.loads(rootless.ok("info", "--format", "json").stdout)
    finally:
        system.unlink()
        if created_dir:
            system.parent.rmdir()
    assert facts["config file"] == str(system)
    assert facts["root"] == str(rootless.root)
    assert facts["isolation"] == "builtin"
