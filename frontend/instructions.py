"""Typed instructions: parser nodes checked and given their meaning.

Each instruction is a frozen dataclass carrying its Dockerfile location.
Flags are validated here (an unknown or malformed flag is an error, as in
BuildKit's BFlags); words are still unexpanded, because expansion depends
on the ARG/ENV scope at the point of use, which is `convert.py`'s business.
"""

from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass
from typing import Callable

from frontend.durations import parse_duration
from frontend.errors import DockerfileError, Location
from frontend.ops import MountType, Sharing
from frontend.parser import Dockerfile, Heredoc, Node, chomp_heredoc, parse_heredoc

INSTRUCTIONS = (
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck",
    "label", "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
)  # fmt: skip

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


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


class _Fail(Exception):
    pass


# -- flags ---------------------------------------------------------------

_BOOL, _STRING, _STRINGS = "bool", "string", "strings"

_FLAGS: dict[str, dict[str, str]] = {
    "add": {"chown": _STRING, "chmod": _STRING, "link": _BOOL, "keep-git-dir": _BOOL,
            "checksum": _STRING, "unpack": _BOOL, "exclude": _STRINGS},
    "copy": {"chown": _STRING, "from": _STRING, "chmod": _STRING, "link": _BOOL,
             "parents": _BOOL, "exclude": _STRINGS},
    "from": {"platform": _STRING},
    "run": {"mount": _STRINGS, "network": _STRING, "security": _STRING},
    "healthcheck": {"interval": _STRING, "timeout": _STRING, "start-period": _STRING,
                    "start-interval": _STRING, "retries": _STRING},
}  # fmt: skip


_UNCHECKED_FLAGS = frozenset({"arg", "stopsignal", "healthcheck"})


def _parse_flags(raw: tuple[str, ...], allowed: dict[str, str]) -> dict[str, object]:
    """BuildKit's BFlags: `--name=value`, booleans may omit the value,
    only repeatable flags may be repeated."""
    values: dict[str, object] = {}
    for arg in raw:
        if not arg.startswith("--"):
            raise _Fail(f"arg should start with -- : {arg}")
        body = arg[2:]
        name, eq, value = body.partition("=")
        kind = allowed.get(name)
        if kind is None:
            raise _Fail(_suggest(f"unknown flag: {name}", name, allowed))
        if name in values and kind != _STRINGS:
            raise _Fail(f"duplicate flag specified: {name}")
        if kind == _BOOL:
            if eq and not value:
                raise _Fail(f"missing a value on flag: {name}")
            lower = value.lower()
            if not eq:
                values[name] = True
            elif lower in ("true", "false"):
                values[name] = lower == "true"
            else:
                raise _Fail(f"expecting boolean value for flag {name}, not: {value}")
        elif not eq:
            raise _Fail(f"missing a value on flag: {name}")
        elif kind == _STRING:
            values[name] = value
        else:
            values.setdefault(name, [])
            values[name].append(value)  # type: ignore[union-attr]
    return values


# -- instruction parsing -------------------------------------------------


def parse_instruction(node: Node, path: str) -> Instruction:
    """The typed instruction of one node, or a DockerfileError at it."""
    location = node.location(path)
    try:
        return _parse(node, location)
    except _Fail as err:
        raise DockerfileError(str(err), location) from None


def _parse(node: Node, location: Location) -> Instruction:
    command = node.command
    if command not in INSTRUCTIONS:
        message = f"unknown instruction: {node.keyword}"
        close = _closest(node.keyword.upper(), [i.upper() for i in INSTRUCTIONS])  # case-insensitive, as BuildKit
        if close:
            suggestion = close if node.keyword.isupper() or not node.keyword.islower() else close.lower()
            message += f" (did you mean {suggestion}?)"
        raise _Fail(message)
    # BuildKit never validates the flags of ARG and STOPSIGNAL (their parsers
    # do not call BFlags.Parse), so `ARG --foo=1 X` builds; HEALTHCHECK
    # checks its own, which depend on its type.
    flags = _parse_flags(node.flags, _FLAGS.get(command, {})) if command not in _UNCHECKED_FLAGS else {}
    base = {"keyword": node.keyword, "location": location, "original": node.original}
    args = node.args
    name = node.keyword.upper()

    if command == "from":
        return _parse_from(node, flags, base)
    if command in ("env", "label"):
        if not args:
            raise _Fail(f"{name} requires at least one argument")
        pairs = []
        for i in range(0, len(args) - 1, 2):
            if not args[i]:
                raise _Fail(f"{name} names can not be blank")
            pairs.append(KeyValue(args[i], args[i + 1]))
        cls = Env if command == "env" else Label
        return cls(**base, pairs=tuple(pairs), legacy=node.legacy_kv)
    if command == "arg":
        if not args:
            raise _Fail("ARG requires at least one argument")
        defs = []
        for arg in args:
            key, eq, value = arg.partition("=")
            if eq and not key:
                raise _Fail("ARG names can not be blank")
            defs.append(ArgDef(key, value if eq else None))
        return Arg(**base, args=tuple(defs))
    if command == "run":
        if not args and not node.heredocs:
            raise _Fail("RUN requires at least one argument")
        for raw in flags.get("mount", []):  # type: ignore[union-attr]
            parse_mount(raw, lambda word: word)
        return Run(
            **base,
            command=args if node.json else (" ".join(args),),
            shell_form=not node.json,
            heredocs=node.heredocs,
            mounts=tuple(flags.get("mount", [])),  # type: ignore[arg-type]
            network=str(flags.get("network", "")),
            security=str(flags.get("security", "")),
        )
    if command in ("cmd", "entrypoint"):
        cls = Cmd if command == "cmd" else Entrypoint
        return cls(**base, command=args if node.json else ((" ".join(args),) if args else ()),
                   shell_form=not node.json)
    if command == "shell":
        if not args:
            raise _Fail("SHELL requires at least one argument")
        if not node.json:
            raise _Fail("SHELL requires the arguments to be in JSON form")
        return Shell(**base, command=args)
    if command in ("copy", "add"):
        return _parse_copy(node, flags, base)
    if command in ("workdir", "user", "stopsignal", "maintainer"):
        if len(args) != 1:
            raise _Fail(f"{name} requires exactly one argument")
        if command == "workdir":
            return Workdir(**base, path=args[0])
        if command == "user":
            return User(**base, user=args[0])
        if command == "stopsignal":
            return StopSignal(**base, signal=args[0])
        return Maintainer(**base, maintainer=args[0])
    if command == "expose":
        if not args:
            raise _Fail("EXPOSE requires at least one argument")
        return Expose(**base, ports=tuple(sorted(args)))
    if command == "volume":
        if not args:
            raise _Fail("VOLUME requires at least one argument")
        paths = tuple(a.strip() for a in args)
        if any(not p for p in paths):
            raise _Fail("VOLUME specified can not be an empty string")
        return Volume(**base, paths=paths, json=node.json)
    if command == "healthcheck":
        return _parse_healthcheck(node, base)
    if command == "onbuild":
        if not args:
            raise _Fail("ONBUILD requires at least one argument")
        trigger = args[0].strip().upper()
        if trigger == "ONBUILD":
            raise _Fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise _Fail(f"{trigger} isn't allowed as an ONBUILD trigger")
        expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original, count=1)
        for doc in node.heredocs:
            expression += "\n" + doc.content + doc.name
        return Onbuild(**base, expression=expression, trigger=trigger)
    raise _Fail(f"unknown instruction: {node.keyword}")  # pragma: no cover


def _parse_from(node: Node, flags: dict, base: dict) -> From:
    args = node.args
    stage_name = written = as_keyword = ""
    if len(args) == 3 and args[1].lower() == "as":
        written = args[2]
        stage_name = written.lower()
        as_keyword = args[1]
        if not _STAGE_NAME.match(stage_name):
            raise _Fail(
                f'invalid name for build stage: "{written}", name can\'t start with a number or contain symbols'
            )
    elif len(args) != 1:
        raise _Fail("FROM requires either one or three arguments")
    return From(
        **base,
        base=args[0],
        stage_name=stage_name,
        stage_name_as_written=written,
        as_keyword=as_keyword,
        platform=str(flags.get("platform", "")),
    )


def _parse_copy(node: Node, flags: dict, base: dict) -> Copy | Add:
    name = node.keyword.upper()
    args = node.args
    if len(args) < 2:
        raise _Fail(
            f"{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        )
    dest = args[-1]
    if not node.json and parse_heredoc(dest) is not None:
        raise _Fail(f"{name} cannot accept a heredoc as a destination")
    docs = {doc.name: doc for doc in node.heredocs}
    sources: list[str] = []
    contents: list[SourceContent] = []
    for src in args[:-1]:
        heredoc = parse_heredoc(src) if not node.json else None
        if heredoc is not None and heredoc[0] in docs:
            doc_name, expand, chomp, _fd = heredoc
            data = docs[doc_name].content
            if chomp:
                data = chomp_heredoc(data)
            contents.append(SourceContent(doc_name, data, expand))
        else:
            sources.append(src)
    common = dict(
        base,
        sources=tuple(sources),
        dest=dest,
        contents=tuple(contents),
        chown=str(flags.get("chown", "")),
        chmod=str(flags.get("chmod", "")),
        link=bool(flags.get("link", False)),
        excludes=tuple(flags.get("exclude", [])),
        json=node.json,
    )
    if node.command == "copy":
        return Copy(**common, from_=str(flags.get("from", "")), parents=bool(flags.get("parents", False)))
    return Add(
        **common,
        keep_git_dir=bool(flags.get("keep-git-dir", False)),
        checksum=str(flags.get("checksum", "")),
        unpack=flags.get("unpack"),  # type: ignore[arg-type]
    )


_MIN_DURATION = 1_000_000  # 1ms, docker's container.MinimumDuration


def _parse_healthcheck(node: Node, base: dict) -> Healthcheck:
    args = node.args
    if not args:
        raise _Fail("HEALTHCHECK requires at least one argument")
    kind = args[0].upper()
    rest = args[1:]
    if kind == "NONE":
        _parse_flags(node.flags, {})
        if rest:
            raise _Fail("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(**base, test=("NONE",))
    flags = _parse_flags(node.flags, _FLAGS["healthcheck"])
    if kind != "CMD":
        raise _Fail(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    command = rest if node.json else ((" ".join(rest),) if rest else ())
    if not command:
        raise _Fail("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *command) if node.json else ("CMD-SHELL", *command)

    def interval(flag: str) -> int:
        value = str(flags.get(flag, ""))
        if not value:
            return 0
        try:
            ns = parse_duration(value)
        except ValueError as err:
            raise _Fail(str(err)) from None
        if ns == 0:
            return 0
        if ns < _MIN_DURATION:
            raise _Fail(f'Interval "{flag}" cannot be less than 1ms')
        return ns

    retries = 0
    if flags.get("retries"):
        text = str(flags["retries"])
        if not re.fullmatch(r"[+-]?\d+", text) or abs(int(text)) > 2**31 - 1:
            raise _Fail(f'strconv.ParseInt: parsing "{text}": invalid syntax')
        retries = int(text)
        if retries < 0:
            raise _Fail(f"--retries cannot be negative ({retries})")
    return Healthcheck(
        **base,
        test=test,
        interval=interval("interval"),
        timeout=interval("timeout"),
        start_period=interval("start-period"),
        start_interval=interval("start-interval"),
        retries=retries,
    )


def parse_stages(dockerfile: Dockerfile) -> tuple[tuple[Arg, ...], tuple[Stage, ...]]:
    """Global ARGs (before the first FROM) and the stages, in order."""
    meta_args: list[Arg] = []
    stages: list[Stage] = []
    current: From | None = None
    commands: list[Instruction] = []
    for node in dockerfile.nodes:
        inst = parse_instruction(node, dockerfile.path)
        if isinstance(inst, From):
            if current is not None:
                stages.append(Stage(current, tuple(commands), len(stages)))
            current, commands = inst, []
        elif current is None:
            if isinstance(inst, Arg):
                meta_args.append(inst)
            else:
                raise DockerfileError("no build stage in current context", inst.location)
        else:
            commands.append(inst)
    if current is not None:
        stages.append(Stage(current, tuple(commands), len(stages)))
    return tuple(meta_args), tuple(stages)


# -- RUN --mount ---------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """A parsed `--mount` value (after expansion)."""

    type: MountType
    target: str
    source: str = ""
    from_: str = ""
    readonly: bool = True
    id: str = ""
    sharing: Sharing = Sharing.SHARED
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    required: bool = False
    env: str = ""


# BuildKit's own list, in its order: suggestions are taken from the first
# closest key (frontend/dockerfile/instructions/commands_runmount.go)
_MOUNT_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size", "mode",
    "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env",
)  # fmt: skip
# Go's strconv.ParseBool, which BuildKit uses for ro/rw/required
_GO_BOOLS = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}  # fmt: skip
_GO_UINT = {8: re.compile(r"[0-7]+"), 10: re.compile(r"[0-9]+")}


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _closest(value: str, options) -> str:
    """BuildKit's suggest.Search: the first option closer than 3 edits, ""
    when there is none or the value is itself an option."""
    best, distance = "", 3
    for option in options:
        if option == value:
            return ""
        d = _levenshtein(value, option)
        if d < distance:
            best, distance = option, d
    return best


def _suggest(message: str, value: str, options) -> str:
    """BuildKit's suggest.WrapError."""
    best = _closest(value, options)
    return f"{message} (did you mean {best}?)" if best else message


def parse_mount(text: str, expand: Callable[[str], str]) -> Mount:
    """BuildKit's `--mount` syntax: comma-separated key=value fields (CSV
    quoting allowed). Raises _Fail; callers add the location.

    Checks and messages follow BuildKit's parseMount/validateMount, in their
    order: a key that depends on the type (`required`, `size`) is judged
    against the type given *before* it in the value."""
    try:
        fields = next(csv.reader([text], strict=True), [])
    except csv.Error as err:
        raise _Fail(f"failed to parse csv mounts: {err}") from None
    mount_type = MountType.BIND
    opts: dict[str, str] = {}
    readonly: bool | None = None
    required = False
    size: int | None = None
    sharing: Sharing | None = None
    numbers: dict[str, int] = {}
    for field in fields:
        key, eq, value = field.partition("=")
        key = key.lower()  # BuildKit lowercases keys but trims nothing
        if not eq:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required":
                if mount_type not in (MountType.SECRET, MountType.SSH):
                    raise _Fail(f"unexpected key '{key}' for mount type '{mount_type.value}'")
                required = True
            else:
                raise _Fail(f"invalid field '{field}' must be a key=value pair")
            continue
        if key == "from":
            # stages are wired before any ARG is known (commands_runmount.go)
            dollar = value.find("$")
            if dollar != -1 and dollar != len(value) - 1:
                raise _Fail("'from' doesn't support variable expansion, define alias stage instead")
        value = expand(value)
        if key == "type":
            try:
                mount_type = MountType(value.lower())
            except ValueError:
                raise _Fail(_suggest(f"unsupported mount type \"{value}\"", value,
                                     [t.value for t in MountType])) from None
        elif key in ("readonly", "ro", "readwrite", "rw", "required"):
            flag = _GO_BOOLS.get(value)
            if key == "required" and mount_type not in (MountType.SECRET, MountType.SSH):
                raise _Fail(f"unexpected key '{key}' for mount type '{mount_type.value}'")
            if flag is None:
                raise _Fail(f"invalid value for {key}: {value}")
            if key == "required":
                required = flag
            else:
                readonly = flag if key in ("readonly", "ro") else not flag
        elif key == "size":
            if mount_type is not MountType.TMPFS:
                raise _Fail(f"unexpected key '{key}' for mount type '{mount_type.value}'")
            size = _mount_size(value)
        elif key == "sharing":
            try:
                sharing = Sharing(value.lower())
            except ValueError:
                raise _Fail(_suggest(f"unsupported sharing value \"{value}\"", value,
                                     [s.value for s in Sharing])) from None
        elif key in ("mode", "uid", "gid"):
            base = 8 if key == "mode" else 10
            # strconv.ParseUint(v, base, 32): digits only, no sign or prefix
            if not _GO_UINT[base].fullmatch(value) or int(value, base) > 2**32 - 1:
                raise _Fail(f"invalid value {value} for {key}")
            numbers[key] = int(value, base)
        elif key in _MOUNT_KEYS:
            for alias, canonical in (("src", "source"), ("dst", "target"), ("destination", "target")):
                if key == alias:
                    key = canonical
            opts[key] = value
        else:
            raise _Fail(_suggest(f"unexpected key '{key}' in '{field}'", key, _MOUNT_KEYS))
    if mount_type not in (MountType.SECRET, MountType.SSH, MountType.CACHE):
        for key in ("mode", "uid", "gid"):
            if key in numbers:
                raise _Fail(f"{key} not allowed for \"{mount_type.value}\" type mounts")
    if readonly is None:
        readonly = mount_type not in (MountType.CACHE, MountType.TMPFS)
    target = opts.get("target", "")
    source = opts.get("source", "")
    mount_id = opts.get("id", "")
    from_ = opts.get("from", "")
    if mount_type is MountType.SECRET:
        if from_:
            raise _Fail("secret mount should not have a from")
        if sharing is not None:
            raise _Fail("secret mount should not define sharing")
        if not source and not target and not mount_id:
            raise _Fail("invalid secret mount. one of source, target required")
        if source and mount_id:
            raise _Fail("both source and id can't be set")
    if sharing is not None and mount_type is not MountType.CACHE:
        raise _Fail(f"invalid cache sharing set for {mount_type.value} mount")
    if mount_type is MountType.SECRET:
        # convert_secrets.go: `source` names the secret, as `id` does
        mount_id = source or mount_id or posixpath.basename(target)
        source = ""
        if not target and "env" not in opts:
            target = "/run/secrets/" + posixpath.basename(mount_id)
    elif mount_type is MountType.SSH:
        if source:
            raise _Fail("ssh does not support source")  # convert_ssh.go
        # the socket's default path depends on the mount's rank among the
        # RUN's ssh mounts: the executor picks it
        mount_id = mount_id or "default"
    else:
        if mount_type is MountType.TMPFS:
            from_ = ""  # never a source: BuildKit does not even resolve it
        if _clean(target) == "/" and target.startswith("/"):
            raise _Fail('invalid mount target "/"')
        if mount_type is MountType.CACHE and not mount_id:
            # the id is the target as written, before WORKDIR applies
            mount_id = _clean(target)
        # no target means the working directory (a relative "")
        target = target or "."
    return Mount(
        type=mount_type,
        target=target,
        source=source,
        from_=from_,
        readonly=readonly,
        id=mount_id,
        sharing=sharing or Sharing.SHARED,
        mode=numbers.get("mode"),
        uid=numbers.get("uid"),
        gid=numbers.get("gid"),
        size=size,
        required=required,
        env=opts.get("env", ""),
    )


def _clean(path: str) -> str:
    """Go's path.Clean."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kmgtp])?i?b?$", re.IGNORECASE)


def _mount_size(text: str) -> int:
    """docker/go-units RAMInBytes: 64m, 1g, 512k (binary multiples)."""
    match = _SIZE.match(text)
    if not match:
        raise _Fail(f"invalid value for size: {text}")
    try:
        number = float(match.group(1))
    except ValueError:
        raise _Fail(f"invalid value for size: {text}") from None
    unit = "bkmgtp".index((match.group(2) or "b").lower())
    return int(number * (1024**unit))


def fail_at(location: Location) -> Callable[[_Fail], DockerfileError]:
    """Turn an internal failure (from parse_mount) into a located error."""
    return lambda err: DockerfileError(str(err), location)


Failure = _Fail
