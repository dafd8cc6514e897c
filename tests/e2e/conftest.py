import pytest


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One pybuild root per test module: its tests share the extracted base
    image and each other's cache, as builds on one machine do."""
    return tmp_path_factory.mktemp("root")
