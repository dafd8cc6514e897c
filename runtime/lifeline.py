"""Child processes that die with pybuild, however pybuild dies.

PR_SET_PDEATHSIG cannot be given to a child from pybuild: forking a
threaded interpreter to set it (preexec_fn) is unsafe, and it would fire
when the *thread* that started the child ends. So a command that must not
outlive pybuild (an OCI runtime, an ssh-agent holding keys) is started
under runtime/supervise.py, with the read end of a pipe whose write end
only this process holds: the lifeline. It reads EOF when `stop()` closes
it or when pybuild dies, SIGKILL included, and the supervisor then kills
the command (and, given a bundle, stops its container).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["Supervised"]

_SUPERVISOR = str(Path(__file__).with_name("supervise.py"))


class Supervised(subprocess.Popen):
    """`subprocess.Popen(args, **kwargs)`, under the supervisor. `bundle`:
    an OCI bundle whose container (see supervise.write_record) is stopped
    along with the command. terminate() and kill() stop it the same way;
    its exit status is the command's."""

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
