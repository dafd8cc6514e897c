"""The README's first command, `bash scripts/example.sh`: it builds
testdata/hello, runs its CMD under runc, and ends, leaving no registry
process and no work directory behind."""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _registries() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "scripts/example_registry.py"], capture_output=True, text=True)
    return set(found.stdout.split())


def test_the_example_script_builds_runs_and_ends_cleanly():
    before, work_dirs = _registries(), set(glob.glob("/tmp/pybuild-example.*"))
    done = subprocess.run(["bash", "scripts/example.sh"], cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hello from pybuild" in done.stdout
    # The registry helper stops when the script closes its stdin: a script
    # that kept it open used to hang at exit.
    assert _registries() <= before
    assert set(glob.glob("/tmp/pybuild-example.*")) <= work_dirs
