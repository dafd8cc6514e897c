""".dockerignore parsing and matching (moby/patternmatcher semantics)."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frontend.dockerignore import Matcher, parse_dockerignore
from frontend.errors import DockerfileError


def test_parse_cleans_patterns():
    text = "\ufeff# comment\n\n  ./a/  \n/b\n!c/../d\n ! e \n  # not a comment\n**/*.pyc\n"
    assert parse_dockerignore(text) == ("a", "b", "!d", "!e", "# not a comment", "**/*.pyc")


@pytest.mark.parametrize(
    "patterns, path, excluded",
    [
        (["a"], "a", True),
        (["a"], "a/b/c", True),  # a matched directory excludes its contents
        (["a"], "ab", False),
        (["*.txt"], "x.txt", True),
        (["*.txt"], "d/x.txt", False),  # * does not cross "/"
        (["**/*.txt"], "d/e/x.txt", True),
        (["**/*.txt"], "x.txt", True),
        (["d/**"], "d/e/f", True),
        (["d/**/f"], "d/f", True),
        (["d/**/f"], "d/x/y/f", True),
        (["?.go"], "a.go", True),
        (["?.go"], "ab.go", False),
        (["[a-c].md"], "b.md", True),
        (["[^a-c].md"], "b.md", False),
        (["[^a-c].md"], "z.md", True),
        (["\\*.md"], "*.md", True),
        (["\\*.md"], "a.md", False),
        (["*", "!keep"], "keep", False),
        (["*", "!keep"], "other", True),
        (["*", "!keep", "keep"], "keep", True),  # last match wins
        (["docs", "!docs/README.md"], "docs/README.md", False),
        (["docs", "!docs/README.md"], "docs/other.md", True),
        (["**"], "anything/at/all", True),
        ([".git"], ".git/HEAD", True),
        # The walk's order: `!a` is never tried on `a/b` (not yet excluded
        # when `a` was seen), so what `a/b` holds stays out (docker 26).
        (["a/b", "!a"], "a/b/y", True),
        (["a/b", "!a"], "a/x", False),
        (["a", "!a/b", "a/b/c"], "a/b/c/z", True),
        (["a", "!a/b", "a/b/c"], "a/b/y", False),
        # patternmatcher's shortcuts: a leading "**" is a string suffix, a
        # trailing one a string prefix.
        (["**.log"], "a/b/keep.log", True),
        (["**.log"], "xkeep.log", True),
        (["**/c"], "a/bc", False),
        (["ke**"], "keep/sub/n.log", True),
        (["a/**"], "a", False),
        # patternmatcher turns ? and * into regex pieces inside [...] too:
        # the class of a[?]b takes "[", "^" or "/" (docker 26 copies
        # nothing for COPY a[?]b/*), while [[]x] still takes "[x]".
        (["a[?]b"], "a?b", False),
        (["a[*]b"], "a*b", False),
        (["[[]x]"], "[x]", True),
        (["[]]"], "]", True),
    ],
)
def test_excluded(patterns, path, excluded):
    assert Matcher(tuple(patterns)).excluded(path) is excluded


@pytest.mark.parametrize(
    "patterns, directory, descend",
    [
        (["node_modules"], "node_modules", False),
        (["node_modules", "!node_modules/keep"], "node_modules", True),
        (["node_modules", "!other/keep"], "node_modules", False),
        (["a", "!a/b/**/c"], "a/b/x", True),
        (["a", "!**/c"], "a", True),
        (["a", "!*.md"], "a", False),
        (["a", "!a"], "a", True),  # not excluded at all
        (["x"], "y", True),
    ],
)
def test_may_reinclude_below(patterns, directory, descend):
    assert Matcher(tuple(patterns)).may_reinclude_below(directory) is descend


@pytest.mark.parametrize("pattern", ["[", "a[b", "[z-a]", "!", "x\\"])
def test_bad_patterns(pattern):
    if pattern == "x\\":
        Matcher((pattern,))  # a trailing escape is kept literally, as in patternmatcher
        return
    with pytest.raises(DockerfileError):
        Matcher((pattern,))


NAME = st.text(alphabet="abc.-_", min_size=1, max_size=5).filter(lambda s: s not in (".", ".."))


@given(st.lists(NAME, min_size=1, max_size=4), st.lists(NAME, min_size=1, max_size=4))
def test_literal_pattern_matches_itself_and_below(pattern_parts, extra):
    pattern = "/".join(pattern_parts)
    matcher = Matcher(parse_dockerignore(pattern))
    cleaned = parse_dockerignore(pattern)
    if not cleaned or cleaned[0] in (".", ".."):
        return
    assert matcher.excluded(cleaned[0])
    assert matcher.excluded(cleaned[0] + "/" + "/".join(extra))


@given(st.lists(st.text(max_size=12), max_size=5), st.text(max_size=20))
def test_random_patterns_only_raise_dockerfile_error(lines, path):
    try:
        matcher = Matcher(parse_dockerignore("\n".join(lines)))
    except DockerfileError:
        return
    matcher.excluded(path)
    matcher.may_reinclude_below(path or ".")


@given(st.lists(st.sampled_from(["a", "b", "*", "?", "c*", "*.x"]), min_size=1, max_size=3).map("/".join),
       st.lists(st.sampled_from(["a", "b", "c", "ab", "c.x"]), min_size=1, max_size=3).map("/".join))
def test_agrees_with_fnmatch_on_simple_globs(pattern, path):
    # Without "/" crossing, "[" or "**", a whole-path match is fnmatch per component.
    pattern_parts, path_parts = pattern.split("/"), path.split("/")
    expected = len(pattern_parts) <= len(path_parts) and all(
        fnmatch.fnmatchcase(c, p) for p, c in zip(pattern_parts, path_parts)
    )
    assert Matcher((pattern,)).excluded(path) is expected


def test_a_path_of_thousands_of_components_is_answered():
    # A COPY source is asked about without the walk that would have asked
    # about each of its directories first: the answer is not a recursion
    # one level per component.
    deep = "/".join(["d"] * 3000)
    matcher = Matcher(("d/d/d", "!d/d/d/d/keep*"))
    assert matcher.excluded(deep + "/file")
    assert not matcher.excluded("d/d/d/d/keep.txt")
    assert not Matcher(("x",)).excluded(deep)
