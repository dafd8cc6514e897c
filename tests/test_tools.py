"""A missing tool never lets a CI run pass by testing nothing: under CI or
PYBUILD_TEST_STRICT=1 it fails the tests that need it (fixtures/tools.py),
and setup installs every tool the suite asks for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.tools import PACKAGES

REPO = Path(__file__).resolve().parents[1]


def _apt_packages() -> set[str]:
    lines = (REPO / "scripts" / "apt-packages.txt").read_text().splitlines()
    return {line.split("#", 1)[0].strip() for line in lines} - {""}


def test_setup_installs_every_tool_the_suite_requires():
    assert set(PACKAGES.values()) <= _apt_packages()


def test_ci_installs_what_the_setup_script_lists():
    """One package list: .ci/run runs scripts/setup.sh, which reads it."""
    ci = (REPO / ".ci" / "run").read_text()
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "bash scripts/setup.sh" in ci and "apt-get install" not in ci
    assert "scripts/apt-packages.txt" in setup


def _run_with_tools_missing(tmp_path, **env) -> subprocess.CompletedProcess:
    """A one-test suite that needs skopeo and docker-registry, run on a
    machine whose PATH has neither (nor anything else)."""
    (tmp_path / "test_needs_tools.py").write_text(
        "from fixtures.tools import require_tools\n\n"
        "def test_needs_tools():\n"
        "    require_tools('skopeo', 'docker-registry')\n")
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "PYBUILD_TEST_STRICT")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "-c", os.devnull, str(tmp_path / "test_needs_tools.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**clean, "PATH": str(empty_path), "PYTHONPATH": str(REPO / "tests"), **env})


@pytest.mark.parametrize("env", [{"CI": "true"}, {"PYBUILD_TEST_STRICT": "1"}])
def test_missing_tool_fails_the_run_in_strict_mode(tmp_path, env):
    done = _run_with_tools_missing(tmp_path, **env)
    assert done.returncode == 1, done.stdout
    assert "required tool missing: skopeo, docker-registry not installed" in done.stdout
    assert "apt-get install docker-registry skopeo" in done.stdout
    assert "1 failed" in done.stdout.splitlines()[-1]


@pytest.mark.parametrize("env", [{}, {"CI": "false"}])
def test_missing_tool_skips_with_its_name_elsewhere(tmp_path, env):
    done = _run_with_tools_missing(tmp_path, **env)
    assert done.returncode == 0, done.stdout
    # -ra's summary says what was skipped and why.
    assert "SKIPPED [1] test_needs_tools.py:4: skopeo, docker-registry not installed" in done.stdout
    assert "1 skipped" in done.stdout.splitlines()[-1]

