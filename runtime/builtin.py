"""The builtin executor: Linux namespaces, no runtime binary needed.

The caller is multi-threaded, so nothing here forks the interpreter: each
run spawns `sandbox.py`, a stdlib-only helper, with subprocess. The helper
makes the namespaces, mounts, pivots and execs (see its docstring); this
side writes its config, streams the output, decides the outcome and makes
sure nothing survives the call.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

from runtime.executor import (
    ExecCancelled,
    RunSet,
    SandboxFailed,
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

__all__ = ["BuiltinExecutor"]

_SANDBOX = str(Path(__file__).with_name("sandbox.py"))
_REAP_TIMEOUT = 10.0  # seconds to wait for a killed pid namespace to vanish


class BuiltinExecutor:
    name = "builtin"

    def __init__(self, scratch: Path | None = None, no_new_privileges: bool = False):
        """`scratch`: where per-run temp dirs go (the system's temp dir by
        default). `no_new_privileges`: off by default, as in BuildKit (RUN
        may use sudo or su) and docker."""
        self._scratch = scratch
        self._no_new_privileges = no_new_privileges
        self._runs = RunSet()

    def cancel(self) -> None:
        """Kill every step this executor is running; each `run` raises
        ExecCancelled. Safe from any thread."""
        self._runs.cancel_all()

    def run(self, spec: ExecSpec, rootfs: Path, output: OutputSink) -> None:
        check_spec(spec)
        rootfs = Path(os.path.abspath(rootfs))
        user = resolve_user(rootfs, spec.user)
        stubs = missing_paths(rootfs, mount_targets(spec))
        work = scratch_dir(self._scratch, "pybuild-exec-")
        try:
            make_workdir(rootfs, spec.cwd, user.uid, user.gid)
            config = self._config(spec, rootfs, user, write_etc_files(work, spec))
            run_limited(spec.limits, work, config, lambda path: self._supervise(spec, path, output))
        finally:
            remove_stubs(stubs)
            remove_tree(work)

    def _config(self, spec: ExecSpec, rootfs: Path, user: User, etc: dict[str, str]) -> dict:
        return {**helper_config(spec, rootfs, user, etc, self._no_new_privileges),
                "parent": os.getpid(), "network_none": spec.network is NetworkMode.NONE}

    def _supervise(self, spec: ExecSpec, config_path: Path, output: OutputSink) -> None:
        out_read, out_write = os.pipe()
        status_read, status_write = os.pipe()
        try:
            helper = subprocess.Popen(
                [sys.executable, "-S", "-E", _SANDBOX, str(config_path), str(status_write)],
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=out_write,
                pass_fds=(status_write,),
            )
        except OSError as exc:
            for fd in (out_read, out_write, status_read, status_write):
                os.close(fd)
            raise SandboxFailed(f"starting the sandbox helper: {exc}") from exc
        os.close(out_write)
        os.close(status_write)
        tree = _SandboxTree(helper)
        token = self._runs.add(tree.kill)
        tail = Tail()
        try:
            # learn pid 1 before anything else can happen, so that a cancel
            # or an error in `output` can wait for its namespace to empty
            tree.on_status(_read_line(status_read))
            pump(out_read, output, tail, status_read, tree.on_status)
            helper.wait()
        finally:
            # whatever happened (KeyboardInterrupt included): nothing survives
            tree.kill()
            tree.reap()
            os.close(out_read)
            os.close(status_read)
            cancelled = self._runs.remove(token)
        if cancelled:
            raise ExecCancelled(spec.args)
        tree.raise_for_status(spec.args, tail.text())


class _SandboxTree:
    """The helper process and its pid 1, as the status pipe reveals it."""

    def __init__(self, helper: subprocess.Popen):
        self._helper = helper
        self._lock = threading.Lock()
        self._pidfd: int | None = None
        self._reaped = False
        self.status = HelperStatus("sandbox helper")

    def on_status(self, line: bytes) -> None:
        if not line:
            return
        kind, rest = self.status.read(line)
        if kind == "pid1":
            self._watch_init(int(rest))

    def _watch_init(self, pid: int) -> None:
        # A pidfd lets us kill pid 1 ourselves and know when its namespace is
        # empty. pid 1 cannot have been reaped unless it already exited; that
        # the process lives in another pid namespace rules out a recycled pid.
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        if not _in_other_pid_namespace(pid):
            os.close(pidfd)
            return
        with self._lock:
            if self._reaped:
                os.close(pidfd)
            else:
                self._pidfd = pidfd

    def kill(self) -> None:
        with self._lock:
            if self._pidfd is not None:
                try:
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self._helper.returncode is None:
                try:
                    self._helper.kill()  # pid 1 follows through PR_SET_PDEATHSIG
                except ProcessLookupError:
                    pass

    def reap(self) -> None:
        self._helper.wait()
        with self._lock:
            self._reaped = True
            pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            # readable once pid 1 has exited, which the kernel lets happen
            # only after every other process of its namespace is gone
            select.select([pidfd], [], [], _REAP_TIMEOUT)
            os.close(pidfd)

    def raise_for_status(self, args, tail: str) -> None:
        self.status.raise_for(args, tail, self._helper.returncode)


def _read_line(fd: int) -> bytes:
    """One line, byte by byte so that nothing after it is consumed."""
    line = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            return bytes(line)
        line += byte


def _in_other_pid_namespace(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    except (FileNotFoundError, ProcessLookupError):
        return False
