"""The reporters' formats, driven through the hooks the solver calls."""

import io
import json
from dataclasses import dataclass

from builder.solver.progress import PlainReporter, RawJsonReporter, TtyReporter, human_size, make_reporter
from builder.solver.scheduler import Cancelled
from frontend.definition import VertexMeta


@dataclass(frozen=True)
class Desc:  # what registry.fetch_blob passes: only .digest is read
    digest: str


NAMES = {"v1": VertexMeta("[1/2] FROM base"), "v2": VertexMeta("[2/2] RUN make")}


def test_human_size_like_docker():
    assert [human_size(n) for n in (0, 999, 1000, 1_031_000, 2_500_000_000)] == ["0B", "999B", "1kB", "1.031MB",
                                                                                   "2.5GB"]


def test_plain_pull_progress_and_cancel():
    out = io.StringIO()
    reporter = PlainReporter(out, NAMES)
    reporter.started("v1")
    hook = reporter.progress_hook("v1")
    hook(Desc("sha256:ab"), 500, 1000)
    hook(Desc("sha256:ab"), 1000, 1000)
    hook(Desc("sha256:ab"), 1000, 1000)  # reported once
    reporter.finished("v1", None, 0.25)
    reporter.started("v2")
    reporter.output("v2", b"partial")
    reporter.finished("v2", Cancelled(), 1.0)
    lines = out.getvalue().splitlines()
    assert lines[0] == "#1 [1/2] FROM base"
    assert lines[1].startswith("#1 sha256:ab 1kB / 1kB ") and lines[1].endswith("s done")
    assert lines[2:5] == ["#1 DONE 0.2s", "", "#2 [2/2] RUN make"]
    assert lines[5] == "#2 1.000 partial"
    assert lines[6] == "#2 CANCELED"


def test_rawjson_statuses_and_errors():
    out = io.StringIO()
    reporter = RawJsonReporter(out, NAMES)
    reporter.started("v1")
    reporter.progress_hook("v1")(Desc("sha256:ab"), 10, 10)
    reporter.finished("v1", RuntimeError("boom"), 0.1)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    status = events[1]["statuses"][0]
    assert (status["id"], status["vertex"], status["current"], status["total"]) == ("sha256:ab", "v1", 10, 10)
    assert "completed" in status
    assert events[2]["vertexes"][0]["error"] == "boom"


def test_tty_frame_fits_the_width_and_collapses():
    out = io.StringIO()
    reporter = TtyReporter(out, NAMES, width=60, color=False)
    try:
        reporter.started("v2")
        reporter.output("v2", b"x" * 100 + b"\n")
        reporter.progress_hook("v2")(Desc("sha256:" + "c" * 64), 1_000_000, 2_000_000)
        reporter._draw()
        frame = out.getvalue().split("\x1b[2K")
        assert all(len(part.split("\n")[0]) <= 59 for part in frame)
        assert any("=> => sha256:cccccccccccc 1MB / 2MB" in part for part in frame)
        reporter.finished("v2", None, 1.5)
    finally:
        reporter.close()
    final = out.getvalue()
    assert " => [2/2] RUN make" in final and "1.5s" in final
    assert final.rstrip("\x1b[J\n").endswith("(1/1) FINISHED")


def test_auto_is_plain_when_not_a_terminal():
    assert isinstance(make_reporter("auto", io.StringIO()), PlainReporter)
