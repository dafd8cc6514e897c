"""`--no-cache` runs every step again over results already cached: what
the earlier build kept must still be accounted for, so `pybuild doctor`
stays clean (issue 14 follow-up, red-team finding)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pybuild(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_two_no_cache_builds_leave_doctor_clean(tmp_path, busybox_image):
    root = tmp_path / "root"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nRUN echo same > /same\n")
    for _ in range(2):
        done = _pybuild("build", "-q", "--root", str(root), "--isolation", "builtin", "--no-cache", str(context))
        assert done.returncode == 0, done.stderr
    _assert_doctor_clean(root)
    # the replaced record is GC's to drop, as BuildKit's cache keeps it
    done = _pybuild("prune", "--all", "--root", str(root))
    assert done.returncode == 0, done.stderr
    _assert_doctor_clean(root)
    assert [p.name for p in (root / "snapshots").iterdir() if not p.name.startswith(".")] == []


def _assert_doctor_clean(root: Path) -> None:
    doctor = _pybuild("doctor", "--root", str(root))
    assert doctor.returncode == 0 and doctor.stdout.strip() == "ok", doctor.stdout + doctor.stderr


def test_doctor_names_a_stray_mount_under_the_root_and_fix_removes_it(tmp_path):
    from builder.root import doctor
    from builder.root.worker import Worker
    from runtime import linux

    worker = Worker.open(tmp_path / "root", "builtin")
    try:
        # A space and a tab in the name: mountinfo escapes both, and the
        # check must still name the real path.
        point = worker.root / "snapshots" / "stray mount\tpoint"
        point.mkdir()
        linux.mount("tmpfs", str(point), "tmpfs")
        try:
            found = [str(p) for p in doctor.check(worker)]
            assert f"stale mount: {point.resolve()}" in found
            doctor.check(worker, fix=True)
            assert not os.path.ismount(point)
        finally:
            if os.path.ismount(point):
                linux.umount(str(point), linux.MNT_DETACH)
    finally:
        worker.close()
