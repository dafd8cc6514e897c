"""Child processes that die with pybuild, however pybuild dies.

PR_SET_PDEATHSIG cannot be given to a child from pybuild: forking a
threaded interpreter to set it (preexec_fn) is unsafe, and it would fire
when the *thread* that started the child ends; nor would it reach the
child's own children. So a command that must not outlive pybuild (an OCI
runtime, an ssh-agent holding keys, git and its remote helpers, a
credential helper) is started under runtime/supervise.py, with the read
end of a pipe whose write end only this process holds: the lifeline. It
reads EOF when `stop()` closes it or when pybuild dies, SIGKILL included,
and the supervisor then kills the command and everything in its process
group (and, given a bundle, stops its container). The command runs in a
session of its own, without a controlling terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["Supervised", "run"]

_SUPERVISOR = str(Path(__file__).with_name("supervise.py"))


class Supervised(subprocess.Popen):
    """`subprocess.Popen(args, **kwargs)`, under the supervisor; `args[0]`
    is a path (no PATH lookup). `bundle`: an OCI bundle whose container
    (see supervise.write_record) is stopped along with the command.
    terminate() and kill() stop it the same way; its exit status is the
    command's."""

    def __init__(self, args, *, bundle: str | os.PathLike | None = None, **kwargs):
        lifeline, self._lifeline = os.pipe()  # both close-on-exec
        self._lifeline_lock = threading.Lock()
        pass_fds = (lifeline, *kwargs.pop("pass_fds", ()))
        try:
            super().__init__([sys.executable, "-S", "-E", _SUPERVISOR, str(lifeline),
                              os.fspath(bundle) if bundle is not None else "-", "--", *args],
                             pass_fds=pass_fds, **kwargs)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(lifeline)

    def stop(self) -> None:
        """Have the supervisor kill the command; safe from any thread, any
        number of times, and after it exited (then it only closes our end)."""
        with self._lifeline_lock:
            if self._lifeline >= 0:
                os.close(self._lifeline)
                self._lifeline = -1

    def terminate(self) -> None:
        self.stop()

    def kill(self) -> None:
        self.stop()

    def wait(self, timeout: float | None = None) -> int:
        code = super().wait(timeout)
        self.stop()
        return code

    def poll(self) -> int | None:
        code = super().poll()
        if code is not None:
            self.stop()
        return code


def run(args, *, input=None, timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(args, input=input, capture_output=True,
    timeout=timeout, **kwargs)` under the supervisor: on a timeout, on an
    exception meanwhile (Ctrl-C) and when pybuild dies, the command and
    what it started are killed. stdin is empty without `input`."""
    stdin = subprocess.DEVNULL if input is None else subprocess.PIPE
    with Supervised(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except BaseException:  # TimeoutExpired included, as subprocess.run
            process.kill()
            process.wait()
            raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
