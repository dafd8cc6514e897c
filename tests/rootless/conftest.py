"""Fixtures of the rootless tests: `rootless` runs the real `pybuild` as an
ordinary user with a subordinate id range (tests/fixtures/rootless.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # rootless_helpers

from fixtures import rootless as _rootless  # noqa: E402


@pytest.fixture(scope="session")
def rootless_host():
    yield from _rootless.rootless_host_fixture()


@pytest.fixture
def rootless(rootless_host):
    """pybuild as the user, with a HOME of this test's own; fails the test
    if a process, temp file or mount of the user is left after it."""
    yield from _rootless.rootless_fixture(rootless_host)


@pytest.fixture
def nosubid(rootless_host):
    """pybuild as the second user, which has no subordinate ids."""
    yield from _rootless.rootless_fixture(rootless_host, rootless_host.nosubid_user)
