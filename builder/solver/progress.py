"""Progress displays: reporters the solver calls, shown as BuildKit shows them.

- `plain`: each step numbered as it starts (`#3 [build 2/4] RUN make`), its
  output prefixed with the number and the seconds since it started, then
  `#3 DONE 0.4s`, `#3 CACHED`, `#3 ERROR: ...` or `#3 CANCELED`; a pulled
  blob adds `#2 sha256:... 2.81MB / 2.81MB 0.3s done`.
- `tty`: a live view redrawn ten times a second: one line per running step
  with its timer, the last lines of its output and its downloads; a step
  collapses to one line when it ends, and the view ends with
  `[+] Building 4.1s (8/8) FINISHED`.
- `rawjson`: one JSON object per line, shaped like BuildKit's SolveStatus
  (`{"vertexes": [...]}`, `{"statuses": [...]}`, `{"logs": [...]}`,
  `{"warnings": [...]}`), log data base64 as Go's encoding/json writes bytes.
- `quiet`: nothing.

Work that is not a step of the graph (a push) is a `Task` (builder/solver/
tasks.py), shown as a step with BuildKit's statuses: plain prints a
status when it starts, completes, or moved 5% of its total or 5 s since
its last line (`#9 pushing layer 3f2a... 1.2MB / 20MB 0.4s`), tty shows
each under its step, rawjson sends every update.

All write to one stream (stderr by default) under one lock; `close()` ends
the display (the tty view's last frame) and must be called once.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import Enum

from builder.solver.scheduler import Reporter
from builder.solver.tasks import Status, Task, human_size, status_text, timestamp as _timestamp

TTY_LOG_LINES = 6  # output lines shown under a running step, as BuildKit
_TTY_TICK = 0.1
# A plain line for a status that moved this share of its total, or after
# this many seconds: BuildKit's progressui (minProgressDelta, minTimeDelta).
_PLAIN_STEP = 0.05
_PLAIN_WAIT = 5.0


def _is_cancel(error: BaseException) -> bool:
    # Names, not imports: the solver's Cancelled and the runtime's
    # ExecCancelled both mean "stopped because the build is ending", as
    # SIGINT or SIGTERM does to a task (builder.cli.guard.Interrupted).
    return isinstance(error, KeyboardInterrupt) or type(error).__name__ in ("Cancelled", "ExecCancelled")


class BuildReporter(Reporter):
    """Adds what the build (not the solver) reports: warnings, messages,
    per-step download progress, and the end of the display."""

    def __init__(self, names=None):
        self.names = names or {}
        self._task_names: dict[str, str] = {}

    def set_names(self, names) -> None:
        self.names = names

    def name_of(self, vertex: str) -> str:
        if vertex in self._task_names:
            return self._task_names[vertex]
        meta = self.names.get(vertex)
        return getattr(meta, "name", None) or vertex[:19]

    def task(self, name: str) -> Task:
        """Start a step the solver does not run (a push) under `name`;
        its statuses show as a step's, `Task.end` ends it."""
        return Task(self, name)

    def name_task(self, vertex: str, name: str) -> None:
        self._task_names[vertex] = name

    def status(self, vertex: str, status: Status) -> None:
        """A Task's status started, moved or completed."""

    def warning(self, text: str) -> None: ...
    def message(self, text: str) -> None: ...

    def step_number(self, vertex: str) -> int | None:
        """The `#N` this display shows for the step, or None: it shows none."""
        return None

    def progress_hook(self, vertex: str):
        """A `(descriptor, done_bytes, total_bytes)` callback for downloads, or None."""
        return None

    def close(self) -> None: ...


class QuietReporter(BuildReporter):
    pass


class PlainReporter(BuildReporter):
    def __init__(self, stream=None, names=None):
        super().__init__(names)
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._numbers: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._partial: dict[str, bytes] = {}
        self._blobs_done: set[str] = set()
        self._printed: dict[tuple[str, str], tuple[int, float]] = {}  # a status's last line: bytes, time
        self._counter = 0
        self._t0 = time.monotonic()

    def _write(self, text: str) -> None:
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    def _number(self, vertex: str) -> int:
        with self._lock:
            if vertex not in self._numbers:
                self._counter += 1
                self._numbers[vertex] = self._counter
            return self._numbers[vertex]

    def step_number(self, vertex: str) -> int:
        return self._number(vertex)

    def planned(self, vertex: str, cached: bool) -> None:
        if cached:
            n = self._number(vertex)
            self._write(f"#{n} {self.name_of(vertex)}\n#{n} CACHED\n\n")

    def started(self, vertex: str) -> None:
        n = self._number(vertex)
        self._started[vertex] = time.monotonic()
        self._write(f"#{n} {self.name_of(vertex)}\n")

    def output(self, vertex: str, data: bytes) -> None:
        n = self._number(vertex)
        text = self._partial.pop(vertex, b"") + data
        lines = text.split(b"\n")
        if lines[-1]:
            self._partial[vertex] = lines[-1]
        elapsed = time.monotonic() - self._started.get(vertex, self._t0)
        body = "".join(f"#{n} {elapsed:.3f} {line.decode(errors='replace')}\n" for line in lines[:-1])
        if body:
            self._write(body)

    def finished(self, vertex: str, error, duration: float) -> None:
        n = self._number(vertex)
        rest = self._partial.pop(vertex, b"")
        if rest:
            self._write(f"#{n} {duration:.3f} {rest.decode(errors='replace')}\n")
        if error is None:
            self._write(f"#{n} DONE {duration:.1f}s\n\n")
        elif _is_cancel(error):
            self._write(f"#{n} CANCELED\n\n")
        else:
            self._write(f"#{n} ERROR: {error}\n\n")

    def progress_hook(self, vertex: str):
        n = self._number(vertex)

        def report(desc, done: int, total: int) -> None:
            # One line per blob, when it is complete: plain output is a log.
            digest = str(desc.digest)
            if done >= total and digest not in self._blobs_done:
                self._blobs_done.add(digest)
                elapsed = time.monotonic() - self._started.get(vertex, self._t0)
                self._write(f"#{n} {digest} {human_size(done)} / {human_size(total)} {elapsed:.1f}s done\n")

        return report

    def status(self, vertex: str, status: Status) -> None:
        now = time.monotonic()
        key = (vertex, status.id)
        with self._lock:
            last = self._printed.get(key)
            if last is not None and status.completed is None:
                moved = (status.current - last[0]) / status.total if status.total else 0.0
                if moved < _PLAIN_STEP and now - last[1] < _PLAIN_WAIT:
                    return  # BuildKit's plain printer skips such an update too
            self._printed[key] = (status.current, now)
        self._write(f"#{self._number(vertex)} {status.id}{status_text(status, now)}\n")

    def warning(self, text: str) -> None:
        self._write(f"WARNING: {text}\n")

    def message(self, text: str) -> None:
        self._write(f"{text}\n")


class RawJsonReporter(BuildReporter):
    def __init__(self, stream=None, names=None):
        super().__init__(names)
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._started: dict[str, str] = {}

    def _emit(self, body: dict) -> None:
        line = json.dumps(body, sort_keys=True) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def _vertex(self, vertex: str, **fields) -> None:
        self._emit({"vertexes": [{"digest": vertex, "name": self.name_of(vertex), **fields}]})

    def planned(self, vertex, cached):
        if cached:
            now = _timestamp()
            self._vertex(vertex, cached=True, started=now, completed=now)

    def started(self, vertex):
        self._started[vertex] = _timestamp()
        self._vertex(vertex, started=self._started[vertex])

    def output(self, vertex, data):
        self._emit({"logs": [{"vertex": vertex, "stream": 1, "timestamp": _timestamp(),
                              "data": base64.b64encode(data).decode()}]})

    def finished(self, vertex, error, duration):
        fields = {"started": self._started.get(vertex, _timestamp()), "completed": _timestamp()}
        if error is not None:
            fields["error"] = "context canceled" if _is_cancel(error) else str(error)
        self._vertex(vertex, **fields)

    def progress_hook(self, vertex: str):
        def report(desc, done: int, total: int) -> None:
            status = {"id": str(desc.digest), "vertex": vertex, "current": done, "total": total,
                      "timestamp": _timestamp()}
            if done >= total:
                status["completed"] = status["timestamp"]
            self._emit({"statuses": [status]})

        return report

    def status(self, vertex, status):
        # Go's omitempty: a status of no size has no "total".
        body = {"id": status.id, "vertex": vertex, "current": status.current, "timestamp": _timestamp(),
                "started": status.started_at}
        if status.total:
            body["total"] = status.total
        if status.completed_at is not None:
            body["completed"] = status.completed_at
        self._emit({"statuses": [body]})

    def warning(self, text):
        self._emit({"warnings": [{"level": 1, "short": base64.b64encode(text.encode()).decode()}]})

    def message(self, text):
        # BuildKit has no free-text event; pybuild's messages ride as a log
        # line of no vertex, which its consumers ignore.
        self._emit({"logs": [{"vertex": "", "stream": 2, "timestamp": _timestamp(),
                              "data": base64.b64encode((text + "\n").encode()).decode()}]})


# -- the live terminal view ---------------------------------------------------------


class StepState(Enum):
    RUNNING = "running"
    DONE = "done"
    CACHED = "cached"
    ERROR = "error"
    CANCELED = "canceled"


@dataclass
class _Step:
    name: str
    started: float
    state: StepState = StepState.RUNNING
    ended: float | None = None
    logs: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TTY_LOG_LINES))
    partial: bytes = b""
    statuses: dict = field(default_factory=dict)  # a pull's digest or a task's status id -> [done, total, started, ended]


_BLUE, _RED, _YELLOW, _RESET = "\x1b[34m", "\x1b[31m", "\x1b[33m", "\x1b[0m"


class TtyReporter(BuildReporter):
    """BuildKit's tty view: finished steps are printed once, above a live
    region that is redrawn in place (cursor up, clear line) on every tick."""

    def __init__(self, stream=None, names=None, *, width: int | None = None, color: bool | None = None):
        super().__init__(names)
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._steps: dict[str, _Step] = {}
        self._order: list[str] = []
        self._committed: list[tuple[str, str]] = []  # (text, colour) waiting to be printed
        self._live_height = 0
        self._width = width
        self._color = color if color is not None else not os.environ.get("NO_COLOR")
        self._closed = False
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="pybuild-progress", daemon=True)
        self._ticker.start()

    # -- solver hooks
    def planned(self, vertex, cached):
        if cached:
            now = time.monotonic()
            with self._lock:
                step = self._step(vertex, now)
                step.state, step.ended = StepState.CACHED, now
                self._commit_step(step)

    def started(self, vertex):
        with self._lock:
            self._step(vertex, time.monotonic())

    def output(self, vertex, data):
        with self._lock:
            step = self._step(vertex, time.monotonic())
            *lines, step.partial = (step.partial + data).split(b"\n")
            for line in lines:
                step.logs.append(line.decode(errors="replace").replace("\r", "").expandtabs())

    def finished(self, vertex, error, duration):
        with self._lock:
            step = self._step(vertex, time.monotonic())
            step.ended = step.started + duration
            if error is None:
                step.state = StepState.DONE
            else:
                step.state = StepState.CANCELED if _is_cancel(error) else StepState.ERROR
            self._commit_step(step)
        self._draw()

    def progress_hook(self, vertex):
        def report(desc, done: int, total: int) -> None:
            now = time.monotonic()
            with self._lock:
                step = self._step(vertex, now)
                pull = step.statuses.setdefault(str(desc.digest), [0, total, now, None])
                pull[0], pull[1] = done, total
                if done >= total and pull[3] is None:
                    pull[3] = now

        return report

    def status(self, vertex, status):
        with self._lock:
            step = self._step(vertex, status.started)
            step.statuses[status.id] = [status.current, status.total, status.started, status.completed]

    def warning(self, text):
        with self._lock:
            self._committed.append((f"WARNING: {text}", _YELLOW))

    def message(self, text):
        with self._lock:
            self._committed.append((text, ""))
        self._draw()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._ticker.join()
        with self._lock:
            done = sum(1 for s in self._steps.values() if s.state is not StepState.RUNNING)
            failed = any(s.state in (StepState.ERROR, StepState.CANCELED) for s in self._steps.values())
            elapsed = time.monotonic() - self._t0
            # Whatever still runs (an interrupted build) collapses too.
            for vertex in self._order:
                step = self._steps[vertex]
                if step.state is StepState.RUNNING:
                    step.state, step.ended = StepState.CANCELED, time.monotonic()
                    self._commit_step(step)
            self._committed.append((f"[+] Building {elapsed:.1f}s ({done}/{len(self._steps)}) "
                                    f"{'FAILED' if failed else 'FINISHED'}", ""))
        self._draw(final=True)

    # -- state
    def _step(self, vertex: str, now: float) -> _Step:
        step = self._steps.get(vertex)
        if step is None:
            step = self._steps[vertex] = _Step(self.name_of(vertex), now)
            self._order.append(vertex)
        return step

    def _commit_step(self, step: _Step) -> None:
        label = {StepState.CACHED: "CACHED ", StepState.ERROR: "ERROR ", StepState.CANCELED: "CANCELED "}
        colour = {StepState.ERROR: _RED, StepState.CANCELED: _RED}.get(step.state, _BLUE)
        seconds = (step.ended or step.started) - step.started
        self._committed.append((self._with_timer(f" => {label.get(step.state, '')}{step.name}", seconds), colour))

    # -- drawing
    def _columns(self) -> int:
        if self._width:
            return self._width
        try:
            return os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return 80

    def _rows(self) -> int:
        try:
            return os.get_terminal_size(self._stream.fileno()).lines
        except (OSError, ValueError, AttributeError):
            return 24

    def _with_timer(self, text: str, seconds: float) -> str:
        timer = f"{seconds:.1f}s"
        room = self._columns() - 1 - len(timer) - 1
        if len(text) > room:
            text = text[: max(room - 3, 0)] + "..."
        return f"{text:<{room}} {timer}"

    def _live(self, now: float) -> list[tuple[str, str]]:
        running = [self._steps[v] for v in self._order if self._steps[v].state is StepState.RUNNING]
        done = len(self._steps) - len(running)
        lines = [(f"[+] Building {now - self._t0:.1f}s ({done}/{len(self._steps)})", "")]
        for step in running:
            lines.append((self._with_timer(f" => {step.name}", now - step.started), ""))
            for status_id, (got, total, started, ended) in step.statuses.items():
                label = f"sha256:{status_id[7:19]}" if status_id.startswith("sha256:") else status_id
                if total:
                    label += f" {human_size(got)} / {human_size(total)}"
                elif got:
                    label += f" {human_size(got)}"
                suffix = " done" if ended is not None else ""
                lines.append((self._with_timer(f" => => {label}{suffix}", (ended or now) - started), ""))
            for log in step.logs:
                lines.append((f" => => # {log}", ""))
        # The region must fit the screen, or the cursor cannot get back up.
        limit = max(self._rows() - 2, 2)
        return lines[:1] + lines[1:][-(limit - 1):] if len(lines) > limit else lines

    def _paint(self, text: str, colour: str) -> str:
        width = self._columns() - 1
        text = text if len(text) <= width else text[: width - 3] + "..."
        if colour and self._color:
            return f"\x1b[2K{colour}{text}{_RESET}\n"
        return f"\x1b[2K{text}\n"

    def _draw(self, final: bool = False) -> None:
        with self._lock:
            parts = []
            if self._live_height:
                parts.append(f"\x1b[{self._live_height}F")  # to the start of the live region
            parts.extend(self._paint(text, colour) for text, colour in self._committed)
            self._committed.clear()
            live = [] if final else self._live(time.monotonic())
            parts.extend(self._paint(text, colour) for text, colour in live)
            parts.append("\x1b[J")  # erase what a taller previous frame left below
            self._live_height = len(live)
            try:
                self._stream.write("".join(parts))
                self._stream.flush()
            except (OSError, ValueError):
                self._stop.set()  # the terminal went away: stop drawing

    def _tick(self) -> None:
        while not self._stop.wait(_TTY_TICK):
            self._draw()


def _stream_is_terminal(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def make_reporter(mode: str, stream=None) -> BuildReporter:
    """`auto` is the tty view when the stream is a terminal, else plain."""
    mode = getattr(mode, "value", mode)
    stream = stream or sys.stderr
    if mode == "auto":
        mode = "tty" if _stream_is_terminal(stream) else "plain"
    if mode == "quiet":
        return QuietReporter()
    if mode == "rawjson":
        return RawJsonReporter(stream)
    if mode == "plain":
        return PlainReporter(stream)
    if mode == "tty":
        return TtyReporter(stream)
    raise ValueError(f"unknown progress mode {mode!r}")
