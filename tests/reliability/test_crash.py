"""A root on a full filesystem: a clear error, and a consistent store.
(`kill -9` of pybuild at chosen and random points: test_kill.py.)"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from builder.errors import StepFailed
from builder.root.doctor import check
from builder.root.worker import Worker
from e2e.helpers import build_image


def test_full_filesystem_gives_a_clear_error_and_a_consistent_store(tmp_path, busybox_image):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], check=True)
    try:
        root = small / "root"
        with pytest.raises(StepFailed) as failed:
            build_image(tmp_path, root, f"FROM {busybox_image.ref}\nCOPY big.bin /big.bin\n",
                        files={"big.bin": os.urandom(12 << 20)}, export=False, local=False)
        assert isinstance(failed.value.cause, OSError) and failed.value.cause.errno == errno.ENOSPC
        assert "No space left on device" in str(failed.value)
        worker = Worker.open(root, "builtin")
        try:
            assert check(worker) == []
        finally:
            worker.close()
        # a step filling the disk fails as a step, with its own message
        from runtime.errors import ExecFailed

        with pytest.raises(StepFailed) as step:
            build_image(tmp_path, root, f"FROM {busybox_image.ref}\nRUN dd if=/dev/zero of=/fill bs=1M count=20\n",
                        export=False, local=False)
        assert isinstance(step.value.cause, ExecFailed)
        assert "No space left on device" in step.value.cause.tail
        worker = Worker.open(root, "builtin")
        try:
            assert check(worker) == []
        finally:
            worker.close()
    finally:
        subprocess.run(["umount", str(small)], check=True)
