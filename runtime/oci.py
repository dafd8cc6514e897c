"""The OCI executor: a runtime-spec bundle run by runc or crun.

Each run writes `config.json` into a temporary bundle directory (outside the
rootfs, whose path is `root.path`), keeps the runtime's state under a `--root`
of its own in that directory, and runs `RUNTIME run --bundle DIR ID` in the
foreground, so that the step's stdout and stderr are the runtime's: a pipe we
read. The runtime runs under runtime/supervise.py, which stops the
container when pybuild cancels the step or dies. What the spec holds
follows docker's defaults (moby oci/defaults.go) as BuildKit's runc
executor uses them.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

from runtime.confine import Tree
from runtime.errors import ExecFailed
from runtime.executor import (
    DEFAULT_PATH,
    ExecCancelled,
    RunSet,
    SandboxFailed,
    Tail,
    check_spec,
    make_workdir,
    missing_paths,
    mount_targets,
    process_env,
    pump,
    remove_stubs,
    remove_tree,
    scratch_dir,
    write_etc_files,
)
from runtime.sandbox_mounts import MASKED_PATHS, MASKED_PROC_HINT, READONLY_PATHS
from runtime.sandbox import DEFAULT_CAPS
from runtime.limits import OutOfMemory, oci_resources, oci_rlimits, require_cgroups, require_raisable
from runtime.lifeline import Supervised
from runtime.supervise import write_record
from runtime.spec import BindMount, ExecSpec, NetworkMode, OutputSink
from runtime.users import User, resolve_user
from runtime.userns import CAP_SYS_RESOURCE, has_capability, in_user_namespace

__all__ = ["OciExecutor", "find_runtime", "build_config"]

RUNTIMES = ("runc", "crun")
_NOFILE = 1048576

_CAP_NAMES = {
    0: "CAP_CHOWN",
    1: "CAP_DAC_OVERRIDE",
    3: "CAP_FOWNER",
    4: "CAP_FSETID",
    5: "CAP_KILL",
    6: "CAP_SETGID",
    7: "CAP_SETUID",
    8: "CAP_SETPCAP",
    10: "CAP_NET_BIND_SERVICE",
    13: "CAP_NET_RAW",
    18: "CAP_SYS_CHROOT",
    27: "CAP_MKNOD",
    29: "CAP_AUDIT_WRITE",
    31: "CAP_SETFCAP",
}
DEFAULT_CAP_NAMES = [_CAP_NAMES[cap] for cap in DEFAULT_CAPS]


def find_runtime() -> str | None:
    """The first OCI runtime on PATH, runc preferred."""
    for name in RUNTIMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class OciExecutor:
    name = "oci"

    def __init__(self, runtime: str = "runc", scratch: Path | None = None, no_new_privileges: bool = False):
        """`runtime`: "runc", "crun" or a path to either. `scratch` and
        `no_new_privileges` as for BuiltinExecutor."""
        path = runtime if os.sep in runtime else shutil.which(runtime)
        if not path:
            raise SandboxFailed(f"OCI runtime {runtime!r} not found on PATH")
        self.runtime = path
        self._scratch = scratch
        self._no_new_privileges = no_new_privileges
        self._runs = RunSet()

    def cancel(self) -> None:
        """Kill every step this executor is running; each `run` raises
        ExecCancelled. Safe from any thread."""
        self._runs.cancel_all()

    def run(self, spec: ExecSpec, rootfs: Path, output: OutputSink) -> None:
        check_spec(spec)
        require_raisable(spec.limits)
        if in_user_namespace():
            require_cgroups(spec.limits)
        rootfs = Path(os.path.abspath(rootfs))
        user = resolve_user(rootfs, spec.user)
        args = _lookup_without_path(rootfs, spec)
        stubs = missing_paths(rootfs, mount_targets(spec))
        bundle = scratch_dir(self._scratch, "pybuild-oci-")
        try:
            make_workdir(rootfs, spec.cwd, user.uid, user.gid)
            config = build_config(spec, rootfs, user, args, write_etc_files(bundle, spec), self._no_new_privileges)
            (bundle / "config.json").write_text(json.dumps(config, indent=1))
            self._supervise(spec, bundle, output)
        finally:
            remove_stubs(stubs)
            remove_tree(bundle)

    def _supervise(self, spec: ExecSpec, bundle: Path, output: OutputSink) -> None:
        container_id = "pybuild-" + uuid.uuid4().hex[:16]
        write_record(str(bundle), self.runtime, container_id)
        # The runtime's own log goes to a file, as BuildKit has it: the step's
        # output then shows a failure as one plain line ("runc run failed:
        # ..."), not as a logrus `time=... level=error msg=...` record.
        command = [self.runtime, "--root", str(bundle / "state"), "--log", str(bundle / "runtime.log"),
                   "--log-format", "json", "run", "--bundle", str(bundle), container_id]
        out_read, out_write = os.pipe()
        try:
            # under the supervisor: stop() (a cancel) or pybuild's death,
            # even by SIGKILL, stops the container
            process = Supervised(command, bundle=bundle, stdin=subprocess.DEVNULL, stdout=out_write,
                                 stderr=out_write)
        except OSError as exc:
            os.close(out_read)
            raise SandboxFailed(f"starting {self.runtime}: {exc}") from exc
        finally:
            os.close(out_write)
        token = self._runs.add(process.stop)
        tail = Tail()
        try:
            pump(out_read, output, tail)
        finally:
            process.stop()  # after the runtime exited, this only closes our end
            process.wait()
            os.close(out_read)
            cancelled = self._runs.remove(token)
        if cancelled:
            raise ExecCancelled(spec.args)
        if process.returncode != 0:
            if 'error mounting "proc"' in tail.text() and "operation not permitted" in tail.text():
                raise SandboxFailed(f"{os.path.basename(self.runtime)} could not mount /proc: {MASKED_PROC_HINT}")
            # the runtime exits with the step's status, 128+n for a signal;
            # a runtime that failed to start the step exits non-zero too
            # and has said why in the output
            if process.returncode == 137 and spec.limits and spec.limits.memory is not None:
                # runc removes the step's cgroup, and its OOM count with it:
                # a SIGKILL nobody here sent is the OOM killer's, most likely
                raise OutOfMemory(spec.args, 137, None, tail.text(), spec.limits.memory, certain=False)
            raise ExecFailed(spec.args, process.returncode, None, tail.text())


def _lookup_without_path(rootfs: Path, spec: ExecSpec) -> list[str]:
    """args, with args[0] made absolute when the env has no PATH: runtimes
    search the step's own PATH, the builtin executor the default one."""
    args = list(spec.args)
    if "/" in args[0] or any(item.startswith("PATH=") for item in spec.env):
        return args
    with Tree(rootfs) as tree:
        for directory in DEFAULT_PATH.split(":"):
            candidate = f"{directory}/{args[0]}"
            try:
                fd = tree.open(candidate, os.O_PATH)  # symlinks followed inside the rootfs only
            except OSError:
                continue
            try:
                # through the magic link: that very inode, never a path the
                # image could redirect
                if stat.S_ISREG(os.fstat(fd).st_mode) and os.access(f"/proc/self/fd/{fd}", os.X_OK):
                    args[0] = candidate
                    break
            finally:
                os.close(fd)
    return args


def build_config(
    spec: ExecSpec, rootfs: Path, user: User, args: list[str], etc: dict[str, str], no_new_privileges: bool
) -> dict:
    """The runtime-spec config.json for one step."""
    namespaces = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")]
    if spec.network is NetworkMode.NONE:
        namespaces.append({"type": "network"})
    linux: dict = {
        "namespaces": namespaces,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        # deny every device but those the runtime always allows (null, zero,
        # full, random, urandom, tty, ptmx, pts)
        "resources": {"devices": [{"allow": False, "access": "rwm"}], **oci_resources(spec.limits)},
        "seccomp": _seccomp(),
    }
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
            "args": args,
            "env": process_env(spec, user),
            "cwd": os.path.join("/", spec.cwd),
            "capabilities": {
                "bounding": DEFAULT_CAP_NAMES,
                "effective": DEFAULT_CAP_NAMES,
                "permitted": DEFAULT_CAP_NAMES,
                # empty since docker's fix for CVE-2022-24769
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": _rlimits(spec),
            "noNewPrivileges": no_new_privileges,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": spec.hostname,
        "mounts": _rootless_mounts(spec, _mounts(spec, etc)) if in_user_namespace() else _mounts(spec, etc),
        "linux": linux,
    }


def _mounts(spec: ExecSpec, etc: dict[str, str]) -> list[dict]:
    secure = ["nosuid", "noexec", "nodev"]
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": secure},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": secure + ["mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": secure},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": secure + ["ro"]},
        # BuildKit's withCGroup and withROBind (executor/oci/spec_linux.go)
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"] + secure},
        # before the step's mounts, as BuildKit orders them
        {"destination": "/etc/hosts", "type": "bind", "source": etc["hosts"], "options": secure + ["rbind", "ro"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": etc["resolv.conf"], "options": secure + ["rbind", "ro"]},
    ]
    for mount in spec.mounts:
        if isinstance(mount, BindMount):
            options = ["rbind", "ro" if mount.readonly else "rw"] + (secure if mount.sealed else [])
            mounts.append(
                {"destination": mount.target, "type": "bind", "source": os.path.abspath(mount.source), "options": options}
            )
        else:
            options = ["nosuid", "nodev"] + ([f"size={mount.size}"] if mount.size else [])
            mounts.append({"destination": mount.target, "type": "tmpfs", "source": "tmpfs", "options": options})
    return mounts


def _rootless_mounts(spec: ExecSpec, mounts: list[dict]) -> list[dict]:
    """What runc's specconv.ToRootless changes: a fresh sysfs needs a network
    namespace owned by ours, so a step on the host's network gets the host's
    /sys bound read-only instead."""
    if spec.network is NetworkMode.NONE:
        return mounts
    changed = []
    for mount in mounts:
        if mount["type"] == "sysfs":
            mount = {"destination": "/sys", "type": "bind", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        elif mount["type"] == "cgroup":
            continue  # in the bound /sys already
        changed.append(mount)
    return changed


def _seccomp() -> dict:
    # docker's default allow-list for the capabilities the step holds
    from runtime.seccomp import profile

    return profile(DEFAULT_CAP_NAMES)


def _rlimits(spec: ExecSpec) -> list[dict]:
    """docker's open-files limit, then --ulimit's (which win)."""
    ulimits = oci_rlimits(spec.limits)
    given = {item["type"] for item in ulimits}
    default = [{"type": "RLIMIT_NOFILE", "hard": _nofile(), "soft": _nofile()}]
    return [item for item in default if item["type"] not in given] + ulimits


def _nofile() -> int:
    """docker's limit when we may raise the hard limit, else ours: the
    runtime would fail the whole run on EPERM."""
    # CAP_SYS_RESOURCE of a user namespace raises no hard limit beyond
    # the one it was entered with.
    if has_capability(CAP_SYS_RESOURCE) and not in_user_namespace():
        return _NOFILE
    return min(_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
