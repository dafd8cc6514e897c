"""Issue 5: --explain says why each step that ran missed the cache."""

from __future__ import annotations

from builder.build import build
from e2e.cache_helpers import Recorder
from e2e.helpers import write_context


def _explained(context, root, dockerfile, **kwargs) -> list[str]:
    recorder = Recorder()
    build(context, dockerfile_text=dockerfile, root=root, reporter=recorder, explain=True, **kwargs)
    return [m for m in recorder.messages if "rebuilt because" in m]


def test_explain_names_the_changed_file_arg_and_parent(busybox_image, tmp_path):
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"src/a.txt": "a\n", "src/b.txt": "b\n"})
    dockerfile = (f"FROM {busybox_image.ref} AS base\nRUN echo base > /base\n"
                  f"FROM base\nWORKDIR /app\nCOPY src/ .\nARG LEVEL=1\nRUN echo $LEVEL > level\n")
    first = _explained(context, root, dockerfile)
    assert any("this is the first build recorded" in m for m in first)

    (context / "src" / "a.txt").write_text("a, changed\n")
    (context / "src" / "new.txt").write_text("new\n")
    lines = _explained(context, root, dockerfile)
    assert lines == [
        "[stage-1 2/3] COPY src/ .: rebuilt because src/a.txt changed; src/new.txt was added",
        "[stage-1 3/3] RUN echo 1 > level: rebuilt because parent step [stage-1 2/3] COPY src/ . changed",
    ]

    lines = _explained(context, root, dockerfile, build_args={"LEVEL": "2"})
    assert lines == ["[stage-1 3/3] RUN echo 2 > level: rebuilt because build arg LEVEL changed"]

    lines = _explained(context, root, dockerfile, build_args={"LEVEL": "2"}, no_cache_filter="base")
    assert "[base 2/2] RUN echo base > /base: rebuilt because --no-cache-filter names stage base" in lines
    assert any(m.startswith("[stage-1 1/3] WORKDIR /app: rebuilt because a step it depends on") for m in lines)


def test_explain_flag_numbers_steps_like_the_progress(busybox_image, tmp_path):
    import subprocess

    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n", "Dockerfile": f"FROM {busybox_image.ref}\nCOPY a.txt /\n"})
    command = ["pybuild", "--root", str(root), "--progress", "plain", "--explain", str(context)]
    subprocess.run(command, check=True, capture_output=True)
    (context / "a.txt").write_text("b\n")
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    line = next(l for l in done.stderr.splitlines() if "rebuilt because" in l)
    number = line.split(" ", 1)[0]
    assert line == f"{number} [2/2] COPY a.txt /: rebuilt because a.txt changed"
    assert f"{number} [2/2] COPY a.txt /\n" in done.stderr  # the same number as its progress


def test_explain_names_the_changed_file_of_a_copy_mixing_sources(busybox_image, tmp_path):
    # A COPY of context files and a heredoc is one CopyParts op: its
    # context part still gets a file-level reason.
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n", "b.txt": "b\n"})
    dockerfile = f"FROM {busybox_image.ref}\nCOPY a.txt b.txt <<note /app/\nhello\nnote\n"
    _explained(context, root, dockerfile)
    (context / "b.txt").write_text("b, changed\n")
    assert _explained(context, root, dockerfile) == [
        "[2/2] COPY a.txt b.txt <<note /app/: rebuilt because b.txt changed"]


def test_explain_names_the_changed_file_of_a_build_context_directory(busybox_image, tmp_path):
    # COPY --from a --build-context directory: its files are recorded too.
    context, root, named = tmp_path / "ctx", tmp_path / "root", tmp_path / "named"
    write_context(context, {"main.txt": "m\n"})
    write_context(named, {"x.txt": "x\n", "y.txt": "y\n"})
    dockerfile = f"FROM {busybox_image.ref}\nCOPY --from=src x.txt y.txt /app/\n"
    _explained(context, root, dockerfile, build_contexts=[f"src={named}"])
    (named / "y.txt").write_text("y, changed\n")
    assert _explained(context, root, dockerfile, build_contexts=[f"src={named}"]) == [
        "[2/2] COPY --from=src x.txt y.txt /app/: rebuilt because y.txt changed"]
