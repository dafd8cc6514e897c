"""Every testdata/compat case, built by pybuild and compared with docker 26
(BuildKit 0.13): `[NAME-recorded]` against the case's expected.json, which
tests/compat/record.py wrote from docker 26 (no docker needed), and
`[NAME-docker26]` against docker 26 live (the docker26_multiplatform
fixture: containerd's store and buildx), which must also still give what
expected.json holds. A case judged by the reference
has its expected.json written by hand and no live test: BuildKit 0.13
refuses what it tests (tests/compat/README.md).

A case's known_differences (case.json) are differences of pybuild's not
fixed yet: the test xfails when exactly those are found, and fails on any
other, or when one of them is gone (the fix then drops it from the case)."""

from __future__ import annotations

import shutil

import pytest

from compat.cases import all_cases
from compat.compare import differences, stale, unexplained
from compat.rebuilds import docker_case

CASES = all_cases()
PARAMS = [pytest.param(case, "recorded", id=f"{case.name}-recorded") for case in CASES] + [
    pytest.param(case, "docker26", id=f"{case.name}-docker26") for case in CASES if case.judge == "docker26"]


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
        try:
            want, against = docker_case(case, compat_base, oracle, tmp_path / "docker"), "docker 26"
        finally:
            shutil.rmtree(tmp_path / "docker", ignore_errors=True)
        if case.expected_path.exists():
            old = stale(case, case.expected(), want)
            assert not old, (f"{case.name}: expected.json is not what docker 26 gives now "
                             f"(python tests/compat/record.py {case.path}):\n"
                             + "\n".join(f"- {key}: {text}" for key, text in old.items()))
    failure = unexplained(case, against, differences(case, want, compat_pybuild(case)))
    assert not failure, failure
    if case.known_differences:
        pytest.xfail("known differences: " + "; ".join(f"{key}: {why}"
                                                        for key, why in case.known_differences.items()))
