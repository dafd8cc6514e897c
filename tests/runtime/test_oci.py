"""The OCI bundle we hand to runc/crun, the shared executor helpers, and
choosing an executor. Runs through runc itself are in test_builtin.py."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from runtime.builtin import BuiltinExecutor
from runtime.executor import missing_paths, remove_stubs, resolv_conf
from runtime.executors import UnknownExecutor, available_executors, default_isolation, get_executor
from runtime.errors import RuntimeFailure
from runtime.oci import DEFAULT_CAP_NAMES, OciExecutor, build_config
from runtime.spec import BindMount, ExecSpec, NetworkMode, TmpfsMount
from runtime.users import User

ETC = {"hosts": "/state/hosts", "resolv.conf": "/state/resolv.conf"}


def config_for(spec: ExecSpec, user: User = User(0, 0)) -> dict:
    return build_config(spec, Path("/rootfs"), user, list(spec.args), ETC, False)


def test_process():
    spec = ExecSpec(("/bin/sh", "-c", "make"), env=("A=1",), cwd="work")
    process = config_for(spec, User(1000, 1000, (10, 50), "/home/app"))["process"]
    assert process["args"] == ["/bin/sh", "-c", "make"]
    assert process["env"] == ["A=1", "HOME=/home/app"]
    assert process["cwd"] == "/work"
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 50]}
    assert process["terminal"] is False
    assert process["noNewPrivileges"] is False


def test_docker_capabilities():
    caps = config_for(ExecSpec(("true",)))["process"]["capabilities"]
    assert sorted(DEFAULT_CAP_NAMES) == sorted(
        "CAP_" + name
        for name in "CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP "
        "NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE".split()
    )
    for kind in ("bounding", "effective", "permitted"):
        assert caps[kind] == DEFAULT_CAP_NAMES
    assert caps["inheritable"] == caps["ambient"] == []


def test_namespaces_follow_the_network_mode():
    host = config_for(ExecSpec(("true",)))["linux"]["namespaces"]
    none = config_for(ExecSpec(("true",), network=NetworkMode.NONE))["linux"]["namespaces"]
    assert [ns["type"] for ns in host] == ["pid", "ipc", "uts", "mount"]
    assert [ns["type"] for ns in none] == ["pid", "ipc", "uts", "mount", "network"]


def test_root_hostname_and_paths():
    config = config_for(ExecSpec(("true",), hostname="box"))
    assert config["root"] == {"path": "/rootfs", "readonly": False}
    assert config["hostname"] == "box"
    assert "/proc/kcore" in config["linux"]["maskedPaths"]
    assert "/sys/firmware" in config["linux"]["maskedPaths"]
    assert config["linux"]["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def test_mounts_in_order():
    spec = ExecSpec(
        ("true",),
        mounts=(BindMount(Path("/cache"), "/root/.cache", readonly=False), BindMount(Path("/s"), "/run/s"), TmpfsMount("/tmp", 1024)),
    )
    mounts = config_for(spec)["mounts"]
    assert [m["destination"] for m in mounts] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/root/.cache",
        "/run/s",
        "/tmp",
    ]
    by_target = {m["destination"]: m for m in mounts}
    assert "ro" in by_target["/sys"]["options"]
    assert by_target["/etc/hosts"] == {"destination": "/etc/hosts", "type": "bind", "source": "/state/hosts",
                                     "options": ["nosuid", "noexec", "nodev", "rbind", "ro"]}
    assert by_target["/root/.cache"]["options"] == ["rbind", "rw"]
    assert by_target["/run/s"]["options"] == ["rbind", "ro"]
    assert by_target["/tmp"] == {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=1024"]}


def test_seccomp_profile():
    # docker's allow-list for the step's capabilities (tests/security/test_seccomp.py)
    from runtime.seccomp import profile

    seccomp = config_for(ExecSpec(("true",)))["linux"]["seccomp"]
    assert seccomp == profile(DEFAULT_CAP_NAMES)
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO"


def test_resolv_conf_rules():
    host = "search example.com\nnameserver 127.0.0.53\noptions edns0\n"
    assert resolv_conf(host, NetworkMode.HOST) == host
    isolated = resolv_conf(host, NetworkMode.NONE)
    assert "127.0.0.53" not in isolated
    assert "search example.com" in isolated and "nameserver 8.8.8.8" in isolated
    remote = "nameserver 10.0.0.2\n"
    assert resolv_conf(remote, NetworkMode.NONE) == remote
    assert "nameserver 8.8.8.8" in resolv_conf("", NetworkMode.HOST)


def test_stubs_are_what_did_not_exist_and_only_they_are_removed(tmp_path):
    tmp_path = tmp_path / "fs"
    tmp_path.mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("keep")
    (tmp_path / "link").symlink_to("/etc")
    os.utime(tmp_path / "etc", ns=(5_000_000_000, 7_000_000_000))
    stubs = missing_paths(tmp_path, [("/etc/hosts", "file"), ("/run/a/b", "tmpfs"), ("/link/resolv.conf", "file"),
                                     ("/run/a/c", "dir"), ("/run/a/d", "dir")])
    assert [path for path, _, _ in stubs.made] == ["/run", "/run/a", "/run/a/b", "/etc/resolv.conf", "/run/a/c",
                                                   "/run/a/d"]
    assert (tmp_path / "etc" / "resolv.conf").is_file() and (tmp_path / "run" / "a" / "c").is_dir()
    # a fresh tmpfs is 1777, and runc gives a tmpfs the mode of what it covers
    assert stat.S_IMODE((tmp_path / "run" / "a" / "b").stat().st_mode) == 0o1777
    (tmp_path / "run" / "a" / "c" / "x").write_text("the step wrote this")
    (tmp_path / "run" / "a" / "d").rename(tmp_path / "run" / "a" / "moved")  # empty, but not where it was
    (tmp_path / "run" / "a" / "d").mkdir()  # the step's own: another inode
    remove_stubs(stubs)
    # The directory a stub was made in keeps the time of that change, as in
    # BuildKit 0.13; runtime.prune leaves it out of the layer when that is
    # all that changed (testdata/compat/mount-target-parent-mtime).
    assert (tmp_path / "etc").stat().st_mtime_ns > 7_000_000_000
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "etc",
        "etc/hosts",
        "link",
        "run",
        "run/a",
        "run/a/c",
        "run/a/c/x",
        "run/a/d",
        "run/a/moved",
    ]


def test_kernel_mount_points_must_be_real_directories(tmp_path):
    (tmp_path / "proc").symlink_to("/tmp")
    with pytest.raises(RuntimeFailure, match='filesystem "proc" must be mounted on ordinary directory'):
        missing_paths(tmp_path, [("/etc/hosts", "file"), ("/proc", "kernel")])
    assert sorted(os.listdir(tmp_path)) == ["proc"]  # the stubs made before are gone


def test_choosing_an_executor():
    found = available_executors()
    assert "builtin" in found
    assert isinstance(get_executor("builtin"), BuiltinExecutor)
    has_runtime = bool(shutil.which("runc") or shutil.which("crun"))
    assert ("oci" in found) == has_runtime
    assert default_isolation() == ("oci" if has_runtime else "builtin")
    if has_runtime:
        assert isinstance(get_executor("oci"), OciExecutor)
    with pytest.raises(UnknownExecutor, match="unknown executor 'vm'") as info:
        get_executor("vm")
    assert isinstance(info.value, RuntimeFailure) and isinstance(info.value, ValueError)


def test_missing_runtime():
    with pytest.raises(RuntimeFailure, match="not found"):
        OciExecutor("no-such-runtime")
