"""Parser golden tests (testdata/frontend/parse) and structural checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden import dockerfile_summary

from frontend import parser as parser_module
from frontend.errors import DockerfileError
from frontend.parser import parse, parse_heredoc

TESTDATA = Path(__file__).parents[2] / "testdata" / "frontend" / "parse"
CASES = sorted(p.name for p in TESTDATA.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    text = (TESTDATA / case / "Dockerfile").read_text()
    expected = json.loads((TESTDATA / case / "result.json").read_text())
    assert dockerfile_summary(parse(text)) == expected


def test_directive_after_instruction_is_a_comment():
    parsed = parse("FROM scratch\n# escape=`\n")
    assert parsed.directives == ()
    assert parsed.escape == "\\"


def test_unknown_directive_ends_directives():
    parsed = parse("# foo=bar\n# escape=`\nFROM scratch\n")
    assert parsed.escape == "\\"


def test_crlf_and_bom():
    parsed = parse("\ufeffFROM scratch\r\nRUN a \\\r\n  b\r\n")
    assert [n.args for n in parsed.nodes] == [("scratch",), ("a   b",)]
    assert parsed.nodes[1].end == 3


def test_several_heredocs_in_one_line():
    parsed = parse("FROM x\nRUN cat <<A <<-'B' > f\na\nA\n\tb\n\tB\nRUN next\n")
    run = parsed.nodes[1]
    assert [(h.name, h.content, h.expand, h.chomp) for h in run.heredocs] == [
        ("A", "a\n", True, False),
        ("B", "\tb\n", False, True),
    ]
    assert (run.start, run.end) == (2, 6)
    assert parsed.nodes[2].start == 7


def test_heredoc_not_parsed_in_json_form_or_other_instructions():
    parsed = parse('FROM x\nRUN ["cat", "<<EOF"]\nENV A=<<EOF\n')
    assert all(not n.heredocs for n in parsed.nodes)


@pytest.mark.parametrize(
    "word, expected",
    [
        ("<<EOF", ("EOF", True, False, 0)),
        ("<<-EOF", ("EOF", True, True, 0)),
        ("<<'EOF'", ("EOF", False, False, 0)),
        ('<<"E"OF', ("EOF", False, False, 0)),
        ("3<<EOF", ("EOF", True, False, 3)),
        ("<<", None),
        ("<<a b", None),
        ("x<<EOF", None),
    ],
)
def test_parse_heredoc(word, expected):
    assert parse_heredoc(word) == expected


def test_unterminated_heredoc_points_at_instruction():
    with pytest.raises(DockerfileError) as err:
        parse("FROM x\nRUN <<EOF\nabc\n")
    assert err.value.location.start == 2
    assert err.value.message == "unterminated heredoc"


def test_linear_in_lines(monkeypatch):
    """Each line is examined a bounded number of times: 10,000 lines give
    exactly one continuation check per line and one node per instruction."""
    calls = {"trim": 0, "node": 0}
    trim, node = parser_module._trim_continuation, parser_module._node_from_line

    def counting_trim(*args):
        calls["trim"] += 1
        return trim(*args)

    def counting_node(*args):
        calls["node"] += 1
        return node(*args)

    monkeypatch.setattr(parser_module, "_trim_continuation", counting_trim)
    monkeypatch.setattr(parser_module, "_node_from_line", counting_node)
    lines = ["FROM scratch"] + [f"RUN echo {i} \\\n    and {i}" for i in range(4_999)] + ["RUN x \\"] * 1
    text = "\n".join(lines) + "\n"
    parsed = parse(text)
    assert len(text.splitlines()) == 1 + 2 * 4_999 + 1
    assert calls["trim"] == len(text.splitlines())
    assert calls["node"] == len(parsed.nodes) == 5_001


def test_one_long_continued_instruction_is_joined_once():
    text = "FROM scratch\nRUN a \\\n" + "  b \\\n" * 10_000 + "  c\n"
    parsed = parse(text)
    run = parsed.nodes[1]
    assert run.args[0].count("b") == 10_000
    assert (run.start, run.end) == (2, 10_003)
