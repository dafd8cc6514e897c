"""Ctrl-C during a RUN: exit 130 quickly, and nothing left behind — no
mount under the root, no process of the step, no temp dir."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from cli_helpers import PYBUILD, mounts_under, write_context


def _processes_with_env(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in environ:
                found.append(int(entry))
    return found


def _wait_for(process, text: bytes, timeout: float) -> bytes:
    """Read the process's stderr until `text` appears."""
    seen = b""
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while text not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            raise AssertionError(f"never saw {text!r}; output so far:\n{seen.decode(errors='replace')}")
        if selector.select(remaining):
            seen += os.read(process.stderr.fileno(), 65536)
    selector.close()
    return seen


@pytest.mark.parametrize("isolation, to_group", [("oci", False), ("oci", True), ("builtin", True)])
def test_ctrl_c_exits_130_and_cleans_up(cli, busybox_image, tmp_path, isolation, to_group):
    if isolation == "oci" and not any(Path(d, "runc").exists() or Path(d, "crun").exists()
                                      for d in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.fail("the oci isolation needs runc or crun (apt-get install runc)")
    marker = f"PYBUILD_TEST_MARKER={uuid.uuid4().hex}"
    root = tmp_path / "root"
    context = write_context(tmp_path / "ctx", f"FROM {busybox_image.ref}\nENV {marker}\n"
                                              "RUN echo step-started; sleep 30\n")
    # A new session: Ctrl-C in a terminal signals the whole process group,
    # which `to_group` imitates without signalling pytest.
    process = subprocess.Popen([*PYBUILD, "--root", str(root), "--progress=plain", "--isolation", isolation,
                                str(context)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env,
                               start_new_session=True)
    try:
        _wait_for(process, b"step-started\n", timeout=60)  # the output, not the name
        assert _processes_with_env(marker), "the RUN step's processes should be running"
        sent = time.monotonic()
        if to_group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    err = err.decode()
    assert process.returncode == 130, err
    assert took < 3, f"took {took:.1f}s to stop"
    assert err.rstrip().endswith("ERROR: interrupted")
    if not to_group:
        assert "#2 CANCELED" in err
    # else runc forwards the group's SIGINT to the step, which may die of it
    # (exit code 130) before pybuild cancels it: either report is right.
    assert "Traceback" not in err
    assert mounts_under(root) == []
    assert _processes_with_env(marker) == []
    assert list((root / "tmp").iterdir()) == []
