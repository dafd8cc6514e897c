"""Issue 16: what an ordinary user's pybuild leaves behind — nothing, after
a build, a failing RUN, Ctrl-C or SIGKILL during a RUN (the next command
takes back what the killed one could not) — and the one line a user without
subordinate ids gets. The `rootless` fixture checks every test for
processes of the user and its subordinate ids, temp files in its root, new
entries in /tmp and /dev/shm, and mounts; these tests add what each case
must show on top."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fixtures.pybuild import pybuild_env
from fixtures.rootless import child_of, processes_of, temp_files_in, wait_for_no_processes

SLEEPING = "FROM {base}\nRUN echo step-started; sleep 30\n"
SCRATCH_LEASE = "pybuild-lease-"  # runtime/executor.py's leases on /dev/shm


def _read_until(process, text: bytes, timeout: float = 60) -> bytes:
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while text not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                raise AssertionError(f"never saw {text!r}:\n{seen.decode(errors='replace')}")
            if selector.select(remaining):
                seen += os.read(process.stderr.fileno(), 65536)
    return seen


def _sleepers(host, timeout: float = 10) -> list[int]:
    """The step's `sleep` (it starts just after the echo it waits for)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [pid for pid, name in processes_of(host).items() if name.startswith("sleep ")]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def _stop(process) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)  # runuser and pybuild; the fixture takes the rest
        process.wait()


@pytest.mark.parametrize("command", (("build", "."), ("images",), ("prune", "--all"), ("doctor",)))
def test_without_subordinate_ids_one_line_names_the_fix(nosubid, command):
    nosubid.write_context("ctx", "FROM scratch\n")
    done = nosubid.run(*command, cwd=nosubid.home / "ctx")
    errors = done.stderr.decode().splitlines()
    assert done.returncode == 1, errors
    assert len(errors) == 1, errors
    assert "usermod --add-subuids" in errors[0] and nosubid.user in errors[0]
    assert not (nosubid.home / ".local" / "share" / "pybuild").exists()
    # The range it suggests is free: above every range either file gives.
    suggested = re.search(r"--add-subuids (\d+)-(\d+) --add-subgids \1-\2 ", errors[0])
    assert suggested, errors[0]
    first, last = int(suggested[1]), int(suggested[2])
    assert last - first + 1 == 65536
    for path in ("/etc/subuid", "/etc/subgid"):
        for line in Path(path).read_text().splitlines():
            _, start, count = line.split(":")
            assert last < int(start) or first >= int(start) + int(count), (path, line)


def test_a_failing_run_leaves_nothing(rootless, busybox_image):
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\n"
                                            "RUN echo partial > /partial && sleep 0.2 & echo started; exit 3\n")
    done = rootless.run("build", "-t", "fails:1", str(context))
    assert done.returncode == 1
    assert "exit code: 3" in done.stderr.decode()
    assert "fails:1" not in rootless.ok("images").stdout.decode()
    assert temp_files_in(rootless.home) == []


# Each executor on the probe's snapshotter (kernel overlayfs), and runc on
# the other two: fuse-overlayfs has a daemon that must not outlive pybuild.
CASES = [("oci", None), ("builtin", None), ("oci", "fuse-overlayfs"), ("oci", "native")]


@pytest.mark.parametrize("isolation, snapshotter", CASES)
def test_ctrl_c_during_a_run(rootless, busybox_image, isolation, snapshotter):
    if snapshotter:
        rootless.env["PYBUILD_SNAPSHOTTER"] = snapshotter
    context = rootless.write_context("ctx", SLEEPING.format(base=busybox_image.ref))
    process = rootless.popen("build", "--progress=plain", "--isolation", isolation, str(context))
    try:
        _read_until(process, b"step-started\n")
        assert _sleepers(rootless.host), "the step should be running"
        sent = time.monotonic()
        # A terminal's Ctrl-C: SIGINT to the foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        _stop(process)
    assert process.returncode == 130, err.decode(errors="replace")
    assert took < 5, f"took {took:.1f} s to stop"
    assert b"Traceback" not in err
    assert wait_for_no_processes(rootless.host) == {}
    assert temp_files_in(rootless.home) == []


@pytest.mark.parametrize("isolation, snapshotter", CASES)
def test_kill_9_during_a_run_then_the_next_command_reclaims(rootless, busybox_image, isolation, snapshotter):
    if snapshotter:
        rootless.env["PYBUILD_SNAPSHOTTER"] = snapshotter
    context = rootless.write_context("ctx", SLEEPING.format(base=busybox_image.ref))
    process = rootless.popen("build", "--progress=plain", "--isolation", isolation, str(context))
    try:
        _read_until(process, b"step-started\n")
        assert _sleepers(rootless.host), "the step should be running"
        os.kill(child_of(process.pid), signal.SIGKILL)  # pybuild itself, not runuser
        process.communicate(timeout=20)
    finally:
        _stop(process)
    # The step dies with pybuild, its namespaces' last holder.
    assert wait_for_no_processes(rootless.host) == {}
    left = temp_files_in(rootless.home)
    assert left, "a killed pybuild cannot clean up: this test would check nothing"

    # A lease a killed root pybuild left on /dev/shm, which the user may
    # not remove: it must not stop the user's own reclaim.
    foreign = Path("/dev/shm") / f"{SCRATCH_LEASE}1_{uuid.uuid4().hex[:8]}"
    foreign.touch(mode=0o600)
    try:
        again = rootless.write_context("again", f"FROM {busybox_image.ref}\nRUN echo again > /again\n")
        rootless.ok("build", "--isolation", isolation, str(again))
        assert temp_files_in(rootless.home) == []
    finally:
        foreign.unlink(missing_ok=True)  # (a root pybuild elsewhere may take it back first)


def test_roots_pybuild_leaves_a_running_users_lease(rootless, busybox_image, tmp_path):
    context = rootless.write_context("ctx", SLEEPING.format(base=busybox_image.ref))
    process = rootless.popen("build", "--progress=plain", str(context))
    try:
        _read_until(process, b"step-started\n")
        leases = sorted(Path("/dev/shm").glob(f"{SCRATCH_LEASE}{child_of(process.pid)}_*"))
        assert leases, "the user's build holds a lease on /dev/shm"
        (tmp_path / "ctx").mkdir()
        (tmp_path / "ctx" / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nRUN true\n")
        done = subprocess.run([sys.executable, "-c", "from builder.entry import main; main()", "build",
                               "--root", str(tmp_path / "root"), str(tmp_path / "ctx")],
                              env=pybuild_env(tmp_path), capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        # Root may remove any file, but a user's lease is the user's: gone,
        # it would tell the user's next pybuild that this build is dead.
        assert all(lease.exists() for lease in leases)
        os.killpg(process.pid, signal.SIGINT)
        process.communicate(timeout=20)
        assert process.returncode == 130
    finally:
        _stop(process)
