"""Session fixtures of the compat cases: the base image both builders
read as `busybox`, one pybuild root shared by every case, and each case's
pybuild record, built once for its [recorded] and [docker26] tests."""

from __future__ import annotations

import shutil

import pytest

from compat.builders import base_image
from compat.rebuilds import pybuild_case


@pytest.fixture(scope="session")
def compat_base(busybox_image):
    return base_image(busybox_image.ref)


@pytest.fixture(scope="session")
def compat_pybuild(compat_base, tmp_path_factory):
    """case -> pybuild's record of it. One root for all cases but those with
    rebuilds: a cache hit must give what a fresh build gives, so sharing
    hides nothing a record shows, and it spares every case the base
    image's extraction."""
    top = tmp_path_factory.mktemp("compat")
    root = top / "root"
    records = {}

    def record(case):
        if case.name not in records:
            work = top / case.name
            try:
                records[case.name] = pybuild_case(case, compat_base, root, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return records[case.name]
    yield record
    shutil.rmtree(top, ignore_errors=True)
