"""dockerfile-parse as an independent oracle for instruction splitting.

pybuild parses Dockerfiles itself (dockerfile-parse 2.0.1 reads heredoc
bodies as instructions and leaves flags in the value, see
docs/architecture.md), but where dockerfile-parse is right — continuations,
comments, directives, instruction names and their line ranges in files
without heredocs — both must agree.
"""

from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from frontend.parser import parse

REPO = Path(__file__).resolve().parents[2]


def _oracle_applies(text: str) -> bool:
    # dockerfile-parse ends a continuation at a blank line; BuildKit (and
    # pybuild) skip blank lines inside continuations, so those files differ.
    lines = text.splitlines()
    continued = False
    for line in lines:
        if continued and not line.strip():
            return False
        if not line.lstrip().startswith("#"):
            continued = line.endswith("\\")
    return "<<" not in text and "escape=" not in text


CASES = sorted(
    path for path in [*REPO.glob("testdata/frontend/parse/*/Dockerfile"), REPO / "testdata/hello/Dockerfile"]
    if _oracle_applies(path.read_text())
)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.parent.name)
def test_instructions_and_lines_agree_with_dockerfile_parse(path, tmp_path):
    text = path.read_text()
    oracle = DockerfileParser(path=str(tmp_path / "Dockerfile"))
    oracle.content = text
    expected = [(item["instruction"].upper(), item["startline"] + 1, item["endline"] + 1)
                for item in oracle.structure if item["instruction"] != "COMMENT"]
    ours = [(node.keyword.upper(), node.start, node.end) for node in parse(text, str(path)).nodes]
    assert ours == expected


def test_there_are_cases():
    assert len(CASES) >= 5


def test_blank_line_in_continuation_is_where_we_differ():
    text = "FROM a\nRUN echo \\\n\n    done\n"
    assert [n.keyword for n in parse(text).nodes] == ["FROM", "RUN"]
