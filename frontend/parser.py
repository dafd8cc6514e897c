"""Dockerfile text → nodes, as BuildKit's `frontend/dockerfile/parser` does.

One node per instruction, with its 1-based line range. This layer knows the
surface syntax only: parser directives, line continuations, comments,
`--flags`, JSON versus shell form, and heredoc bodies. It does not expand
variables and does not know which flags an instruction accepts; that is
`instruction_parsing.py`. How each instruction's arguments are split is
`instruction_line.py`; the nodes are defined in `nodes.py`.

The parser makes one pass over the lines and touches each character a
bounded number of times, so its cost is linear in the size of the file.
"""

from __future__ import annotations

import re
from dataclasses import replace

from frontend.errors import ContextError, DockerfileError, Location
from frontend.instruction_line import LineError
from frontend.instruction_line import node_from_line as _node_from_line
from frontend.lexer import ExpansionError, Lexer
from frontend.nodes import Directive, Dockerfile, Heredoc, Node

DIRECTIVES = ("syntax", "escape", "check")
_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
# Whitespace may follow `<<` (BuildKit 0.22, moby/buildkit#5817).
_HEREDOC = re.compile(r"^(\d*)<<(-?)[\t\n\f\r ]*([^<]*)$")
_HEREDOC_COMMANDS = frozenset({"add", "copy", "run"})


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
    context's Dockerfile through builder.context.dockerfile.open_context_file, which
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
                first = next((d.line for d in directives if d.name == name), None)
                if first is not None:
                    # docker 26 points at the directive given first
                    raise DockerfileError(
                        f"only one {name} parser directive can be used", Location(path, first, first)
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
        except LineError as err:
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
