""".dockerignore: reading the file and matching context paths against it.

Semantics follow moby/patternmatcher, which BuildKit uses:
- patterns are Go `filepath.Match` globs (`*`, `?`, `[...]`, `\\` escapes)
  plus `**`, which matches any number of directories (zero included);
- a pattern that matches a directory excludes everything under it, and
  matching follows the walk down the tree (see Matcher);
- `!pattern` re-includes; the last matching pattern wins;
- patterns are cleaned (`./a/` → `a`, leading `/` dropped), lines starting
  with `#` are comments, blank lines are ignored.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

from frontend.errors import DockerfileError
from frontend.parser import read_bounded


def read_dockerignore(stream, name: str = ".dockerignore") -> tuple[str, ...]:
    """The patterns of an ignore file read from a binary stream, bounded as
    BuildKit bounds it (see frontend.parser.MAX_FILE_SIZE)."""
    return parse_dockerignore(read_bounded(stream, name, "dockerignore").decode("utf-8", "replace"))


def parse_dockerignore(text: str) -> tuple[str, ...]:
    """The patterns of a .dockerignore file, cleaned, in order."""
    if text.startswith("\ufeff"):
        text = text[1:]
    patterns: list[str] = []
    for line in text.split("\n"):
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return tuple(patterns)


def _clean(path: str) -> str:
    """Go's filepath.Clean (normpath keeps a leading "//", Go does not)."""
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


@dataclass(frozen=True)
class _Pattern:
    text: str  # cleaned, without "!"
    exclusion: bool  # True for "!pattern" (re-include)
    match: Callable[[str], bool]
    parts: tuple[str, ...]


def pattern_matcher(text: str) -> Callable[[str], bool]:
    """How patternmatcher decides a match for one cleaned pattern. Besides a
    regex it has three shortcuts that are not what the regex would say: no
    wildcard is a plain comparison; a trailing `**` with nothing special
    before it is a string prefix (`ke**` takes `keep/x`); a leading `**`
    with nothing special after it is a string suffix (`**.log` takes
    `a/b.log` and `xb.log`, not only whole names)."""
    if _plain(text):
        return text.__eq__
    rest = text[2:]
    if text.startswith("**") and rest and _plain(rest):
        return lambda path: path.endswith(rest) or (rest[0] == "/" and path == rest[1:])
    if text.endswith("**") and _plain(text[:-2]):
        head = text[:-2]
        return lambda path: path.startswith(head)
    regex = _compile(text)
    return lambda path: regex.match(path) is not None


def _plain(text: str) -> bool:
    """Nothing in `text` that patternmatcher reads as a wildcard or an escape."""
    return not any(c in text for c in "*?[]\\")


def _compile(text: str) -> re.Pattern:
    """patternmatcher's regex for a pattern: `*`, `?` and `**` become regex
    pieces wherever they stand, inside a `[...]` too, and `[`/`]` are passed
    to the regex as they are, so `a[?]b` never matches `a?b` (the class
    takes `[`, `^` or `/`), as in BuildKit. The pattern must first be one
    Go's filepath.Match accepts (`_validate`)."""
    _validate(text)
    out = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1  # "**/" is "**"
                out.append(".*" if i >= n else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i < n:
                out.append("\\" + text[i])
                i += 1
            else:
                out.append("\\\\")
        elif ch in ".+()|{}$":
            out.append("\\" + ch)
        else:
            out.append(ch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "[[" reads as a nested set to Python
        return re.compile("^" + _as_python_regex("".join(out)) + "$", re.DOTALL)


def _validate(text: str) -> None:
    """ValueError unless Go's filepath.Match takes the pattern (what
    patternmatcher.New checks before it builds its regex)."""
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == "[":
            i, _ = glob_class(text, i + 1)
        else:
            i += 1


def _as_python_regex(go: str) -> str:
    """A Go (RE2) regex as Python's re reads it the same way: inside a
    class, Go takes `[` as a plain character and a `]` right after the
    opening (or after `^`) as one too; Python needs them escaped."""
    out = []
    i = 0
    in_class = opening = False
    while i < len(go):
        ch = go[i]
        if ch == "\\" and i + 1 < len(go):
            out.append(go[i:i + 2])
            i += 2
            opening = False
            continue
        i += 1
        if not in_class:
            out.append(ch)
            if ch == "[":
                in_class = opening = True
                if i < len(go) and go[i] == "^":
                    out.append("^")
                    i += 1
            continue
        if ch == "]" and not opening:
            in_class = False
            out.append("]")
        elif ch in "[]":
            out.append("\\" + ch)
        else:
            out.append(ch)
        opening = False
    return "".join(out)


def glob_class(text: str, start: int) -> tuple[int, str]:
    """A `[...]` class starting after "[", as Go's filepath.Match reads it:
    (the index after its "]", the regex). Also used for COPY source paths."""
    i = start
    negate = i < len(text) and text[i] == "^"
    if negate:
        i += 1
    items: list[str] = []
    first = True
    while True:
        if i >= len(text):
            raise ValueError("syntax error in pattern")
        ch = text[i]
        if ch == "]" and not first:
            i += 1
            break
        first = False
        lo, i = _class_char(text, i)
        if i < len(text) and text[i] == "-" and i + 1 < len(text) and text[i + 1] != "]":
            hi, i = _class_char(text, i + 1)
            if hi < lo:
                raise ValueError("syntax error in pattern")
            items.append(re.escape(lo) + "-" + re.escape(hi))
        else:
            items.append(re.escape(lo))
    body = "".join(items)
    # Go never lets a class match the separator.
    return i, ("[^/" + body + "]") if negate else ("(?!/)[" + body + "]")


def _class_char(text: str, i: int) -> tuple[str, int]:
    ch = text[i]
    if ch == "\\":
        if i + 1 >= len(text):
            raise ValueError("syntax error in pattern")
        return text[i + 1], i + 2
    return ch, i + 1


class Matcher:
    """Decides which context paths the patterns exclude, as BuildKit's
    context walker (fsutil's filter) does.

    Paths are relative to the context root, "/"-separated ("a/b.txt").

    The walker asks patternmatcher's MatchesUsingParentResults for each
    entry with the answers its directory got, pattern by pattern: a pattern
    that matched a directory counts as matching everything below it, and a
    pattern that did not is tried against the entry's own path only. A `!`
    pattern is only tried while the path is excluded and a plain one only
    while it is not, so `a/b` then `!a` leaves `a/b/y` excluded (the `!a`
    was never tried on `a/b`, as it was not excluded yet when `a` was seen),
    where matching every ancestor afresh would bring it back.
    """

    def __init__(self, patterns: tuple[str, ...] | list[str]):
        compiled = []
        for raw in patterns:
            exclusion = raw.startswith("!")
            text = raw[1:] if exclusion else raw
            if not text:
                raise DockerfileError("illegal exclusion pattern: \"!\"")
            text = _clean(text)
            try:
                match = pattern_matcher(text)
            except (ValueError, re.error):
                raise DockerfileError(f"syntax error in pattern: {raw}") from None
            compiled.append(_Pattern(text, exclusion, match, tuple(text.split("/"))))
        self.patterns: tuple[_Pattern, ...] = tuple(compiled)
        self._dirs: dict[str, tuple[bool, tuple[bool, ...]]] = {}

    @cached_property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def excluded(self, relpath: str) -> bool:
        """Whether the .dockerignore removes this path from the context."""
        path = _clean(relpath.lstrip("/")) if relpath else "."
        return self._walk_to(path)[0]

    def _walk_to(self, path: str) -> tuple[bool, tuple[bool, ...]]:
        """(excluded, which patterns matched) for `path`, from its parent's
        answers as the walk reaches it. The answers of its directories are
        kept, as a walk asks about their children in turn; those not kept
        are worked out down from the nearest one that is (a loop, not a
        recursion: a path may have thousands of components)."""
        known = self._dirs.get(path)
        if known is not None:
            return known
        down = [path]
        parent = path.rpartition("/")[0]
        while parent and parent not in self._dirs:
            down.append(parent)
            parent = parent.rpartition("/")[0]
        inherited = self._dirs[parent][1] if parent else None
        for depth in range(len(down) - 1, -1, -1):
            answer = self._answer(down[depth], inherited)
            if depth:
                if len(self._dirs) >= 4096:
                    self._dirs.clear()
                self._dirs[down[depth]] = answer
            inherited = answer[1]
        return answer

    def _answer(self, path: str, inherited: tuple[bool, ...] | None) -> tuple[bool, tuple[bool, ...]]:
        matched = False
        hits = []
        for i, pattern in enumerate(self.patterns):
            hit = inherited is not None and inherited[i]
            if not hit and pattern.exclusion == matched:
                hit = pattern.match(path)
            hits.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, tuple(hits)

    def may_reinclude_below(self, reldir: str) -> bool:
        """Whether a walker must descend into this directory: False only when
        the directory is excluded and no `!` pattern can re-include anything
        below it, so the whole subtree can be skipped."""
        if not self.excluded(reldir):
            return True
        dir_parts = _clean(reldir.lstrip("/")).split("/")
        for pattern in self.patterns:
            if pattern.exclusion and _could_match_below(pattern, dir_parts):
                return True
        return False


def _could_match_below(pattern: _Pattern, dir_parts: list[str]) -> bool:
    # Compare component by component; a "**" can absorb anything, and a
    # pattern that is exhausted matched an ancestor, which re-includes all.
    for i, part in enumerate(dir_parts):
        if i >= len(pattern.parts):
            return True
        component = pattern.parts[i]
        if "**" in component:
            return True
        try:
            if not _compile(component).match(part):
                return False
        except (ValueError, re.error):
            return True
    return True
