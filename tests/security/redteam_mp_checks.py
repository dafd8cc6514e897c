"""Checks shared by the multi-platform red-team tests
(test_redteam_multiplatform.py): running the real pybuild, reading a
failure as bad input must end (one error line, exit 1), and looking for
what a build may leave behind: mounts, scratch, processes by a marker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from fixtures.pybuild import pybuild_env


def pybuild(*args: str, tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["pybuild", *args], capture_output=True, text=True, timeout=timeout,
                          env=pybuild_env(tmp_path))


def write_context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (context / name).write_text(text)
    return context


def one_error(done: subprocess.CompletedProcess) -> str:
    """The build failed as bad input must: exit 1, one ERROR line, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def root_is_clean(root: Path) -> None:
    """No mount under the root, no scratch directory left in it."""
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line]
    assert not mounts, mounts
    scratch = root / "tmp"
    assert not scratch.exists() or not any(scratch.iterdir()), list(scratch.iterdir())


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def processes_with(marker: str) -> dict[int, str]:
    """Every process on the host whose command line holds `marker` (an
    OCI step's are not pybuild's descendants; an emulated one is qemu's)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found[int(entry.name)] = cmdline
    return found


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def reap(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
