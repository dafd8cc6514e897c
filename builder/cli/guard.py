"""How a command ends: the one place that turns errors into a message and
an exit status, and signals into a clean-up.

Exit status: 0 success; 1 a build error, a bad Dockerfile, bad flags or
configuration (click's usage errors too, which click itself ends with 2);
130 interrupted by SIGINT (143 by SIGTERM), after cleaning up.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading

import click

from builder.errors import DefinitionError, PybuildError, StepFailed, translated_errors

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def run_guarded(debug: bool, action, dockerfile_text=None):
    """Run `action`, turning a PybuildError into one line (and the
    Dockerfile lines it names) and exit 1; with `debug`, its traceback.
    What the action's own calls into frontend/, cache/, runtime/ or the
    host raise is translated into a PybuildError on the way out
    (builder.errors.translated_errors). `dockerfile_text`: the text, or a
    function returning it, to show the lines around a Dockerfile error."""
    try:
        with translated_errors():
            return action()
    except KeyboardInterrupt as exc:
        click.echo("ERROR: interrupted", err=True)
        sys.exit(128 + exc.signum if isinstance(exc, Interrupted) else EXIT_INTERRUPTED)
    except PybuildError as exc:
        if debug:
            raise
        report(exc, dockerfile_text() if callable(dockerfile_text) else dockerfile_text)
        sys.exit(EXIT_ERROR)


# C0 controls but newline and tab, DEL and C1: a message quoting a
# hostile context (a .dockerignore pattern, a file name, a Dockerfile line)
# must not move the cursor or set the terminal's title.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def report(exc: PybuildError, dockerfile_text: str | None = None) -> None:
    """`ERROR: message`; for a Dockerfile error or a failed step, the
    instruction's lines as BuildKit shows them; for a failed RUN, the last
    lines it printed."""
    from frontend.errors import DockerfileError, located
    from runtime.errors import ExecFailed

    click.echo(f"ERROR: {printable(str(exc))}", err=True)
    cause = exc.cause if isinstance(exc, StepFailed) else None
    location = exc.location if isinstance(exc, (StepFailed, DefinitionError)) else located(exc)
    if location is not None and dockerfile_text:
        if not isinstance(exc, DefinitionError) and not isinstance(cause, DockerfileError):
            click.echo(f"at {location}:", err=True)  # a DockerfileError's message starts with it
        lines = dockerfile_text.splitlines()
        first = max(1, location.start - 2)
        last = min(len(lines), location.end + 2)
        click.echo("", err=True)
        for number in range(first, last + 1):
            marker = ">>>" if location.start <= number <= location.end else "   "
            click.echo(f" {marker} {number:>4} | {printable(lines[number - 1])}", err=True)
    if isinstance(cause, ExecFailed) and cause.tail:
        click.echo("last output:", err=True)
        for line in cause.tail.rstrip("\n").splitlines():
            click.echo(f"  {line}", err=True)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so that every `finally`
    on the way out (the solver's cancel, unmounts, temp dirs) runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class SignalGuard:
    """The first SIGINT/SIGTERM interrupts the build; a second one while
    it cleans up is refused with a note (leaving mounts behind would be
    worse); a third exits at once."""

    def __init__(self):
        self.count = 0
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False

    def _handle(self, signum, frame):
        self.count += 1
        if self.count == 1:
            raise Interrupted(signum)
        if self.count == 2:
            os.write(2, b"\ncleaning up; interrupt again to quit at once (mounts may stay behind)\n")
            return
        os._exit(128 + signum)
