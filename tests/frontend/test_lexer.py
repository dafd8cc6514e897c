"""The shell lexer: each expansion form, quoting, errors, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frontend.errors import DockerfileError
from frontend.lexer import Lexer

ENV = {"V": "hello world", "E": "", "P": "a/b/c.tar.gz", "STAR": "a*b"}


@pytest.mark.parametrize(
    "word, result",
    [
        ("$V", "hello world"),
        ("${V}", "hello world"),
        ("x${V}y", "xhello worldy"),
        ("$UNSET", ""),
        ("${UNSET:-dflt}", "dflt"),
        ("${E:-dflt}", "dflt"),
        ("${E-dflt}", ""),
        ("${UNSET-dflt}", "dflt"),
        ("${V:+alt}", "alt"),
        ("${E:+alt}", ""),
        ("${E+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${V:?oops}", "hello world"),
        ("${E?oops}", ""),
        ("${P#*/}", "b/c.tar.gz"),
        ("${P##*/}", "c.tar.gz"),
        ("${P%.*}", "a/b/c.tar"),
        ("${P%%.*}", "a/b/c"),
        ("${P%%nomatch}", "a/b/c.tar.gz"),
        ("${P/b/X}", "a/X/c.tar.gz"),
        ("${P//\\//_}", "a_b_c.tar.gz"),
        ("${P/?/Z}", "Z/b/c.tar.gz"),
        ("${STAR/\\*/-}", "a-b"),
        ("${UNSET:-${V}}", "hello world"),
        ("'$V'", "$V"),
        ('"$V"', "hello world"),
        ('"a\\"b"', 'a"b'),
        ('"a\\nb"', "a\\nb"),
        ("a\\ b", "a b"),
        ("\\$V", "$V"),
        ("$", "$"),
        ("a$", "a$"),
        ("$1", ""),
        ("end\\", "end"),
        ("'a'\"b\"c", "abc"),
    ],
)
def test_process_word(word, result):
    assert Lexer().process_word(word, ENV) == result


@pytest.mark.parametrize(
    "word, words",
    [
        ("a b  c", ["a", "b", "c"]),
        ("$V", ["hello", "world"]),
        ('"$V"', ["hello world"]),
        ("x$V", ["xhello", "world"]),
        ("'a b' c", ["a b", "c"]),
        ("a\\ b", ["a b"]),
        ("$E", []),
        ('""', []),
    ],
)
def test_process_words(word, words):
    assert Lexer().process_words(word, ENV) == words


@pytest.mark.parametrize(
    "word, message",
    [
        ("${}", "syntax error: bad substitution"),
        ("${:a}", "syntax error: bad substitution"),
        ("${V", "unsupported modifier (\ufffd) in substitution"),  # docker 26's wording
        ("${V:-x", "syntax error: missing '}'"),
        ("${V/x", "syntax error: missing '/' in ${}"),
        ("${V^^}", "unsupported modifier (^) in substitution"),
        ("${V:=x}", "unsupported modifier (:=) in substitution"),
        ("${UNSET:?}", "UNSET: is not allowed to be unset"),
        ("${E:?}", "E: is not allowed to be empty"),
        ("${UNSET?custom message}", "UNSET: custom message"),
        ("'abc", "unexpected end of statement while looking for matching single-quote"),
        ('"abc', "unexpected end of statement while looking for matching double-quote"),
        ("${V#\\a}", "invalid pattern (\\a) in substitution: invalid escape '\\a'"),
    ],
)
def test_errors(word, message):
    with pytest.raises(DockerfileError) as err:
        Lexer().process_word(word, ENV)
    assert err.value.message.endswith(message)
    assert err.value.message.startswith("failed to process")


def test_backtick_escape():
    lexer = Lexer("`")
    assert lexer.process_word("a` b`$V", ENV) == "a b$V"
    assert lexer.process_word("c:\\path", ENV) == "c:\\path"


def test_options():
    assert Lexer(raw_quotes=True).process_word("'a' \"$V\"", ENV) == "'a' \"hello world\""
    assert Lexer(skip_unset=True).process_word("$X ${Y} ${Z:-d} $V", ENV) == "$X ${Y} ${Z:-d} hello world"
    assert Lexer(skip_quotes=True).process_word("\"$V\" 'x'", ENV) == "\"hello world\" 'x'"
    assert Lexer(raw_escapes=True).process_word("a\\ b", ENV) == "a\\ b"


def test_matched_and_unmatched():
    result = Lexer().process("$V ${NOPE:-x} $E", ENV)
    assert result.matched == {"V", "E"}
    assert result.unmatched == {"NOPE"}


def test_deep_nesting_is_an_error_not_a_crash():
    word = "${A:-" * 500 + "x" + "}" * 500
    with pytest.raises(DockerfileError):
        Lexer().process_word(word, {})


@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_dockerfile_error(text):
    for lexer in (Lexer(), Lexer("`"), Lexer(raw_quotes=True, skip_unset=True)):
        try:
            result = lexer.process(text, ENV)
        except DockerfileError:
            continue
        assert isinstance(result.result, str)


PLAIN = st.text(alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_./:,+=@"),
                min_size=1, max_size=20)  # fmt: skip


@given(st.lists(PLAIN, max_size=8))
def test_plain_words_round_trip(words):
    text = " ".join(words)
    assert Lexer().process_word(text, ENV) == text
    assert Lexer().process_words(text, ENV) == words


@given(PLAIN)
def test_single_quotes_protect_everything(word):
    assert Lexer().process_word("'" + word.replace("'", "") + "$V'", ENV) == word.replace("'", "") + "$V"
