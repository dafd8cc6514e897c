"""The chroot executor (`--isolation chroot`): a chroot and whichever
namespaces this process may create, for where the builtin sandbox and runc
cannot work, as buildah's chroot isolation.

Root of a docker or podman container without --privileged may neither
mount nor unshare (docker's seccomp profile refuses both without
CAP_SYS_ADMIN), and the kernel's overlayfs is out of reach there too: the
root's snapshots are then copies (runtime/snapshotters.py), and a step can
only be chrooted into its copy. docs/isolation.md says what this gives and
what it does not.

A probe (`permitted_namespaces`, run once per process in the helper) tells
which of the uts, ipc, net, pid and mount namespaces a child may unshare.
With a mount namespace the step gets what the builtin sandbox mounts (/proc,
/sys, /dev, /etc/hosts, /etc/resolv.conf, its RUN mounts, docker's masks),
through the same helpers (runtime/sandbox_mounts.py). Without one nothing is
mounted: a step with RUN --mount fails, naming why; /dev gets device nodes
made with mknod (CAP_MKNOD is in docker's default set) and /dev/shm a
directory, /etc/hosts and /etc/resolv.conf files with the generated content
where the image has none; all of it is removed after the step, each only if
it is still the inode made, so the layer is what the other executors give.
"""

from __future__ import annotations

import functools
import os
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from runtime.confine import Tree
from runtime.executor import (
    ExecCancelled,
    RunSet,
    SandboxFailed,
    Stubs,
    Tail,
    check_spec,
    make_workdir,
    missing_paths,
    mount_targets,
    pump,
    remove_stubs,
    remove_tree,
    scratch_dir,
    write_etc_files,
)
from runtime.limits import run_limited
from runtime.spec import ExecSpec, NetworkMode, OutputSink
from runtime.step_helper import HelperStatus, helper_config
from runtime.users import User, resolve_user

__all__ = ["ChrootExecutor", "NAMESPACE_NAMES", "permitted_namespaces"]

_HELPER = str(Path(__file__).with_name("chroot_helper.py"))
NAMESPACE_NAMES = ("uts", "ipc", "net", "pid", "mount")
_PROBE_TIMEOUT = 30.0

# Without mounts: the devices the other executors bind from the host (the
# runtime-spec's default devices but ptmx, which needs a devpts), made
# with mknod; the mount points made for them otherwise. /proc and /sys are
# made as the other executors make them (they stay in the layer), though
# nothing is mounted there.
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_UNMOUNTED_TARGETS = (("/proc", "kernel"), ("/sys", "kernel"), ("/dev", "kernel"), ("/dev/shm", "tmpfs"),
                      ("/etc/hosts", "file"), ("/etc/resolv.conf", "file"))


@functools.lru_cache(maxsize=None)
def permitted_namespaces() -> frozenset[str]:
    """The namespaces (of NAMESPACE_NAMES) a child of this process may
    unshare; "mount" when mount(2) works in it too. Asked once per process:
    the answer depends on its capabilities, seccomp filter and user
    namespace, none of which change while it runs."""
    try:
        found = subprocess.run([sys.executable, "-S", "-E", _HELPER, "--probe"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=_PROBE_TIMEOUT, check=False, env={})
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    if found.returncode != 0:
        return frozenset()
    return frozenset(found.stdout.split()) & frozenset(NAMESPACE_NAMES)


class ChrootExecutor:
    name = "chroot"

    def __init__(self, scratch: Path | None = None, no_new_privileges: bool = False,
                 namespaces: Iterable[str] | None = None):
        """`scratch` and `no_new_privileges` as BuiltinExecutor's.
        `namespaces`: use at most these (default: every one the probe
        finds permitted); a host where they are all permitted can thus run
        a step as a container that permits none would."""
        self._scratch = scratch
        self._no_new_privileges = no_new_privileges
        self._allowed = None if namespaces is None else frozenset(namespaces)
        self._runs = RunSet()

    def namespaces(self) -> frozenset[str]:
        permitted = permitted_namespaces()
        return permitted if self._allowed is None else permitted & self._allowed

    def cancel(self) -> None:
        """Kill every step in flight; each `run` raises ExecCancelled."""
        self._runs.cancel_all()

    def run(self, spec: ExecSpec, rootfs: Path, output: OutputSink) -> None:
        check_spec(spec)
        rootfs = Path(os.path.abspath(rootfs))
        permitted = self.namespaces()
        mounting = "mount" in permitted
        _check_possible(spec, permitted, rootfs)
        user = resolve_user(rootfs, spec.user)
        stubs = missing_paths(rootfs, mount_targets(spec) if mounting else _UNMOUNTED_TARGETS)
        work = scratch_dir(self._scratch, "pybuild-exec-")
        planted = None
        try:
            make_workdir(rootfs, spec.cwd, user.uid, user.gid)
            etc = write_etc_files(work, spec)
            if not mounting:
                planted = _plant(rootfs, stubs, etc)
            config = self._config(spec, rootfs, user, etc, permitted)
            run_limited(spec.limits, work, config, lambda path: self._supervise(spec, path, output))
        finally:
            if planted is not None:
                _unplant(rootfs, planted)
            remove_stubs(stubs)
            remove_tree(work)

    def _config(self, spec: ExecSpec, rootfs: Path, user: User, etc: dict[str, str],
                permitted: frozenset[str]) -> dict:
        namespaces = [name for name in ("uts", "ipc", "pid", "mount") if name in permitted]
        if spec.network is NetworkMode.NONE:
            namespaces.append("net")
        return {**helper_config(spec, rootfs, user, etc, self._no_new_privileges),
                "namespaces": namespaces, "mount": "mount" in namespaces}

    def _supervise(self, spec: ExecSpec, config_path: Path, output: OutputSink) -> None:
        out_read, out_write = os.pipe()
        status_read, status_write = os.pipe()
        life_read, life_write = os.pipe()
        try:
            helper = subprocess.Popen(
                [sys.executable, "-S", "-E", _HELPER, str(config_path), str(status_write), str(life_read)],
                stdin=subprocess.DEVNULL, stdout=out_write, stderr=out_write, pass_fds=(status_write, life_read),
                # An empty environment: without a pid namespace and its own
                # /proc, a step that leaves the chroot could read the
                # helper's /proc/PID/environ, and pybuild's may hold
                # credentials (buildah's CVE-2021-3602). The step's own
                # environment is in the config.
                env={},
            )
        except OSError as exc:
            for fd in (out_read, status_read, life_write):
                os.close(fd)
            raise SandboxFailed(f"starting the chroot helper: {exc}") from exc
        finally:
            for fd in (out_write, status_write, life_read):
                os.close(fd)
        lifeline = _Lifeline(life_write)
        token = self._runs.add(lifeline.cut)
        status = HelperStatus("chroot helper")
        tail = Tail()
        try:
            pump(out_read, output, tail, status_read, status.read)
            helper.wait()
        finally:
            # whatever happened (KeyboardInterrupt included): the helper
            # kills every process of the step, then exits
            lifeline.cut()
            helper.wait()
            os.close(out_read)
            os.close(status_read)
            cancelled = self._runs.remove(token)
        if cancelled:
            raise ExecCancelled(spec.args)
        status.raise_for(spec.args, tail.text(), helper.returncode)


def _check_possible(spec: ExecSpec, permitted: frozenset[str], rootfs: Path) -> None:
    """Refuse, with the reason, a step this host cannot give what it asks."""
    if "mount" not in permitted and os.statvfs(rootfs).f_flag & os.ST_NODEV:
        # Without mounts the step's /dev/null is a node in the rootfs, which
        # no one can open there: every `> /dev/null` would fail, obscurely.
        raise SandboxFailed(f"the step's rootfs {rootfs} is on a filesystem mounted nodev (a volume?), where "
                            "--isolation chroot without mounts cannot give the step /dev/null: put pybuild's "
                            "root (--root) on a filesystem without nodev, such as the container's own")
    if spec.mounts and "mount" not in permitted:
        targets = ", ".join(mount.target for mount in spec.mounts)
        raise SandboxFailed(f"RUN --mount ({targets}) needs mount(2), which this process may not use "
                            "(no CAP_SYS_ADMIN, or a seccomp profile refusing it: an unprivileged container?); "
                            "--isolation chroot runs such a step only where mounts are permitted")
    if spec.network is NetworkMode.NONE and "net" not in permitted:
        raise SandboxFailed("--network=none needs a network namespace, which this process may not create "
                            "(an unprivileged container?); --isolation chroot would give the step "
                            "the container's network instead, so it refuses")


class _Lifeline:
    """The write end of the helper's lifeline: closing it, once, from any
    thread, has the helper kill the step."""

    def __init__(self, fd: int):
        self._fd = fd
        self._lock = threading.Lock()

    def cut(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1




# --- /dev and /etc without mounts --------------------------------------------


@dataclass(frozen=True)
class _Planted:
    """What `_plant` put in a rootfs: device nodes in /dev (name, st_dev,
    st_ino), /dev's own (st_dev, st_ino, atime_ns, mtime_ns) before, and
    the /etc stubs it filled (image path, st_dev, st_ino)."""

    devices: tuple[tuple[str, int, int], ...]
    dev_times: tuple[int, int, int, int] | None
    filled: tuple[tuple[str, int, int], ...]


def _plant(rootfs: Path, stubs: Stubs, etc: dict[str, str]) -> _Planted:
    """Device nodes the image's /dev lacks, and the generated hosts and
    resolv.conf in the empty stubs `missing_paths` made for them (an
    image's own file is left as it is: it cannot be covered)."""
    made = {path: (dev, ino) for path, dev, ino in stubs.made}
    devices: list[tuple[str, int, int]] = []
    filled: list[tuple[str, int, int]] = []
    with Tree(rootfs) as tree:
        dev_fd = tree.open_exact("/dev", os.O_RDONLY | os.O_DIRECTORY)
        try:
            before = os.fstat(dev_fd)
            dev_times = (before.st_dev, before.st_ino, before.st_atime_ns, before.st_mtime_ns)
            for name in _DEVICES:
                made_node = _make_device(dev_fd, name)
                if made_node is not None:
                    devices.append((name, *made_node))
        finally:
            os.close(dev_fd)
        for name in ("hosts", "resolv.conf"):
            path = tree.join("/etc/" + name)  # as missing_paths named it
            if path not in made:
                continue
            fd = tree.open_exact(path, os.O_WRONLY)
            try:
                info = os.fstat(fd)
                if (info.st_dev, info.st_ino) != made[path]:
                    continue
                os.fchmod(fd, 0o644)
                os.write(fd, Path(etc[name]).read_bytes())
                filled.append((path, info.st_dev, info.st_ino))
            finally:
                os.close(fd)
    return _Planted(tuple(devices), dev_times, tuple(filled))


def _make_device(dev_fd: int, name: str) -> tuple[int, int] | None:
    """mknod of the host's /dev/`name` in `dev_fd`, mode 0666 as runc makes
    them; None when the host has none, the image has that name already, or
    mknod is refused (no CAP_MKNOD, a user namespace)."""
    try:
        host = os.lstat("/dev/" + name)
    except OSError:
        return None
    if not stat.S_ISCHR(host.st_mode):
        return None
    try:
        os.mknod(name, stat.S_IFCHR | 0o600, host.st_rdev, dir_fd=dev_fd)
    except (FileExistsError, PermissionError):
        return None
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISCHR(info.st_mode):
            return None  # replaced already: not ours
        # through the fd: the mknod mode went through pybuild's umask
        os.chmod(f"/proc/self/fd/{fd}", 0o666)
        return info.st_dev, info.st_ino
    finally:
        os.close(fd)


def _unplant(rootfs: Path, planted: _Planted) -> None:
    """Undo `_plant`: each node and filled stub only if it is still the
    inode made (a step may have replaced it: then it is the step's); the
    filled stubs are emptied for remove_stubs to remove; /dev's times are
    put back so that an untouched /dev is no part of the layer."""
    try:
        tree = Tree(rootfs)
    except OSError:
        return
    with tree:
        for path, dev, ino in planted.filled:
            # Known to be the file made before it is opened for writing: a
            # step may have put a FIFO there (an open for writing would
            # wait for a reader for ever) or a device node.
            try:
                found = tree.open_exact(path, os.O_PATH)
            except OSError:
                continue
            try:
                info = os.fstat(found)
                if (info.st_dev, info.st_ino) != (dev, ino) or not stat.S_ISREG(info.st_mode):
                    continue
                fd = os.open(f"/proc/self/fd/{found}", os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                continue
            finally:
                os.close(found)
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)
        try:
            dev_fd = tree.open_exact("/dev", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            for name, dev, ino in planted.devices:
                try:
                    info = os.lstat(name, dir_fd=dev_fd)
                    if (info.st_dev, info.st_ino) == (dev, ino) and stat.S_ISCHR(info.st_mode):
                        os.unlink(name, dir_fd=dev_fd)
                except OSError:
                    continue
            now = os.fstat(dev_fd)
            if planted.dev_times is not None and (now.st_dev, now.st_ino) == planted.dev_times[:2]:
                os.utime(dev_fd, ns=planted.dev_times[2:])
        finally:
            os.close(dev_fd)
