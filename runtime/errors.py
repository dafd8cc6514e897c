"""Errors of the runtime: snapshots, layers and process execution."""


class RuntimeFailure(Exception):
    """Base of every error the runtime package raises."""


class ExecFailed(RuntimeFailure):
    """A RUN process that exited non-zero or was killed by a signal."""

    def __init__(self, args, exit_code: int | None, signal: int | None = None, tail: str = ""):
        self.argv = tuple(args)
        self.exit_code = exit_code
        self.signal = signal
        self.tail = tail
        status = f"exit code: {exit_code}" if signal is None else f"killed by signal {signal}"
        super().__init__(f"process {_quote(self.argv)} did not complete successfully: {status}")


class ExecCancelled(RuntimeFailure):
    """A RUN killed because `Executor.cancel()` was called (another step
    failed, or Ctrl-C)."""

    def __init__(self, args=()):
        self.argv = tuple(args)
        super().__init__(f"process {_quote(self.argv)} was cancelled")


class UnknownUser(RuntimeFailure):
    def __init__(self, user: str):
        self.user = user
        super().__init__(f"unable to find user {user}: no matching entries in passwd file")


class UnsafeLayer(RuntimeFailure):
    """A layer archive member that would escape the snapshot or is malformed."""


class MountFailed(RuntimeFailure):
    pass


def _quote(argv) -> str:
    text = " ".join(argv)
    return '"' + text.replace('"', '\\"') + '"'
