"""Source paths and patterns as COPY reads them (builder/context/trees.py):
paths cleaned against `/`, patternmatcher's matching per path component
for wildcards, and .dockerignore-style pattern sets with the question a walk
asks to prune an excluded directory."""

from __future__ import annotations

import os
import re
import posixpath
from functools import lru_cache
from pathlib import Path
from typing import Callable

from frontend.dockerignore import Matcher, pattern_matcher
from frontend.errors import ContextError


def clean_path(path: str) -> str:
    """Clean a source path against `/`: `../x`, `/x` and `./x` are all `x`."""
    cleaned = posixpath.normpath("/" + path)
    # normpath keeps a leading "//" (POSIX allows it to be special)
    return cleaned.lstrip("/")


def has_wildcard(component: str) -> bool:
    i = 0
    while i < len(component):
        ch = component[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def split_wildcards(path: str) -> tuple[str, str]:
    """("dir/sub", "*.txt/x") for "dir/sub/*.txt/x": the literal prefix and the
    part from the first component holding a wildcard on."""
    parts = path.split("/") if path else []
    for i, part in enumerate(parts):
        if has_wildcard(part):
            return "/".join(parts[:i]), "/".join(parts[i:])
    return path, ""


def component_matchers(pattern: str, wildcard: str) -> list[Callable[[str], bool]]:
    try:
        return [_compile_component(part) for part in wildcard.split("/")]
    except (ValueError, re.error) as exc:
        raise ContextError(f"COPY failed: invalid pattern {pattern!r}: {exc}") from None


@lru_cache(maxsize=256)
def _compile_component(part: str) -> Callable[[str], bool]:
    """One path component of a COPY wildcard, matched as BuildKit 0.13 does
    (docker 26): with patternmatcher's reading, not filepath.Match's, so
    `**` is `*` within a component, `**.txt` takes any name ending in
    .txt, and a `?` or `*` inside `[...]` is no literal (`a[?]b` takes
    no `a?b`; `[[]x]` still takes `[x]`)."""
    return pattern_matcher(part)


def find_wildcard(base: Path, matchers: list[Callable[[str], bool]], prefix: str = "", *,
                   observer=None) -> list[str]:
    """Paths below `base` whose components match `matchers` one to one, in
    lexical order; like filepath.Walk, symlinked directories are not entered
    on the way (a final symlink still matches and is followed later)."""
    found = []
    if observer is not None:
        observer.look(base)  # a new match changes the directory's times
    try:
        with os.scandir(base) as it:
            children = sorted(it, key=lambda d: d.name)
    except NotADirectoryError:
        return found
    here, rest = matchers[0], matchers[1:]
    for child in children:
        if not here(child.name):
            continue
        rel = f"{prefix}/{child.name}" if prefix else child.name
        if not rest:
            found.append(rel)
        elif child.is_dir(follow_symlinks=False):
            found.extend(find_wildcard(Path(child.path), rest, rel, observer=observer))
    return found


class PatternSet:
    """.dockerignore-style patterns over relative paths, with the question the
    walk needs for pruning: could a `!` exception bring back something below
    this excluded directory?"""

    def __init__(self, patterns: tuple[str, ...]):
        self._matcher = Matcher(list(patterns)) if patterns else None

    def excluded(self, relpath: str) -> bool:
        return self._matcher is not None and bool(relpath) and self._matcher.excluded(relpath)

    def may_reinclude_below(self, relpath: str) -> bool:
        return self._matcher is not None and self._matcher.may_reinclude_below(relpath)
