"""BuildKit's shell lexer: quote removal, escapes and variable expansion.

This is not a shell. It mimics the subset BuildKit applies to Dockerfile
words (`shell/lex.go`): single and double quotes, the escape character
(backslash or backtick), `$NAME`, `${NAME}` and the modifiers
`:-  -  :+  +  :?  ?  #  ##  %  %%  /  //`. Command substitution, arithmetic
and globbing are left to the real shell that runs a RUN.

Two results come out of one pass: the word with quotes removed (what
`ProcessWord` returns, whitespace kept) and the list of fields (what
`ProcessWords` returns, split on unquoted whitespace after expansion).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from frontend.errors import DockerfileError

# ${a:-${b:-${c...}}} recurses once per level; a hostile Dockerfile must get a
# DockerfileError, never a RecursionError.
_MAX_NESTING = 64

_SPECIAL_PARAMS = frozenset("@*#?-$!0")


class ExpansionError(DockerfileError):
    """A word that cannot be expanded; callers add the Dockerfile location."""


@dataclass
class ProcessResult:
    result: str
    words: list[str]
    matched: set[str] = field(default_factory=set)
    unmatched: set[str] = field(default_factory=set)


class _Fields:
    """Accumulates fields the way BuildKit's wordsStruct does: characters
    coming from quotes or escapes never split, expanded text and plain
    characters split on whitespace."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.current: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            word = "".join(self.current)
            if self.in_word and word:
                self.words.append(word)
                self.current = []
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.current.append(text)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def finish(self) -> list[str]:
        word = "".join(self.current)
        if word:
            self.words.append(word)
            self.current = []
            self.in_word = False
        return self.words


@dataclass(frozen=True)
class Lexer:
    """Options mirror BuildKit's `shell.Lex` fields.

    raw_quotes keeps quote characters in the result (used to find heredocs
    and to name RUN steps); raw_escapes keeps escape characters;
    skip_unset leaves references to unset variables as written;
    skip_quotes treats quotes as ordinary characters (heredoc bodies).
    """

    escape: str = "\\"
    raw_quotes: bool = False
    raw_escapes: bool = False
    skip_unset: bool = False
    skip_quotes: bool = False

    def process(self, word: str, env: Mapping[str, str]) -> ProcessResult:
        scan = _Scanner(self, word, env)
        try:
            result, words = scan.stop_on(None, self.raw_escapes, 0)
        except ExpansionError as err:
            raise ExpansionError(f"failed to process {_go_quote(word)}: {err.message}") from None
        return ProcessResult(result, words, scan.matched, scan.unmatched)

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        return self.process(word, env).result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        return self.process(word, env).words


_BLANKS = " \t\n\r\f\v"


def _go_quote(text: str) -> str:
    """Go's %q for a string, as BuildKit prints it in messages and history."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
go_quote = _go_quote


class _Scanner:
    def __init__(self, lexer: Lexer, text: str, env: Mapping[str, str]):
        self.lx = lexer
        self.text = text
        self.pos = 0
        self.env = env
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    # -- character access -------------------------------------------------
    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        if self.pos >= len(self.text):
            return ""
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def lookup(self, name: str) -> tuple[str, bool]:
        # Linux semantics: environment keys are case-sensitive.
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False

    # -- the word loop ----------------------------------------------------
    def stop_on(self, stop: str | None, raw_escapes: bool, depth: int) -> tuple[str, list[str]]:
        if depth > _MAX_NESTING:
            raise ExpansionError("syntax error: substitutions nested too deeply")
        esc = self.lx.escape
        result: list[str] = []
        fields = _Fields()
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if stop is not None and ch == stop:
                self.pos += 1
                return "".join(result), fields.finish()
            if ch == "$":
                value = self.dollar(depth)
                result.append(value)
                fields.add_string(value)
            elif ch in "'\"" and not self.lx.skip_quotes:
                value = self.single_quote() if ch == "'" else self.double_quote(raw_escapes, depth)
                result.append(value)
                fields.add_raw(value)
            elif self.text.startswith("<<", self.pos):
                # `<< EOF` is one word, so that a heredoc may have blanks
                # before its name (BuildKit 0.22, moby/buildkit#5817).
                end = self.pos + 2
                while end < len(self.text) and self.text[end] in _BLANKS:
                    end += 1
                value = self.text[self.pos : end]
                self.pos = end
                result.append(value)
                fields.add_raw(value)
            else:
                self.pos += 1
                if ch == esc:
                    if raw_escapes:
                        fields.add_raw(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch == "":
                        break  # an escape at the very end is dropped
                    fields.add_raw(ch)
                else:
                    fields.add_char(ch)
                result.append(ch)
        if stop is not None:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), fields.finish()

    def single_quote(self) -> str:
        # Everything up to the next ' is literal; ' cannot be escaped inside.
        start = self.pos + 1
        end = self.text.find("'", start)
        if end < 0:
            raise ExpansionError("unexpected end of statement while looking for matching single-quote")
        self.pos = end + 1
        body = self.text[start:end]
        return f"'{body}'" if self.lx.raw_quotes else body

    def double_quote(self, raw_escapes: bool, depth: int) -> str:
        esc = self.lx.escape
        out: list[str] = ['"'] if self.lx.raw_quotes else []
        self.pos += 1
        while True:
            ch = self.peek()
            if ch == "":
                raise ExpansionError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.pos += 1
                if self.lx.raw_quotes:
                    out.append('"')
                return "".join(out)
            if ch == "$":
                out.append(self.dollar(depth))
                continue
            self.pos += 1
            if ch == esc:
                if raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if nxt == "":
                    continue
                if nxt in ('"', "$", esc):
                    # Only these can be escaped inside double quotes; any
                    # other escape stays literal, as in sh.
                    ch = self.next()
            out.append(ch)

    # -- $ expansions -----------------------------------------------------
    def name(self) -> str:
        start = self.pos
        ch = self.peek()
        if ch.isdigit():
            while self.peek().isdigit():
                self.pos += 1
            return self.text[start:self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            self.pos += 1
            return ch
        while True:
            ch = self.peek()
            if ch and (ch.isalnum() or ch == "_"):
                self.pos += 1
            else:
                break
        return self.text[start:self.pos]

    def dollar(self, depth: int) -> str:
        self.pos += 1  # the $
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.lookup(name)
            if not found and self.lx.skip_unset:
                return "$" + name
            return value
        self.pos += 1  # the {
        ch = self.peek()
        if ch == "":
            raise ExpansionError("syntax error: missing '}'")
        if ch in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "":
            # BuildKit 0.13 reads the end of the text as a modifier, rune
            # U+FFFD (docker 26: `${A` is "unsupported modifier (\ufffd)")
            raise ExpansionError("unsupported modifier (\ufffd) in substitution")
        if op == "}":
            value, found = self.lookup(name)
            if not found and self.lx.skip_unset:
                return "${" + name + "}"
            return value
        if op == "/":
            return self.substitute(name, depth)
        null_is_unset = False
        modifier = op
        if op == ":":
            null_is_unset = True
            op = self.next()
            modifier += op
        if op not in ("+", "-", "?", "#", "%"):
            raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")
        try:
            word, _ = self.stop_on("}", op in "#%", depth + 1)
        except ExpansionError:
            if self.pos >= len(self.text):
                raise ExpansionError("syntax error: missing '}'") from None
            raise
        value, found = self.lookup(name)
        if self.lx.skip_unset and not found:
            return "${" + name + modifier + word + "}"
        empty = not found or (null_is_unset and value == "")
        if op == "-":
            return word if empty else value
        if op == "+":
            return "" if empty else word
        if op == "?":
            if not found:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(op)
        if greedy:
            word = word[1:]
        if op == "#":
            return _trim_prefix(word, value, greedy)
        return _trim_suffix(word, value, greedy)

    def substitute(self, name: str, depth: int) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.pos += 1
        try:
            pattern, _ = self.stop_on("/", True, depth + 1)
        except ExpansionError:
            if self.pos >= len(self.text):
                raise ExpansionError("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement, _ = self.stop_on("}", True, depth + 1)
        except ExpansionError:
            if self.pos >= len(self.text):
                raise ExpansionError("syntax error: missing '}'") from None
            raise
        value, found = self.lookup(name)
        if self.lx.skip_unset and not found:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        regex = _pattern_regex(pattern, greedy=True, anchored=False)
        if replace_all:
            if not pattern:
                return value
            return regex.sub(lambda _m: replacement, value)
        match = regex.search(value)
        if match is None:
            return value
        return value[: match.start()] + replacement + value[match.end():]


def _pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern:
    """A shell wildcard pattern (`*`, `?`, escapes; no brackets, as in
    BuildKit) as a regular expression."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            nxt = pattern[i] if i < len(pattern) else ""
            if nxt in ("}", "/"):
                continue  # the escape protected the ${} syntax, not the pattern
            if nxt not in ("*", "?", "\\"):
                raise ExpansionError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{nxt}'"
                )
            out.append(re.escape(nxt))
            i += 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _pattern_regex(pattern, greedy=greedy, anchored=True).search(value)
    return value[match.end():] if match else value


def _reverse_pattern(pattern: str) -> str:
    # Reverse, keeping each escape in front of the character it escapes.
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            tokens.append(pattern[i : i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # The shortest rightmost match is the shortest leftmost match of the
    # reversed pattern in the reversed value.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]
