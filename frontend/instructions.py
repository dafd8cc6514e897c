"""Typed instructions: what each Dockerfile instruction means, as frozen
records carrying their Dockerfile location.

frontend.instruction_parsing makes them from parser nodes, checking their
flags (an unknown or malformed flag is an error, as in BuildKit's BFlags);
words are still unexpanded, because expansion depends on the ARG/ENV scope
at the point of use, which is the converter's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from frontend.errors import Location
from frontend.nodes import Heredoc

INSTRUCTIONS = (
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck",
    "label", "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
)  # fmt: skip

@dataclass(frozen=True)
class Instruction:
    keyword: str  # as written, e.g. "run"
    location: Location
    original: str  # the instruction line as written (continuations joined)

    @property
    def name(self) -> str:
        return self.keyword.upper()


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str


@dataclass(frozen=True)
class ArgDef:
    key: str
    value: str | None  # None: declared without a default


@dataclass(frozen=True)
class From(Instruction):
    base: str = ""
    stage_name: str = ""  # lower-cased, "" when unnamed
    stage_name_as_written: str = ""
    as_keyword: str = ""
    platform: str = ""


@dataclass(frozen=True)
class Env(Instruction):
    pairs: tuple[KeyValue, ...] = ()
    legacy: bool = False


@dataclass(frozen=True)
class Label(Instruction):
    pairs: tuple[KeyValue, ...] = ()
    legacy: bool = False


@dataclass(frozen=True)
class Arg(Instruction):
    args: tuple[ArgDef, ...] = ()


@dataclass(frozen=True)
class Run(Instruction):
    command: tuple[str, ...] = ()
    shell_form: bool = True  # False for the JSON (exec) form
    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[str, ...] = ()  # raw --mount values, expanded when dispatched
    network: str = ""
    security: str = ""


@dataclass(frozen=True)
class Cmd(Instruction):
    command: tuple[str, ...] = ()
    shell_form: bool = True


@dataclass(frozen=True)
class Entrypoint(Instruction):
    command: tuple[str, ...] = ()
    shell_form: bool = True


@dataclass(frozen=True)
class Shell(Instruction):
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceContent:
    """A heredoc used as a COPY/ADD source."""

    path: str
    data: str
    expand: bool


@dataclass(frozen=True)
class Copy(Instruction):
    sources: tuple[str, ...] = ()
    dest: str = ""
    contents: tuple[SourceContent, ...] = ()
    from_: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    json: bool = False


@dataclass(frozen=True)
class Add(Instruction):
    sources: tuple[str, ...] = ()
    dest: str = ""
    contents: tuple[SourceContent, ...] = ()
    chown: str = ""
    chmod: str = ""
    link: bool = False
    keep_git_dir: bool = False
    checksum: str = ""
    unpack: bool | None = None
    excludes: tuple[str, ...] = ()
    json: bool = False


@dataclass(frozen=True)
class Workdir(Instruction):
    path: str = ""


@dataclass(frozen=True)
class User(Instruction):
    user: str = ""


@dataclass(frozen=True)
class Expose(Instruction):
    ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class Volume(Instruction):
    paths: tuple[str, ...] = ()
    json: bool = False


@dataclass(frozen=True)
class StopSignal(Instruction):
    signal: str = ""


@dataclass(frozen=True)
class Healthcheck(Instruction):
    """`test` is ("NONE",), ("CMD", *argv) or ("CMD-SHELL", cmdline); the
    durations are nanoseconds (0 = inherit the runtime default)."""

    test: tuple[str, ...] = ()
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Onbuild(Instruction):
    expression: str = ""  # the trigger as Dockerfile text, heredocs appended
    trigger: str = ""  # the trigger's instruction name, upper-case


@dataclass(frozen=True)
class Maintainer(Instruction):
    maintainer: str = ""


@dataclass(frozen=True)
class Stage:
    from_: From
    commands: tuple[Instruction, ...]
    index: int

    @property
    def name(self) -> str:
        return self.from_.stage_name


class Failure(Exception):
    """An instruction that cannot be parsed, before its location is known:
    the caller raises it again as a DockerfileError at the instruction."""
