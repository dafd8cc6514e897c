import functools
import http.server
import threading

import pytest


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One pybuild root per test module: its tests share the extracted base
    image and each other's cache, as builds on one machine do."""
    return tmp_path_factory.mktemp("root")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_files(tmp_path):
    """A directory served by a real http.server on 127.0.0.1: yields (dir, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
