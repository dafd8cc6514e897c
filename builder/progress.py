"""Progress displays: reporters the solver calls, printing as BuildKit does.

`plain` numbers each step as it starts (`#3 [build 2/4] RUN make`), prints
its output prefixed with the step number, then `#3 DONE 0.4s`, `#3 CACHED`
or `#3 ERROR: ...`. `rawjson` writes one JSON event per line. `quiet` prints
nothing. All write to one stream (stderr by default) under one lock.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from builder.solver import Reporter


class BuildReporter(Reporter):
    """Adds what the build (not the solver) reports: warnings, messages, and
    per-step download progress."""

    def __init__(self, names=None):
        self.names = names or {}

    def set_names(self, names) -> None:
        self.names = names

    def warning(self, text: str) -> None: ...
    def message(self, text: str) -> None: ...

    def progress_hook(self, vertex: str):
        return None


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

    def _name(self, vertex: str) -> str:
        meta = self.names.get(vertex)
        return getattr(meta, "name", None) or vertex[:19]

    def planned(self, vertex: str, cached: bool) -> None:
        if cached:
            n = self._number(vertex)
            self._write(f"#{n} {self._name(vertex)}\n#{n} CACHED\n\n")

    def started(self, vertex: str) -> None:
        n = self._number(vertex)
        self._started[vertex] = time.monotonic()
        self._write(f"#{n} {self._name(vertex)}\n")

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
        elif type(error).__name__ == "Cancelled" or type(error).__name__ == "ExecCancelled":
            self._write(f"#{n} CANCELED\n\n")
        else:
            self._write(f"#{n} ERROR: {error}\n\n")

    def warning(self, text: str) -> None:
        self._write(f"WARNING: {text}\n")

    def message(self, text: str) -> None:
        self._write(f"{text}\n")


class RawJsonReporter(BuildReporter):
    def __init__(self, stream=None, names=None):
        super().__init__(names)
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()

    def _event(self, **body) -> None:
        body["time"] = time.time()
        with self._lock:
            self._stream.write(json.dumps(body, sort_keys=True) + "\n")
            self._stream.flush()

    def _name(self, vertex):
        meta = self.names.get(vertex)
        return getattr(meta, "name", None) or vertex

    def planned(self, vertex, cached):
        if cached:
            self._event(type="vertex", digest=vertex, name=self._name(vertex), cached=True)

    def started(self, vertex):
        self._event(type="vertex", digest=vertex, name=self._name(vertex), started=True)

    def output(self, vertex, data):
        self._event(type="log", digest=vertex, data=data.decode(errors="replace"))

    def finished(self, vertex, error, duration):
        self._event(type="vertex", digest=vertex, name=self._name(vertex), completed=True,
                    duration=round(duration, 6), error=str(error) if error else None)

    def warning(self, text):
        self._event(type="warning", message=text)

    def message(self, text):
        self._event(type="message", message=text)


def make_reporter(mode: str, stream=None) -> BuildReporter:
    if mode == "quiet":
        return QuietReporter()
    if mode == "rawjson":
        return RawJsonReporter(stream)
    if mode in ("plain", "auto", "tty"):
        return PlainReporter(stream)
    raise ValueError(f"unknown progress mode {mode!r}")
