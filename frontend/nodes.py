"""The parser's output: a Dockerfile as nodes, one per instruction, with
its parser directives (frontend.parser makes them)."""

from __future__ import annotations

from dataclasses import dataclass

from frontend.errors import Location


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
