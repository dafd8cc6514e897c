"""Observing which steps a real build ran: a reporter that records the
display names of started steps and the build's messages."""

from __future__ import annotations

from builder.solver.progress import BuildReporter


class Recorder(BuildReporter):
    def __init__(self):
        super().__init__()
        self.steps: list[str] = []
        self.messages: list[str] = []
        self.warnings: list[str] = []

    def _step_name(self, vertex: str) -> str:
        meta = self.names.get(vertex)
        return getattr(meta, "name", "") or vertex

    def started(self, vertex: str) -> None:
        self.steps.append(self._step_name(vertex))

    def message(self, text: str) -> None:
        self.messages.append(text)

    def warning(self, text: str) -> None:
        self.warnings.append(text)

    def ran(self, fragment: str) -> bool:
        return any(fragment in name for name in self.steps)

    @property
    def runs(self) -> list[str]:
        """Steps that ran a process or copied files (not sources)."""
        return [n for n in self.steps if "] RUN " in n or "] COPY " in n or "] WORKDIR " in n]
