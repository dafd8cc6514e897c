"""`kill -9` of a pybuild process at chosen and at random points (pulling,
running a step, committing, exporting), then the same build again, and
`pybuild doctor` on the root; and a root on a full filesystem."""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from builder.doctor import Kind, check
from builder.worker import Worker
from e2e.helpers import build_image
from fixtures.tools import require_tools

ROOT = Path(__file__).resolve().parents[2]
AFTER_A_CRASH = {Kind.ORPHAN_SNAPSHOT, Kind.STRAY_TEMP, Kind.STALE_MOUNT}


def _command(root: Path, context: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "builder.cli", "build", "--root", str(root), "--progress", "plain",
            "--isolation", "builtin", *extra, str(context)]


def _start(root, context, log: Path, *extra, env=None) -> subprocess.Popen:
    return subprocess.Popen(_command(root, context, *extra), stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            cwd=ROOT, env={**os.environ, **(env or {})})


def _wait_until(predicate, timeout=20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=20)


def _rebuild(root, context, *extra, env=None) -> None:
    done = subprocess.run(_command(root, context, *extra), capture_output=True, timeout=120, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr.decode()


def _doctor(root, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder.cli", "doctor", "--root", str(root), *extra],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def _heal_and_check(root: Path) -> None:
    """doctor finds only what a crash leaves (never a corrupt or missing
    piece), --fix removes it, and a second doctor passes."""
    worker = Worker.open(root, "builtin")
    try:
        kinds = {problem.kind for problem in check(worker)}
    finally:
        worker.close()
    assert kinds <= AFTER_A_CRASH
    fixed = _doctor(root, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    clean = _doctor(root)
    assert clean.returncode == 0 and clean.stdout.strip() == "ok", clean.stdout + clean.stderr


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    return context


def test_kill_during_run_then_rebuild_and_doctor(tmp_path, busybox_image):
    root = tmp_path / "root"
    context = _context(tmp_path, f"FROM {busybox_image.ref}\nRUN echo started-run && sleep 30 && echo never\n"
                                 "RUN echo second > /second\n")
    log = tmp_path / "log"
    process = _start(root, context, log)
    # The step's own output (`#N 0.012 started-run`), not its header line,
    # which names the command before anything is mounted.
    _wait_until(lambda: re.search(rb"#\d+ [\d.]+ started-run", log.read_bytes()) is not None)
    _kill(process)
    left_on_tmpfs = [name for name in os.listdir("/dev/shm") if f"-{process.pid}-" in name]
    assert left_on_tmpfs, "the killed step's scratch dir (its config) stays until the next build"
    # the killed build left its step's snapshot mounted and unrecorded
    worker = Worker.open(root, "builtin")
    try:
        kinds = {problem.kind for problem in check(worker)}
    finally:
        worker.close()
    assert Kind.ORPHAN_SNAPSHOT in kinds and Kind.STALE_MOUNT in kinds
    context.joinpath("Dockerfile").write_text(f"FROM {busybox_image.ref}\nRUN echo started-run && echo quick\n"
                                              "RUN echo second > /second\n")
    _rebuild(root, context)
    assert not [name for name in os.listdir("/dev/shm") if f"-{process.pid}-" in name]
    _heal_and_check(root)


def test_kill_during_pull_then_rebuild_and_doctor(tmp_path, fault_proxy, busybox_image):
    root = tmp_path / "root"
    context = _context(tmp_path, f"FROM {fault_proxy.host}/busybox:latest\nRUN echo ok\n")
    fault_proxy.faults.stall_blob_after = 100_000  # the config passes whole; the layer hangs
    process = _start(root, context, tmp_path / "log")
    ingest = root / "content" / "ingest"
    _wait_until(lambda: ingest.is_dir() and any(p.stat().st_size > 0 for p in ingest.iterdir()))
    _kill(process)
    assert any(ingest.iterdir())  # the half-downloaded blob
    fault_proxy.faults.stall_blob_after = None
    _rebuild(root, context)
    _heal_and_check(root)


def test_kill_at_random_points_of_commit_and_export(tmp_path, busybox_image):
    root = tmp_path / "root"
    out = tmp_path / "image.tar"
    context = _context(tmp_path, f"FROM {busybox_image.ref}\n"
                                 "RUN dd if=/dev/urandom of=/big bs=1M count=24 2>/dev/null && echo made\n"
                                 "COPY Dockerfile /Dockerfile\n")
    chooser = random.Random(int(os.environ.get("PYBUILD_CRASH_SEED", "9")))
    for attempt in range(3):
        delay = chooser.uniform(0.3, 2.0)
        process = _start(root, context, tmp_path / f"log{attempt}", "-o", f"type=oci,dest={out}")
        time.sleep(delay)
        if process.poll() is None:
            _kill(process)
    _rebuild(root, context, "-o", f"type=oci,dest={out}")
    with tarfile.open(out) as tar:
        assert "index.json" in tar.getnames()
    _heal_and_check(root)


def test_full_filesystem_gives_a_clear_error_and_a_consistent_store(tmp_path, busybox_image):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], check=True)
    try:
        root = small / "root"
        with pytest.raises(OSError) as failed:
            build_image(tmp_path, root, f"FROM {busybox_image.ref}\nCOPY big.bin /big.bin\n",
                        files={"big.bin": os.urandom(12 << 20)}, export=False, local=False)
        assert failed.value.errno == errno.ENOSPC
        assert "No space left on device" in str(failed.value)
        worker = Worker.open(root, "builtin")
        try:
            assert check(worker) == []
        finally:
            worker.close()
        # a step filling the disk fails as a step, with its own message
        from runtime.errors import ExecFailed

        with pytest.raises(ExecFailed) as step:
            build_image(tmp_path, root, f"FROM {busybox_image.ref}\nRUN dd if=/dev/zero of=/fill bs=1M count=20\n",
                        export=False, local=False)
        assert "No space left on device" in step.value.tail
        worker = Worker.open(root, "builtin")
        try:
            assert check(worker) == []
        finally:
            worker.close()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def _processes_running(cmdline: bytes) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_kill_during_an_oci_step_then_the_next_pybuild_stops_the_step(tmp_path, busybox_image):
    """runc outlives a SIGKILLed pybuild, and so does the step it runs: the
    next pybuild finds the dead build's bundle and deletes its container."""
    require_tools("runc")
    root = tmp_path / "root"
    context = _context(tmp_path, f"FROM {busybox_image.ref}\nRUN echo started-run && sleep 47 && echo never\n")
    log = tmp_path / "log"
    command = _command(root, context)
    command[command.index("builtin")] = "oci"
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    _wait_until(lambda: re.search(rb"#\d+ [\d.]+ started-run", log.read_bytes()) is not None)
    _kill(process)
    assert _processes_running(b"sleep\x0047\x00"), "the step survives its pybuild"
    context.joinpath("Dockerfile").write_text(f"FROM {busybox_image.ref}\nRUN echo quick\n")
    _rebuild(root, context)
    _wait_until(lambda: not _processes_running(b"sleep\x0047\x00"), timeout=10)
    assert not [name for name in os.listdir("/dev/shm") if f"-{process.pid}-" in name]
    _heal_and_check(root)
