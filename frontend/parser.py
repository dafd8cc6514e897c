"""Dockerfile text → nodes, as BuildKit's `frontend/dockerfile/parser` does.

One node per instruction, with its 1-based line range. This layer knows the
surface syntax only: parser directives, line continuations, comments,
`--flags`, JSON versus shell form, and heredoc bodies. It does not expand
variables and does not know which flags an instruction accepts; that is
`instructions.py`.

The parser makes one pass over the lines and touches each character a
bounded number of times, so its cost is linear in the size of the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from frontend.errors import ContextError, DockerfileError, Location
from frontend.lexer import ExpansionError, Lexer

DIRECTIVES = ("syntax", "escape", "check")
_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
# Whitespace may follow `<<` (BuildKit 0.22, moby/buildkit#5817).
_HEREDOC = re.compile(r"^(\d*)<<(-?)[\t\n\f\r ]*([^<]*)$")
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_COMMANDS = frozenset({"add", "copy", "run"})


@dataclass(frozen=True)
class Heredoc:
    """A `<<NAME` body. `expand` is False when the name was quoted."""

    name: str
    content: str
    expand: bool = True
    chomp: bool = False  # <<-NAME: leading tabs are stripped
    fd: int = 0


@dataclass(frozen=True)
class Node:
    """One instruction as written.

    `keyword` keeps the author's casing (the casing checks need it);
    `args` are the arguments split the way this instruction splits them
    (quotes still in place, nothing expanded); `original` is the joined
    instruction line without heredoc bodies.
    """

    keyword: str
    args: tuple[str, ...]
    flags: tuple[str, ...]
    json: bool
    original: str
    start: int
    end: int
    heredocs: tuple[Heredoc, ...] = ()
    comments: tuple[str, ...] = ()
    legacy_kv: bool = False  # ENV/LABEL "key value" form
    sub: Node | None = None  # the trigger of an ONBUILD

    @property
    def command(self) -> str:
        return self.keyword.lower()

    def location(self, path: str) -> Location:
        return Location(path, self.start, self.end)


@dataclass(frozen=True)
class Directive:
    name: str
    value: str
    line: int


@dataclass(frozen=True)
class Dockerfile:
    path: str
    nodes: tuple[Node, ...]
    directives: tuple[Directive, ...]
    escape: str = "\\"
    empty_continuations: tuple[int, ...] = ()  # lines, for NoEmptyContinuation

    def directive(self, name: str) -> str | None:
        for d in self.directives:
            if d.name == name:
                return d.value
        return None


class _Error(Exception):
    """Internal: an error whose location the caller knows."""


# BuildKit's bound on the Dockerfile and ignore files it loads (dockerui's
# maxFileSize: containerd's default gRPC message size, 16 MiB). A bound also
# ends a read of something endless, such as stdin fed from /dev/zero.
MAX_FILE_SIZE = 16 << 20


def read_bounded(stream, name: str, what: str = "dockerfile") -> bytes:
    """At most MAX_FILE_SIZE bytes of a binary stream; ContextError beyond."""
    data = stream.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise ContextError(f"failed to read {what}: {name} exceeds maximum allowed size of "
                           f"{MAX_FILE_SIZE} bytes")
    return data


def read_dockerfile(stream, name: str = "Dockerfile") -> str:
    """A Dockerfile's text from a binary stream (an opened file, stdin),
    with its line endings as written: Python's universal newlines would turn
    CRLF into LF, and BuildKit keeps CRLF in heredoc bodies. Callers open a
    context's Dockerfile through builder.context.trees.open_context_file, which
    keeps the read inside the context."""
    try:
        return read_bounded(stream, name).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContextError(f"failed to read dockerfile: {name} is not UTF-8 text ({exc.reason} at byte "
                           f"{exc.start})") from None


def parse(text: str, path: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile text. Raises DockerfileError with a location."""
    raw_lines = _split_lines(text)
    lines = [_trim_newline(line) for line in raw_lines]
    directives: list[Directive] = []
    escape = "\\"
    directives_done = False
    nodes: list[Node] = []
    empty_continuations: list[int] = []
    comments: list[str] = []
    i = 0
    n = len(lines)
    while i < n:
        raw = lines[i]
        i += 1
        lineno = i
        stripped = raw.lstrip()
        if not directives_done:
            directive = _directive(stripped)
            if directive is None:
                directives_done = True
            else:
                name, value = directive
                if any(d.name == name for d in directives):
                    raise DockerfileError(
                        f"only one {name} parser directive can be used", Location(path, lineno, lineno)
                    )
                if name == "escape":
                    if value not in ("\\", "`"):
                        raise DockerfileError(
                            f"invalid escape token '{value}' does not match ` or \\",
                            Location(path, lineno, lineno),
                        )
                    escape = value
                directives.append(Directive(name, value, lineno))
                continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            comments = comments + [body] if body else []
            continue
        if not stripped.strip():
            # A blank line ends a block of comments describing the next line.
            comments = []
            continue
        parts = []
        piece, done = _trim_continuation(stripped, escape)
        parts.append(piece)
        while not done and i < n:
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#"):
                continue  # comments may sit inside a continued instruction
            if not nxt.strip():
                empty_continuations.append(i)
                continue
            piece, done = _trim_continuation(nxt, escape)
            parts.append(piece)
        line = "".join(parts)
        if not line.strip():
            comments = []
            continue
        end = i
        try:
            node = _node_from_line(line, escape, lineno, end, tuple(comments))
        except _Error as err:
            raise DockerfileError(str(err), Location(path, lineno, end)) from None
        comments = []
        if _may_have_heredocs(node) and "<<" in line:
            docs = []
            for name, expand, chomp, fd in _heredoc_names(line):
                body: list[str] = []
                terminated = False
                while i < n:
                    text_line = lines[i]
                    i += 1
                    candidate = text_line.lstrip("\t") if chomp else text_line
                    if candidate == name:
                        terminated = True
                        break
                    # BuildKit keeps a body line's own ending: a CRLF
                    # Dockerfile gives heredocs with CRLF content.
                    body.append(raw_lines[i - 1])
                if not terminated:
                    raise DockerfileError("unterminated heredoc", Location(path, lineno, i))
                docs.append(Heredoc(name, "".join(body), expand, chomp, fd))
            node = _with_heredocs(node, tuple(docs), i)
        nodes.append(node)
    if not nodes:
        # BuildKit's parser reports this at the last line it read.
        raise DockerfileError("file with no instructions", Location(path, max(n, 1), max(n, 1)))
    return Dockerfile(path, tuple(nodes), tuple(directives), escape, tuple(empty_continuations))


def _split_lines(text: str) -> list[str]:
    """The lines with their endings, as BuildKit's scanner reads them (a
    last line may have none)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    # Not str.splitlines: it also splits on \r, \v, \f and others, and
    # only \n ends a line for BuildKit.
    lines = [line + "\n" for line in text.split("\n")]
    last = lines.pop()[:-1]
    if last:
        lines.append(last)
    return lines


def _trim_newline(line: str) -> str:
    # BuildKit's trimNewline drops every trailing \r and \n.
    return line.rstrip("\r\n")


def _directive(line: str) -> tuple[str, str] | None:
    match = _DIRECTIVE.match(line)
    if not match or match.group(1).lower() not in DIRECTIVES:
        return None
    return match.group(1).lower(), match.group(2)


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """Remove a trailing escape (plus spaces/tabs after it); the bool says
    whether the instruction ends on this line.

    An escape preceded by another escape (`echo a\\\\`) is an escaped
    escape, not a continuation: BuildKit's continuation pattern requires a
    character other than the escape before it (or the escape alone)."""
    end = len(line.rstrip(" \t"))
    if end and line[end - 1] == escape and (end == 1 or line[end - 2] != escape):
        return line[: end - 1], False
    return line, True


def _may_have_heredocs(node: Node) -> bool:
    target = node.sub if node.command == "onbuild" and node.sub is not None else node
    return target.command in _HEREDOC_COMMANDS and not target.json


def _with_heredocs(node: Node, docs: tuple[Heredoc, ...], end: int) -> Node:
    sub = node.sub
    if sub is not None:
        sub = _replace(sub, heredocs=docs, end=end)
    return _replace(node, heredocs=docs, end=end, sub=sub)


def _replace(node: Node, **changes) -> Node:
    from dataclasses import replace

    return replace(node, **changes)


# -- heredoc names -------------------------------------------------------

_RAW_LEXER = Lexer("\\", raw_quotes=True, raw_escapes=True, skip_unset=True)
_NAME_LEXER = Lexer("\\", skip_unset=True)
_NAME_LEXER_RAW = Lexer("\\", raw_quotes=True, skip_unset=True)


def parse_heredoc(word: str) -> tuple[str, bool, bool, int] | None:
    """(name, expand, chomp, fd) if `word` is a heredoc redirection such as
    `<<EOF`, `<<-"EOF"` or `3<<EOF`, else None."""
    match = _HEREDOC.match(word)
    if not match or not match.group(3):
        return None
    rest = match.group(3)
    try:
        words = _NAME_LEXER.process_words(rest, {})
        raw_words = _NAME_LEXER_RAW.process_words(rest, {})
    except ExpansionError:
        return None
    if len(words) != 1 or len(raw_words) != 1:
        return None
    name = words[0]
    # A quoted delimiter (any part of it) turns off expansion of the body.
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw_words[0].count("'") + raw_words[0].count('"')
    fd = int(match.group(1)) if match.group(1) else 0
    return name, quotes == raw_quotes, match.group(2) == "-", fd


def _heredoc_names(line: str) -> list[tuple[str, bool, bool, int]]:
    try:
        words = _RAW_LEXER.process_words(line, {})
    except ExpansionError:
        return []
    found = []
    for word in words:
        doc = parse_heredoc(word)
        if doc is not None:
            found.append(doc)
    return found


def chomp_heredoc(content: str) -> str:
    """`<<-` strips leading tabs from every body line."""
    return re.sub(r"(?m)^\t+", "", content)


# -- one instruction line --------------------------------------------------


def _node_from_line(line: str, escape: str, start: int, end: int, comments: tuple[str, ...]) -> Node:
    keyword, flags, rest = _split_command(line)
    command = keyword.lower()
    legacy = False
    is_json = False
    sub = None
    if command in ("from", "expose"):
        args = _split_whitespace(rest)
    elif command in ("cmd", "entrypoint", "run", "shell"):
        args, is_json = _maybe_json(rest)
    elif command in ("add", "copy", "volume"):
        args, is_json = _maybe_json_list(rest)
    elif command in ("env", "label"):
        args, legacy = _name_val(rest, keyword.upper(), escape)
    elif command == "arg":
        args = tuple(_words(rest, escape))
    elif command in ("maintainer", "stopsignal", "user", "workdir"):
        args = (rest,) if rest else ()
    elif command == "healthcheck":
        args, is_json = _health_config(rest)
    elif command == "onbuild":
        if not rest:
            args = ()
        else:
            sub = _node_from_line(rest, escape, start, end, ())
            args = (sub.keyword, *sub.args)
    else:
        args = _split_whitespace(rest)  # rejected by instructions.py with its name
    return Node(
        keyword=keyword,
        args=args,
        flags=tuple(flags),
        json=is_json,
        original=line.strip(),
        start=start,
        end=end,
        comments=comments,
        legacy_kv=legacy,
        sub=sub,
    )


def _split_command(line: str) -> tuple[str, list[str], str]:
    parts = _WHITESPACE.split(line.strip(), maxsplit=1)
    if len(parts) < 2:
        return parts[0], [], ""
    rest, flags = _extract_flags(parts[1])
    return parts[0], flags, rest.strip()


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Leading `--name=value` words; quotes and backslashes inside a flag
    are processed here, as in BuildKit's extractBuilderFlags."""
    flags: list[str] = []
    pos = 0
    n = len(line)
    while True:
        while pos < n and line[pos].isspace():
            pos += 1
        if pos >= n:
            return "", flags
        if not line.startswith("--", pos):
            return line[pos:], flags
        word: list[str] = []
        quote = ""
        blank_ok = False
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == "\\" and pos + 1 < n:
                    pos += 1
                    word.append(line[pos])
                elif ch != "\\":
                    word.append(ch)
                pos += 1
                continue
            if ch.isspace():
                break
            if ch in "'\"":
                quote = ch
                blank_ok = True
            elif ch == "\\":
                if pos + 1 < n:
                    pos += 1
                    word.append(line[pos])
            else:
                word.append(ch)
            pos += 1
        text = "".join(word)
        if text == "--":
            return line[pos:], flags  # "--" ends the flags
        if blank_ok or text:
            flags.append(text)


def _split_whitespace(rest: str) -> tuple[str, ...]:
    return tuple(w for w in _WHITESPACE.split(rest) if w) if rest else ()


def _parse_json_array(rest: str) -> tuple[str, ...] | None:
    """The strings of a JSON array, or None when `rest` is not valid JSON
    (BuildKit then falls back to the shell form)."""
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise _Error("when using JSON array syntax, arrays must be comprised of strings only")
    return tuple(value)


def _reject_constant(name: str):
    raise ValueError(name)  # NaN and Infinity are not JSON to Go


def _maybe_json(rest: str) -> tuple[tuple[str, ...], bool]:
    if not rest:
        return (), False
    values = _parse_json_array(rest)
    if values is not None:
        return values, True
    return (rest,), False


def _maybe_json_list(rest: str) -> tuple[tuple[str, ...], bool]:
    values = _parse_json_array(rest)
    if values is not None:
        return values, True
    return _split_whitespace(rest), False


def _words(rest: str, escape: str) -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes in the
    words (BuildKit's parseWords); expansion later removes them."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    blank_ok = False
    in_word = False
    pos = 0
    n = len(rest)
    while pos < n:
        ch = rest[pos]
        if not in_word:
            if ch.isspace():
                pos += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            if ch == escape and quote != "'":
                if pos + 1 == n:
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        if ch.isspace():
            if blank_ok or word:
                words.append("".join(word))
            word = []
            blank_ok = False
            in_word = False
            pos += 1
            continue
        if ch in "'\"":
            quote = ch
            blank_ok = True
        if ch == escape:
            if pos + 1 == n:
                pos += 1
                continue
            word.append(ch)
            pos += 1
            ch = rest[pos]
        word.append(ch)
        pos += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def _name_val(rest: str, keyword: str, escape: str) -> tuple[tuple[str, ...], bool]:
    """ENV and LABEL: `k=v k2=v2` or the legacy `k value with spaces`."""
    words = _words(rest, escape)
    if not words:
        raise _Error(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2 or not parts[1]:
            raise _Error(f"{keyword} must have two arguments")
        return (parts[0], parts[1]), True
    args: list[str] = []
    for word in words:
        if "=" not in word:
            raise _Error(
                f"Syntax error - can't find = in {json.dumps(word)}. Must be of the form: name=value"
            )
        key, value = word.split("=", 1)
        args += [key, value]
    return tuple(args), False


def _health_config(rest: str) -> tuple[tuple[str, ...], bool]:
    parts = _WHITESPACE.split(rest, maxsplit=1) if rest else []
    if not parts or not parts[0]:
        return (), False
    kind = parts[0]
    if len(parts) == 1:
        return (kind,), False
    values, is_json = _maybe_json(parts[1])
    return (kind, *values), is_json
