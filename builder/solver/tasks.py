"""Steps the solver does not run (a push), shown as its steps are.

BuildKit shows such work as a vertex with statuses: `pushing layers`, one
per layer with its bytes, `pushing manifest for REF@sha256:...`, each
with its current and total bytes and when it started and completed
(SolveStatus' VertexStatus). A `Task` is that vertex: numbered, timed
and ended like a step by the reporter that made it
(builder.solver.progress.BuildReporter.task), which shows its statuses
in its own way. `status_text` is how a status reads as a line;
`human_size`, which it uses, writes a pull's bytes too.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import threading
import time
from dataclasses import dataclass

_serial = itertools.count()


def timestamp() -> str:
    """Now, as BuildKit's JSON writes times."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Status:
    """One VertexStatus; times are time.monotonic() and, for JSON, UTC text."""

    id: str
    current: int
    total: int
    started: float
    started_at: str
    completed: float | None = None
    completed_at: str | None = None


def human_size(size: float) -> str:
    """Decimal units with three significant digits, as docker's HumanSize."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.4g}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{size}"


def status_text(status: Status, now: float) -> str:
    """What follows a status's id, as BuildKit prints it: its bytes (of
    its total), its time when over 0.01 s, and ` done` once completed."""
    if status.total:
        text = f" {human_size(status.current)} / {human_size(status.total)}"
    else:
        text = f" {human_size(status.current)}" if status.current else ""
    seconds = (status.completed if status.completed is not None else now) - status.started
    if seconds > 0.01:
        text += f" {seconds:.1f}s"
    return text + (" done" if status.completed is not None else "")


class Task:
    """A step of its own in `reporter`'s display, started when made."""

    def __init__(self, reporter, name: str):
        self._reporter = reporter
        # A digest, as BuildKit's vertexes have: rawjson readers expect one.
        seed = f"{name}\0{time.time_ns()}\0{next(_serial)}".encode()
        self.vertex = "sha256:" + hashlib.sha256(seed).hexdigest()
        self._statuses: dict[str, Status] = {}
        self._lock = threading.Lock()  # statuses come from the threads that upload
        self._started = time.monotonic()
        self._ended = False
        reporter.name_task(self.vertex, name)
        reporter.started(self.vertex)

    def status(self, status_id: str, current: int = 0, total: int = 0, *, done: bool = False) -> None:
        """Start or update the status `status_id`; `done` completes it
        (later updates of a completed status are dropped)."""
        now = time.monotonic()
        with self._lock:
            status = self._statuses.get(status_id)
            if status is None:
                status = self._statuses[status_id] = Status(status_id, current, total, now, timestamp())
            elif status.completed is not None:
                return
            status.current, status.total = current, total
            if done:
                status.completed, status.completed_at = now, timestamp()
            self._reporter.status(self.vertex, status)

    def end(self, error: BaseException | None = None) -> None:
        """Complete what is still open (a failure leaves it as it stood) and end the step; once."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            open_ids = [s.id for s in self._statuses.values() if s.completed is None]
        if error is None:
            for status_id in open_ids:
                status = self._statuses[status_id]
                self.status(status_id, status.current, status.total, done=True)
        self._reporter.finished(self.vertex, error, time.monotonic() - self._started)
