"""Every testdata/compat case, built by pybuild and compared with docker 26
(BuildKit 0.13): `[NAME-recorded]` against the case's expected.json, which
tests/compat/record.py wrote from docker 26 (no docker needed), and
`[NAME-docker26]` against docker 26 live (the docker26_multiplatform
fixture: containerd's store and buildx). A case judged by the reference
has its expected.json written by hand and no live test: BuildKit 0.13
refuses what it tests (tests/compat/README.md)."""

from __future__ import annotations

import pytest

from compat.builders import docker_record
from compat.cases import all_cases, prepare
from compat.compare import differences, report

CASES = all_cases()


def _param(case, against):
    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, against, id=f"{case.name}-{against}", marks=marks)


PARAMS = [_param(case, "recorded") for case in CASES] + [
    _param(case, "docker26") for case in CASES if case.judge == "docker26"]


@pytest.fixture(scope="session")
def oracle(request):
    """None for the recorded expectations, else the live docker 26. A
    session fixture, so its daemon starts before a test's leak check
    looks at the processes and mounts there are."""
    if request.param == "recorded":
        return None
    return request.getfixturevalue("docker26_multiplatform")


@pytest.mark.parametrize(("case", "oracle"), PARAMS, indirect=["oracle"])
def test_case(case, oracle, compat_pybuild, compat_base, tmp_path):
    if oracle is None:
        want, against = case.expected(), "the recorded docker 26"
    else:
        work = tmp_path / "docker"
        want, against = docker_record(prepare(case, work), compat_base, oracle.argv, oracle.env, work), "docker 26"
    found = differences(case, want, compat_pybuild(case))
    assert not found, report(case, against, found)
