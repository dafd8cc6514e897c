"""Resource limits of RUN (--memory, --cpus/--cpu-quota, --pids-limit,
--ulimit), enforced by real cgroups with both executors."""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path

import pytest

from builder.build import build
from builder.errors import PybuildError, StepFailed
from e2e.helpers import build_image
from runtime.errors import ExecFailed
from runtime.limits import Limits, OutOfMemory, StepCgroup, parse_memory, parse_ulimit
from runtime.oci import build_config
from runtime.spec import ExecSpec
from runtime.users import User

ISOLATIONS = ["builtin", "oci"]


def _no_step_cgroups_left():
    left = [p for p in glob.glob("/sys/fs/cgroup/**/pybuild-*", recursive=True)]
    assert left == []


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_memory_hog_is_oom_killed_with_a_clear_error(tmp_path, busybox_image, isolation):
    dockerfile = f"FROM {busybox_image.ref}\nRUN x=\"$(head -c 300000000 /dev/zero | tr '\\0' a)\"; echo survived\n"
    with pytest.raises(StepFailed) as failed:
        build_image(tmp_path, tmp_path / "root", dockerfile, memory="48m", isolation=isolation,
                    export=False, local=False)
    assert isinstance(failed.value.cause, OutOfMemory)
    message = str(failed.value)
    assert "did not complete successfully" in message and "out of memory" in message
    assert "memory limit 48MiB (--memory)" in message
    _no_step_cgroups_left()


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_fork_bomb_with_pids_limit_fails_without_harming_the_host(tmp_path, busybox_image, isolation):
    dockerfile = f"FROM {busybox_image.ref}\nRUN bomb() {{ bomb | bomb; }}; bomb\n"
    with pytest.raises(StepFailed) as failed:
        build_image(tmp_path, tmp_path / "root", dockerfile, pids_limit=32, isolation=isolation,
                    export=False, local=False)
    assert isinstance(failed.value.cause, ExecFailed) and not isinstance(failed.value.cause, OutOfMemory)
    # the host still forks, and nothing of the bomb is left (no_leaks checks our children)
    assert subprocess.run(["true"], timeout=10).returncode == 0
    _no_step_cgroups_left()


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_ulimit_and_limits_within_bounds_let_the_step_run(tmp_path, busybox_image, isolation):
    dockerfile = f"FROM {busybox_image.ref}\nRUN ulimit -n > /limits && ulimit -Hn >> /limits && echo ok\n"
    built = build_image(tmp_path, tmp_path / "root", dockerfile, isolation=isolation, memory="256m",
                        cpus="0.5", pids_limit=64, ulimits=["nofile=256:512"], export=False)
    assert built.read_text("/limits") == "256\n512\n"
    _no_step_cgroups_left()


def test_step_cgroup_writes_cpu_memory_and_pids_limits():
    cgroup = StepCgroup(Limits(memory=64 << 20, cpu_quota=50_000, cpu_period=100_000, pids=10))
    try:
        files = {Path(p).parent for p in cgroup.procs_files}
        values = {}
        for directory in files:
            for name in ("memory.limit_in_bytes", "memory.max", "cpu.cfs_quota_us", "cpu.max", "pids.max"):
                if (directory / name).exists():
                    values[name] = (directory / name).read_text().strip()
        assert values.get("memory.limit_in_bytes", values.get("memory.max")) == str(64 << 20)
        assert values.get("cpu.cfs_quota_us") == "50000" or values.get("cpu.max") == "50000 100000"
        assert values["pids.max"] == "10"
    finally:
        cgroup.close()
    _no_step_cgroups_left()


def test_oci_config_carries_resources_and_rlimits(tmp_path):
    limits = Limits(memory=64 << 20, cpu_quota=50_000, pids=10, ulimits=(parse_ulimit("nproc=100:200"),))
    config = build_config(ExecSpec(("true",), limits=limits), tmp_path, User(0, 0, (), "/root"), ["true"],
                          {"hosts": "/h", "resolv.conf": "/r"}, False)
    resources = config["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert resources["cpu"] == {"period": 100_000, "quota": 50_000}
    assert resources["pids"] == {"limit": 10}
    assert resources["devices"] == [{"allow": False, "access": "rwm"}]
    assert {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200} in config["process"]["rlimits"]


@pytest.mark.parametrize("kwargs, message", [
    ({"memory": "lots"}, "invalid size"),
    ({"memory": "1m"}, "the minimum is 6MiB"),
    ({"cpus": "0.5", "cpu_quota": 10000}, "cannot be used together"),
    ({"pids_limit": 0}, "must be positive"),
    ({"ulimits": ["nofile=10:5"]}, "soft limit must not exceed"),
    ({"ulimits": ["bogus=1"]}, "expected NAME=SOFT[:HARD]"),
])
def test_invalid_limits_are_refused_before_building(tmp_path, kwargs, message):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(PybuildError) as failed:
        build(tmp_path, root=tmp_path / "root", **kwargs)
    assert message in str(failed.value)
    assert not (tmp_path / "root").exists()


def test_parse_memory_units():
    assert parse_memory("512m") == 512 << 20
    assert parse_memory("1G") == 1 << 30
    assert parse_memory("1048576") == 1 << 20
    assert parse_memory("1.5k") == 1536
