"""Cache hits and misses as BuildKit has them, from a differential sweep
against docker's BuildKit: after one kind of edit, which steps run again.

Each expectation names its source: a docker 20.10 (BuildKit v0.8) run and,
where the two could differ, current BuildKit's code. No docker is needed
here: the expected CACHED/ran result is written down.
"""

from __future__ import annotations

from builder.build import build
from e2e.cache_helpers import Recorder
from e2e.helpers import write_context


def _build(context, root, dockerfile, **kwargs):
    recorder = Recorder()
    result = build(context, dockerfile_text=dockerfile, root=root, reporter=recorder, **kwargs)
    return result, recorder


def _ran(recorder) -> list[str]:
    return [name.split("] ", 1)[1] for name in recorder.runs]


def test_dockerignore_edit_that_leaves_selected_files_alone_keeps_the_cache(busybox_image, tmp_path):
    # docker 20.10: a new .dockerignore pattern for a file no COPY selects
    # leaves every step CACHED. Current BuildKit agrees: the context's
    # exclude patterns are part of the local source's definition, but the
    # steps reading it are keyed on the content checksum of what they
    # select (solver/llbsolver/ops/file.go, content-based dependency keys).
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n", "src/b.txt": "b\n", "notes.txt": "n\n", ".dockerignore": "*.log\n"})
    dockerfile = (f"FROM {busybox_image.ref}\nCOPY a.txt /\nCOPY src/ /src/\n"
                  "RUN ls /src > /listing\n")
    _build(context, root, dockerfile)

    (context / ".dockerignore").write_text("*.log\nnotes.txt\n")
    _, rec = _build(context, root, dockerfile)
    assert rec.runs == []

    # A new file in a copied directory is picked up; a pattern that drops it
    # again gives the first build's selection, and its results.
    (context / "src" / "skip.bak").write_text("x\n")
    _, rec = _build(context, root, dockerfile)
    assert _ran(rec) == ["COPY src/ /src/", "RUN ls /src > /listing"]
    (context / ".dockerignore").write_text("*.log\nnotes.txt\n*/*.bak\n")
    _, rec = _build(context, root, dockerfile, outputs=[f"type=local,dest={tmp_path / 'out'}"])
    assert rec.runs == []
    assert (tmp_path / "out" / "listing").read_text() == "b.txt\n"


def test_no_cache_keeps_a_workdir_whose_inputs_were_not_forced(busybox_image, tmp_path):
    # docker 20.10 with --no-cache: "[2/5] WORKDIR /w1" CACHED, every RUN and
    # COPY runs, and a WORKDIR after a re-run RUN runs too. Current BuildKit:
    # dockerfile2llb gives llb.IgnoreCache to RUN (dispatchRun) and COPY/ADD
    # (dispatchCopy) only, never to WORKDIR's mkdir (dispatchWorkdir); what
    # depends on a re-run step misses because its input did.
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    dockerfile = (f"FROM {busybox_image.ref}\nWORKDIR /w1\nCOPY a.txt .\nRUN echo one > /one\n"
                  "WORKDIR /w2\nRUN echo two > /two\n")
    _build(context, root, dockerfile)

    _, rec = _build(context, root, dockerfile, no_cache=True)
    assert _ran(rec) == ["COPY a.txt .", "RUN echo one > /one", "WORKDIR /w2", "RUN echo two > /two"]


def test_no_cache_filter_keeps_the_named_stage_workdir(busybox_image, tmp_path):
    # --no-cache-filter marks the stage's RUN and COPY steps as
    # IgnoreCache (dockerfile2llb: ds.ignoreCache from IsNoCache(stage));
    # the WORKDIR before them stays cached, other stages are untouched.
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {})
    dockerfile = (f"FROM {busybox_image.ref} AS deps\nWORKDIR /src\nRUN echo deps > /deps\n"
                  f"FROM {busybox_image.ref}\nWORKDIR /app\nCOPY --from=deps /deps /\n")
    _build(context, root, dockerfile)

    _, rec = _build(context, root, dockerfile, no_cache_filter="deps")
    assert [n.split(" ", 1)[0] + " " + n.split("] ", 1)[1] for n in rec.runs] == [
        "[deps RUN echo deps > /deps", "[stage-1 COPY --from=deps /deps /"]
