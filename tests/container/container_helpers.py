"""Helpers of the in-container tests: root's pybuild run as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from fixtures.pybuild import pybuild_env

# The console script beside this Python when the venv is not on PATH.
PYBUILD = shutil.which("pybuild") or str(Path(sys.executable).with_name("pybuild"))


def run_pybuild(root: Path, *args: str, env_home: Path, extra_env: dict | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """Root's `pybuild --root ROOT ARGS`, with a config home of `env_home`."""
    return subprocess.run([PYBUILD, "--root", str(root), *args], env=pybuild_env(env_home, **(extra_env or {})),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
