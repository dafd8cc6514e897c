"""docs/ci.md's docker command line, run by a dockerd of the test's own:
pybuild's image as uid 1000 with docker's names for the relaxations
(seccomp, AppArmor, systempaths), the context bound read-only and the root
in a named volume, builds testdata/hello and pushes the manifest digest of
root's build on the host. Without the relaxations docker's seccomp filter
refuses the user namespace, and pybuild says so."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from container_helpers import CONTEXT, EPOCH, hello_args, manifest_digest
from fixtures.docker26 import end_dockerd
from fixtures.podman import engine_cgroups
from fixtures.tools import require_tools

pytestmark = pytest.mark.e2e

RELAXED = ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
           "--security-opt", "systempaths=unconfined"]


@pytest.fixture
def docker(tmp_path):
    """`docker -H <a dockerd of this test's own>` as a list; the test fails
    if it leaves a container or volume, and dockerd goes with its mounts and
    the cgroups it made."""
    require_tools("dockerd", "docker")
    home = Path(f"/tmp/pb-ci-dockerd-{os.getpid()}")  # unix socket paths are short
    home.mkdir()
    socket = f"unix://{home}/d.sock"
    log_path = tmp_path / "dockerd.log"
    cgroups_before = engine_cgroups("docker")
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none", "--data-root", str(home / "data"),
             "--exec-root", str(home / "exec"), "--pidfile", str(home / "pid"), "-H", socket],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    command = ["docker", "-H", socket]
    problems = []
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*command, "version"], capture_output=True, timeout=30).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"dockerd cannot start here: {log_path.read_text()[-500:]}")
            time.sleep(0.3)
        yield command
        left = [kind for kind, listing in (("containers", ["ps", "-a", "-q"]), ("volumes", ["volume", "ls", "-q"]))
                if subprocess.run([*command, *listing], capture_output=True, text=True, timeout=60).stdout.split()]
        if left:
            pytest.fail(f"the test left docker {' and '.join(left)}", pytrace=False)
    finally:
        problems = end_dockerd(daemon, home, cgroups_before)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def test_docs_docker_command_line_builds_and_pushes_as_uid_1000_and_needs_the_relaxations(
        docker, pybuild_image, busybox_image, registry, hello_on_host):
    dest = f"{registry.host}/hello:in-docker"
    volume = "pybuild-root"
    subprocess.run([*docker, "pull", "-q", pybuild_image.ref], check=True, capture_output=True, timeout=300)
    try:
        done = subprocess.run(
            [*docker, "run", "--rm", "--user", "1000", "--network", "host", *RELAXED,
             "--env", f"SOURCE_DATE_EPOCH={EPOCH}", "-v", f"{CONTEXT}:/workspace:ro",
             "-v", f"{volume}:/home/pybuild/.local/share/pybuild",
             pybuild_image.ref, *hello_args(busybox_image.ref, dest), "/workspace"],
            capture_output=True, text=True, timeout=300)
        # The named volume kept the root: the build's snapshots are there.
        kept = subprocess.run([*docker, "run", "--rm", "-v", f"{volume}:/root-volume", "--entrypoint", "ls",
                               pybuild_image.ref, "/root-volume"], capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run([*docker, "volume", "rm", "-f", volume], capture_output=True, timeout=60)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert manifest_digest(dest) == hello_on_host
    assert kept.stdout.split(), "the named volume holds no pybuild root"

    # The same without the relaxations: docker's seccomp filter refuses the
    # user namespace, and pybuild stops with one line saying so.
    refused = subprocess.run(
        [*docker, "run", "--rm", "--user", "1000", "--network", "host", "-v", f"{CONTEXT}:/workspace:ro",
         pybuild_image.ref, *hello_args(busybox_image.ref, dest), "/workspace"],
        capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    assert "user namespace" in refused.stderr, refused.stderr

