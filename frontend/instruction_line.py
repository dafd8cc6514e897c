"""One instruction line (continuations joined, heredoc bodies apart) →
a Node: the keyword, the leading `--flags`, and the arguments split the
way that instruction splits them (JSON or shell form, words, key=value
pairs), as BuildKit's parser does with its per-instruction dispatch table.
Quotes stay in place and nothing is expanded."""

from __future__ import annotations

import json
import re

from frontend.nodes import Node

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")


class LineError(Exception):
    """A malformed instruction line; the parser adds its location."""


def node_from_line(line: str, escape: str, start: int, end: int, comments: tuple[str, ...]) -> Node:
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
            sub = node_from_line(rest, escape, start, end, ())
            args = (sub.keyword, *sub.args)
    else:
        args = _split_whitespace(rest)  # rejected with its name by instruction_parsing
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
        raise LineError("when using JSON array syntax, arrays must be comprised of strings only")
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
        raise LineError(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2 or not parts[1]:
            raise LineError(f"{keyword} must have two arguments")
        return (parts[0], parts[1]), True
    args: list[str] = []
    for word in words:
        if "=" not in word:
            raise LineError(
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
