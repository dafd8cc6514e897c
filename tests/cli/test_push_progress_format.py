"""How a push's statuses read in each display (builder/solver/tasks.py,
builder/solver/progress.py) and how the upload body gives out its bytes
(builder/registry/pushing.UploadBody). The pushes themselves, through a
slow registry, are tests/e2e/test_push_progress.py."""

from __future__ import annotations

import io
import json
import threading

import pytest

from builder.errors import RegistryError
from builder.registry.pushing import UPLOAD_PIECE, PushStopped, UploadBody
from builder.solver import tasks
from builder.solver.progress import PlainReporter, QuietReporter, RawJsonReporter, TtyReporter


class Clock:
    """time.monotonic for builder.solver.tasks and progress, moved by hand."""

    def __init__(self, monkeypatch):
        self.now = 1000.0
        monkeypatch.setattr(tasks.time, "monotonic", lambda: self.now)


def test_plain_prints_a_status_as_buildkit_does(monkeypatch):
    clock = Clock(monkeypatch)
    out = io.StringIO()
    reporter = PlainReporter(out)
    task = reporter.task("pushing reg/app:1")
    task.status("pushing layers")
    layer = "pushing layer 0123456789ab"
    task.status(layer, 0, 10_000_000)
    clock.now += 0.5
    task.status(layer, 400_000, 10_000_000)    # 4%: skipped
    task.status(layer, 600_000, 10_000_000)    # 6% since the last line: printed
    clock.now += 1
    task.status(layer, 700_000, 10_000_000)    # 1% in 1 s: skipped
    clock.now += 5
    task.status(layer, 800_000, 10_000_000)    # 5 s since the last line: printed
    task.status(layer, 10_000_000, 10_000_000, done=True)
    task.status(layer, 10_000_000, 10_000_000)  # after done: dropped
    task.status("pushing layer ba9876543210", done=True)  # the registry had it
    task.end()
    assert out.getvalue().splitlines() == [
        "#1 pushing reg/app:1",
        "#1 pushing layers",
        "#1 pushing layer 0123456789ab 0B / 10MB",
        "#1 pushing layer 0123456789ab 600kB / 10MB 0.5s",
        "#1 pushing layer 0123456789ab 800kB / 10MB 6.5s",
        "#1 pushing layer 0123456789ab 10MB / 10MB 6.5s done",
        "#1 pushing layer ba9876543210 done",
        "#1 pushing layers 6.5s done",  # end() completes what is open
        "#1 DONE 6.5s",
        "",
    ]


def test_a_failed_task_leaves_its_statuses_as_they_stood():
    out = io.StringIO()
    reporter = PlainReporter(out)
    task = reporter.task("pushing reg/app:1")
    task.status("pushing layers")
    task.end(RuntimeError("failed to push: denied"))
    task.end()  # once
    lines = out.getvalue().splitlines()
    assert lines == ["#1 pushing reg/app:1", "#1 pushing layers", "#1 ERROR: failed to push: denied", ""]


def test_rawjson_statuses_are_buildkit_vertex_statuses():
    out = io.StringIO()
    reporter = RawJsonReporter(out)
    task = reporter.task("pushing reg/app:1")
    task.status("pushing layer 0123456789ab", 5, 10)
    task.status("pushing layer ba9876543210", done=True)
    task.end()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    started, moving, existing, *rest = events
    assert started["vertexes"][0]["name"] == "pushing reg/app:1"
    vertex = started["vertexes"][0]["digest"]
    assert vertex.startswith("sha256:") and len(vertex) == 71
    status = moving["statuses"][0]
    assert {k: status[k] for k in ("id", "vertex", "current", "total")} == {
        "id": "pushing layer 0123456789ab", "vertex": vertex, "current": 5, "total": 10}
    assert "completed" not in status and status["started"] <= status["timestamp"]
    done = existing["statuses"][0]
    assert done["current"] == 0 and "total" not in done and done["completed"] >= done["started"]
    assert rest[-1]["vertexes"][0]["digest"] == vertex and "completed" in rest[-1]["vertexes"][0]


def test_tty_shows_a_status_under_its_step():
    out = io.StringIO()
    reporter = TtyReporter(out, width=100, color=False)
    try:
        task = reporter.task("pushing reg/app:1")
        task.status("pushing layer 0123456789ab", 1_000_000, 2_000_000)
        task.status("pushing layer ba9876543210", done=True)
        reporter._draw()
        frame = out.getvalue()
        assert " => pushing reg/app:1" in frame
        assert " => => pushing layer 0123456789ab 1MB / 2MB " in frame
        assert " => => pushing layer ba9876543210 done " in frame
        task.end()
    finally:
        reporter.close()
    assert out.getvalue().rstrip("\x1b[J\n").endswith("(1/1) FINISHED")


def test_quiet_shows_no_task(capfd):
    task = QuietReporter().task("pushing reg/app:1")
    task.status("pushing layers", done=True)
    task.end()
    assert capfd.readouterr() == ("", "")


def test_upload_body_gives_its_range_in_pieces_and_reports_as_time_passes(monkeypatch):
    clock = Clock(monkeypatch)
    data = bytes(range(256)) * (3 * UPLOAD_PIECE // 256 + 10)
    reports = []
    body = UploadBody(io.BytesIO(data), 7, 2 * UPLOAD_PIECE + 5, reports.append)
    assert len(body) == 2 * UPLOAD_PIECE + 5
    pieces = []
    for piece in body:
        pieces.append(bytes(piece))
        clock.now += 0.06
    assert [len(p) for p in pieces] == [UPLOAD_PIECE, UPLOAD_PIECE, 5]
    assert b"".join(pieces) == data[7:7 + 2 * UPLOAD_PIECE + 5]
    # 0.06 s a piece: a report once 0.1 s have passed, with the bytes sent by then.
    assert reports == [2 * UPLOAD_PIECE]
    # Sent again (a retry, a redirect): from the start of its range.
    assert b"".join(bytes(p) for p in body) == data[7:7 + 2 * UPLOAD_PIECE + 5]
    in_memory = UploadBody(data, UPLOAD_PIECE, UPLOAD_PIECE + 1, reports.append)
    assert [bytes(p) for p in in_memory] == [data[UPLOAD_PIECE:2 * UPLOAD_PIECE], data[2 * UPLOAD_PIECE:][:1]]


def test_an_interrupted_task_is_canceled():
    out = io.StringIO()
    reporter = PlainReporter(out)
    reporter.task("pushing reg/app:1").end(KeyboardInterrupt(2))
    assert out.getvalue().splitlines() == ["#1 pushing reg/app:1", "#1 CANCELED", ""]


def test_upload_body_refuses_a_file_shorter_than_promised():
    body = UploadBody(io.BytesIO(b"x" * 10), 0, 20, lambda sent: None)
    with pytest.raises(RegistryError, match="10 bytes short"):
        list(body)


def test_upload_body_stops_between_pieces():
    stop = threading.Event()
    body = iter(UploadBody(b"x" * (3 * UPLOAD_PIECE), 0, 3 * UPLOAD_PIECE, lambda sent: None, stop))
    assert len(next(body)) == UPLOAD_PIECE
    stop.set()
    with pytest.raises(PushStopped):
        next(body)
