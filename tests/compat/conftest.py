"""Session fixtures of the compat cases: the base image both builders
read as `busybox`, one pybuild root shared by every case, and each case's
pybuild record, built once for its [recorded] and [docker26] tests."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from compat.builders import base_image
from compat.cases import Case
from compat.rebuilds import pybuild_case

# pybuild processes at once (PYBUILD_COMPAT_WORKERS): a case's build
# waits on files and processes for half its time, so one more than the
# cores keeps them busy.
WORKERS = int(os.environ.get("PYBUILD_COMPAT_WORKERS", str((os.cpu_count() or 2) + 1)))


@pytest.fixture(scope="session")
def compat_base(busybox_image):
    return base_image(busybox_image.ref)


def _selected_cases(session) -> list:
    found = {}
    for item in session.items:
        case = getattr(item, "callspec", None) and item.callspec.params.get("case")
        # Other tests of the session may name a parameter `case` too.
        if isinstance(case, Case):
            found.setdefault(case.name, case)
    return list(found.values())


@pytest.fixture(scope="session")
def compat_pybuild(compat_base, tmp_path_factory, request):
    """case -> pybuild's record of it (raising what its build raised).

    A test asking for its case's record builds it together with the next
    cases its session will ask for, WORKERS at once, all done before it
    returns: no pybuild outlives the test that started it (its leak check
    would count it), and none of them waits on another. One root for all
    cases but those with rebuilds: processes may share a root, a cache hit
    must give what a fresh build gives, so sharing hides nothing a record
    shows, and it spares every case the base image's extraction."""
    top = tmp_path_factory.mktemp("compat")
    root = top / "root"
    order = _selected_cases(request.session)
    records = {}

    def build(case):
        work = top / case.name
        try:
            return pybuild_case(case, compat_base, root, work)
        except Exception as exc:  # the case's own test reports it
            return exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def record(case):
        if case.name not in records:
            at = next((n for n, other in enumerate(order) if other.name == case.name), None)
            # The first build extracts the base into the shared root alone.
            batch = [case] if at is None or not records else [
                other for other in order[at:] if other.name not in records][:max(1, WORKERS)]
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                records.update(zip([other.name for other in batch], pool.map(build, batch)))
        if isinstance(records[case.name], Exception):
            raise records[case.name]
        return records[case.name]
    yield record
    shutil.rmtree(top, ignore_errors=True)
