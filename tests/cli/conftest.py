"""Fixtures of the CLI tests: `pybuild` run as a user runs it (a real
subprocess), with a root and a config home of its own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # cli_helpers

from cli_helpers import Cli, cli_env  # noqa: E402


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory) -> Path:
    """One root per test module: the base image is pulled once."""
    return tmp_path_factory.mktemp("cli-root") / "root"


@pytest.fixture
def cli(tmp_path, shared_root) -> Cli:
    return Cli(shared_root, cli_env(tmp_path))


