"""Fixtures for the whole suite: a real registry, a busybox base image in
it, a content store per test, and a leak check around every test."""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
import threading
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cache.digest import Digest
from cache.store import ContentStore
from fixtures import busybox, leaks
from fixtures import rootless as _rootless
from fixtures.proxy import FaultProxy
from fixtures.registry import Registry, remove_registry, start_registry
from fixtures.token import ISSUER, SERVICE, TokenServer
from fixtures.tools import require_tools
# docker 26's daemons are session fixtures: imported here, one per session
# (imported by each module, pytest would start one for each module).
from fixtures.docker26 import docker26, docker26_multiplatform  # noqa: F401 (fixtures)

# Processes started by session fixtures: they outlive any single test.
_SESSION_PIDS: set[int] = set()
AUTH_USER, AUTH_PASSWORD = "builder", "s3cret-pass"


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_leaks: skip the mount/process/temp-file leak check")
    # Set PYBUILD_TEST_HOST_MOUNTNS=1 to stay in the host's mount namespace.
    if not os.environ.get("PYBUILD_TEST_HOST_MOUNTNS"):
        why_not = leaks.private_mount_namespace()
        if why_not:
            config.issue_config_time_warning(pytest.PytestConfigWarning(
                f"tests share the host's mount namespace ({why_not}): the mount leak check "
                "may blame tests for mounts made by other processes"), stacklevel=2)


# A hung test fails after this long instead of eating CI's whole budget
# (the slowest test takes under 10 s here).
TEST_TIME_LIMIT_S = int(os.environ.get("PYBUILD_TEST_TIME_LIMIT", "180"))


class TestTimeLimit(Exception):
    pass


def _out_of_time(signum, frame):
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    raise TestTimeLimit(f"test still running after {TEST_TIME_LIMIT_S} s (every thread's stack is on stderr)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    previous = signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(TEST_TIME_LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Registry:
    """docker-registry on 127.0.0.1:<free port>, filesystem storage, no auth."""
    require_tools("docker-registry")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    _SESSION_PIDS.add(reg.process.pid)
    yield reg
    remove_registry(reg)
    _SESSION_PIDS.discard(reg.process.pid)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory) -> Registry:
    """A second registry demanding basic auth (htpasswd, bcrypt): `.username`, `.password`."""
    require_tools("docker-registry", "htpasswd")
    reg = start_registry(tmp_path_factory.mktemp("auth-registry"), username=AUTH_USER, password=AUTH_PASSWORD)
    _SESSION_PIDS.add(reg.process.pid)
    yield reg
    remove_registry(reg)
    _SESSION_PIDS.discard(reg.process.pid)


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory):
    """A registry using docker's token auth, and its token server (which
    grants any scope to AUTH_USER/AUTH_PASSWORD): yields (registry, server)."""
    require_tools("docker-registry")
    root = tmp_path_factory.mktemp("token-registry")
    server = TokenServer(root / "token-cert.pem", AUTH_USER, AUTH_PASSWORD)
    reg = start_registry(root, token={"realm": server.realm, "service": SERVICE, "issuer": ISSUER,
                                      "rootcertbundle": root / "token-cert.pem"})
    _SESSION_PIDS.add(reg.process.pid)
    yield reg, server
    remove_registry(reg)
    server.close()
    _SESSION_PIDS.discard(reg.process.pid)


@dataclass(frozen=True)
class BusyboxImage:
    """The busybox image as pushed: `ref` is "127.0.0.1:PORT/busybox:latest"."""

    ref: str
    digest: Digest           # the manifest's
    config: Digest
    layers: tuple[Digest, ...]
    diff_ids: tuple[Digest, ...]
    layout: Path             # the OCI layout it was pushed from (tag "latest")
    registry: Registry


@dataclass(frozen=True)
class BusyboxIndex:
    """An OCI index at "127.0.0.1:PORT/busybox-index:latest": busybox for
    linux/amd64 and for linux/arm64/v8 (Debian's busybox-static:arm64; its
    RUNs need an emulator, tests/e2e/test_emulation.py)."""

    ref: str
    digest: Digest           # the index's
    amd64: Digest            # manifest digests
    arm64: Digest


@pytest.fixture(scope="session")
def busybox_image(registry, tmp_path_factory) -> BusyboxImage:
    require_tools("skopeo", "busybox")
    layout = tmp_path_factory.mktemp("busybox-layout")
    image = busybox.build_busybox_layout(layout)
    ref = f"{registry.host}/busybox:latest"
    busybox.skopeo_push(layout, "latest", ref)
    return BusyboxImage(ref, image.manifest, image.config, image.layers, image.diff_ids, layout, registry)


@pytest.fixture(scope="session")
def busybox_index(registry, tmp_path_factory) -> BusyboxIndex:
    require_tools("skopeo", "busybox")
    layout = tmp_path_factory.mktemp("busybox-index-layout")
    index, amd64, arm64 = busybox.build_multiarch_layout(layout)
    ref = f"{registry.host}/busybox-index:latest"
    busybox.skopeo_push(layout, "latest", ref, all_images=True)
    return BusyboxIndex(ref, index, amd64.manifest, arm64.manifest)


@pytest.fixture
def store(tmp_path) -> ContentStore:
    """An empty content store for this test."""
    return ContentStore(tmp_path / "root" / "content")


@pytest.fixture
def fault_proxy(registry) -> FaultProxy:
    """A proxy to the session registry whose faults a test can arm."""
    proxy = FaultProxy(registry.host)
    yield proxy
    proxy.close()


def _leftover_temp_files(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.name.startswith(".pybuild-export-") or (
                path.is_file() and (path.parent.name == "ingest" or ".tmp" in path.name)):
            found.append(str(path.relative_to(root)))
    return sorted(found)


_BUILD_THREADS = ("pybuild-early-layers", "pybuild-layer", "pybuild-step", "pybuild-ssh-proxy", "pybuild-pull",
                  "pybuild-progress", "pybuild-mount")


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail a test that leaves a mount, a process, a build thread or a temp
    file behind.

    The leaks are cleaned up before failing (leaked processes killed,
    mounts lazily unmounted), so one bad test does not fail the next.
    """
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    mounts_before = leaks.mounts()
    pids_before = set(leaks.descendants())
    threads_before = set(threading.enumerate())
    yield
    problems = []
    # A build's own threads end with it (the gzip pool is shared for good).
    stray = [t for t in threading.enumerate() if t not in threads_before and t.name.startswith(_BUILD_THREADS)]
    for thread in stray:
        thread.join(timeout=5)
    stray = sorted(t.name for t in stray if t.is_alive())
    if stray:
        problems.append(f"threads left running: {stray}")
    new_pids = {pid: name for pid, name in leaks.descendants().items()
                if pid not in pids_before and pid not in _SESSION_PIDS}
    if new_pids:
        problems.append(f"processes left running: {new_pids}")
        leaks.reap(new_pids)
    new_mounts = leaks.mounts() - mounts_before
    if new_mounts:
        problems.append(f"mounts left behind: {sorted(new_mounts)}")
        leaks.unmount(new_mounts)
    # Only a test that used tmp_path has one to check (the value stays in
    # funcargs after the fixture itself was finalised).
    tmp_path = getattr(request.node, "funcargs", {}).get("tmp_path")
    if tmp_path is not None:
        temp_files = _leftover_temp_files(tmp_path)
        if temp_files:
            problems.append(f"temp files left behind: {temp_files}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def git_daemon(tmp_path):
    """`git daemon` exporting tmp_path/git over git:// on loopback:
    yields (the exported directory, the git:// base URL)."""
    base = tmp_path / "git"
    base.mkdir()
    port = _free_loopback_port()
    daemon = subprocess.Popen(["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={base}",
                               "--listen=127.0.0.1", f"--port={port}", str(base)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                daemon.kill()
                daemon.wait()
                pytest.fail("git daemon did not start")
            time.sleep(0.05)
    yield base, f"git://127.0.0.1:{port}"
    daemon.terminate()
    daemon.wait(timeout=10)


@pytest.fixture(scope="session")
def rootless_host():
    yield from _rootless.rootless_host_fixture()


@pytest.fixture
def rootless(rootless_host):
    """pybuild as an ordinary user with a subordinate range, with a HOME of
    this test's own; fails the test if a process, temp file or mount of the
    user is left after it (tests/fixtures/rootless.py)."""
    yield from _rootless.rootless_fixture(rootless_host)


@pytest.fixture
def nosubid(rootless_host):
    """pybuild as the second user, which has no subordinate ids."""
    yield from _rootless.rootless_fixture(rootless_host, rootless_host.nosubid_user)
