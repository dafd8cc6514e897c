"""Fixtures of the CLI tests: `pybuild` run as a user runs it (a real
subprocess), with a root and a config home of its own."""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # cli_helpers

from cli_helpers import Cli  # noqa: E402
from fixtures.pybuild import pybuild_env  # noqa: E402


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory) -> Path:
    """One root per test module: the base image is pulled once."""
    return tmp_path_factory.mktemp("cli-root") / "root"


@pytest.fixture
def cli(tmp_path, shared_root) -> Cli:
    return Cli(shared_root, pybuild_env(tmp_path))


@pytest.fixture
def http_dir(tmp_path):
    """A static HTTP server on loopback serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()
