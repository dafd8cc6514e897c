"""Parsing differences from BuildKit found by comparing pybuild with docker's
BuildKit, each pinned to what BuildKit does (the source is named per test).
"""

from __future__ import annotations

import pytest
from golden import FakeResolver

from frontend import DockerfileError, convert
from frontend.ops import Exec
from frontend.parser import parse, parse_heredoc


def _build(text: str):
    return convert(text, resolve_image=FakeResolver())


def _run_args(definition) -> list[tuple[str, ...]]:
    ops = [definition.op(v) for v in definition.graph.nodes]
    return [op.args for op in ops if isinstance(op, Exec)]


# -- line continuations ------------------------------------------------------


def test_escaped_escape_at_end_of_line_is_not_a_continuation():
    # BuildKit parser.go setEscapeToken: the continuation pattern is
    # `([^\\])\\[ \t]*$|^\\[ \t]*$`, so `a\\` ends the instruction (docker
    # 20.10 agrees: the next line is its own RUN).
    parsed = parse("FROM scratch\nRUN echo a\\\\\nRUN echo b\n")
    assert [n.args for n in parsed.nodes[1:]] == [("echo a\\\\",), ("echo b",)]
    assert (parsed.nodes[1].start, parsed.nodes[1].end) == (2, 2)


def test_escaped_backtick_at_end_of_line_is_not_a_continuation():
    # The same pattern built from the escape directive's token.
    parsed = parse("# escape=`\nFROM scratch\nRUN echo a``\nRUN echo b\n")
    assert [n.args for n in parsed.nodes[1:]] == [("echo a``",), ("echo b",)]


def test_single_escape_still_continues():
    parsed = parse("FROM scratch\nRUN echo a \\  \n  b\n\\\nRUN x\n")
    # A line holding only the escape continues too (second branch).
    assert [n.args for n in parsed.nodes[1:]] == [("echo a   b",), ("x",)]


# -- CRLF ------------------------------------------------------------------------


def test_crlf_heredoc_body_keeps_its_line_endings():
    # BuildKit parser.go: heredoc content is the scanner's raw lines (its
    # scanLines keeps "\r\n"); only the terminator is compared after
    # trimNewline. moby/buildkit#3511, docker/for-win#13665 show the CR
    # reaching the build.
    parsed = parse("FROM scratch\r\nCOPY <<EOF /f\r\nline1\r\nline2\r\nEOF\r\nRUN x\r\n")
    copy = parsed.nodes[1]
    assert copy.heredocs[0].content == "line1\r\nline2\r\n"
    assert (copy.start, copy.end) == (2, 5)
    assert parsed.nodes[2].args == ("x",)


def test_every_trailing_carriage_return_is_trimmed():
    # trimNewline is bytes.TrimRight(line, "\r\n").
    parsed = parse("FROM scratch\nRUN x\r\r\n")
    assert parsed.nodes[1].args == ("x",)


# -- heredocs ----------------------------------------------------------------------


def test_blank_between_heredoc_operator_and_name():
    # BuildKit 0.22 (moby/buildkit#5817): reHeredoc is `^(\d*)<<(-?)\s*([^<]*)$`
    # and the shell lexer keeps the blanks after `<<` in the same word.
    parsed = parse("FROM scratch\nRUN cat << EOF > /f\nhello\nEOF\nRUN x\n")
    run = parsed.nodes[1]
    assert [(d.name, d.content) for d in run.heredocs] == [("EOF", "hello\n")]
    assert parsed.nodes[2].args == ("x",)
    assert parse_heredoc("<<  EOF") == ("EOF", True, False, 0)


def test_blank_after_chomp_dash_is_not_a_heredoc():
    # The lexer only joins blanks right after `<<`: `<<- EOF` stays two words
    # and is no heredoc (still so in BuildKit; moby/buildkit#6822 is open).
    parsed = parse("FROM scratch\nRUN cat <<- EOF\nRUN x\n")
    assert parsed.nodes[1].heredocs == ()
    assert parsed.nodes[2].args == ("x",)


def test_run_with_spaced_heredoc_is_the_script():
    d = _build("FROM busybox\nRUN << EOF\necho hi\nEOF\n")
    assert ("/bin/sh", "-c", "echo hi\n") in _run_args(d)


# -- flags -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["ARG --foo=bar X=1\n", "STOPSIGNAL --foo=bar 9\n"])
def test_flags_of_arg_and_stopsignal_are_not_checked(text):
    # BuildKit instructions/parse.go: parseArg and parseStopSignal never call
    # req.flags.Parse(); docker 20.10 builds both.
    d = _build("FROM busybox\n" + text)
    assert d.image is not None


def test_flags_of_workdir_are_checked():
    with pytest.raises(DockerfileError, match="unknown flag: foo") as info:
        _build("FROM busybox\nWORKDIR --foo=bar /x\n")
    assert info.value.location.start == 2


# -- files without instructions ----------------------------------------------------


@pytest.mark.parametrize(("text", "line"), [("# only\n# comments\n\n", 3), ("# escape=`\n", 1)])
def test_file_with_no_instructions(text, line):
    # BuildKit parser.go Parse: `file with no instructions` at the last line
    # read (docker 20.10 prints the same message).
    with pytest.raises(DockerfileError, match="^.*file with no instructions$") as info:
        _build(text)
    assert info.value.location.start == line


def test_parser_rejects_blank_text():
    # The parser's own verdict; convert() still calls blank text "empty"
    # before parsing (BuildKit does so only for zero bytes).
    with pytest.raises(DockerfileError, match="file with no instructions"):
        parse("\n  \n")


def test_a_crlf_dockerfile_read_from_disk_keeps_crlf_in_heredoc_bodies(tmp_path):
    # BuildKit reads the Dockerfile as bytes: a heredoc body written with
    # CRLF keeps its \r (buildkit#3511); Python's text mode would drop it.
    from frontend.parser import parse, read_dockerfile

    path = tmp_path / "Dockerfile"
    path.write_bytes(b"FROM busybox\r\nRUN <<EOF\r\necho hi\r\nEOF\r\n")
    with open(path, "rb") as stream:
        [_, run] = parse(read_dockerfile(stream)).nodes
    assert run.heredocs[0].content == "echo hi\r\n"
