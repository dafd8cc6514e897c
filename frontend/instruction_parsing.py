"""Parser nodes → typed instructions (frontend.instructions): each
instruction's arguments and flags checked as BuildKit's
instructions.ParseInstruction checks them, and a file's nodes grouped
into global ARGs and stages."""

from __future__ import annotations

import re

from frontend.durations import parse_duration
from frontend.errors import DockerfileError, Location
from frontend.instructions import (
    INSTRUCTIONS,
    Add,
    Arg,
    ArgDef,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    Failure,
    From,
    Healthcheck,
    Instruction,
    KeyValue,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    SourceContent,
    Stage,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from frontend.mounts import parse_mount
from frontend.nodes import Dockerfile, Node
from frontend.parser import chomp_heredoc, parse_heredoc
from frontend.suggest import closest, with_suggestion

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


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
            raise Failure(f"arg should start with -- : {arg}")
        body = arg[2:]
        name, eq, value = body.partition("=")
        kind = allowed.get(name)
        if kind is None:
            raise Failure(with_suggestion(f"unknown flag: {name}", name, allowed))
        if name in values and kind != _STRINGS:
            raise Failure(f"duplicate flag specified: {name}")
        if kind == _BOOL:
            if eq and not value:
                raise Failure(f"missing a value on flag: {name}")
            lower = value.lower()
            if not eq:
                values[name] = True
            elif lower in ("true", "false"):
                values[name] = lower == "true"
            else:
                raise Failure(f"expecting boolean value for flag {name}, not: {value}")
        elif not eq:
            raise Failure(f"missing a value on flag: {name}")
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
    except Failure as err:
        raise DockerfileError(str(err), location) from None


def _parse(node: Node, location: Location) -> Instruction:
    command = node.command
    if command not in INSTRUCTIONS:
        message = f"unknown instruction: {node.keyword}"
        close = closest(node.keyword.upper(), [i.upper() for i in INSTRUCTIONS])  # case-insensitive, as BuildKit
        if close:
            suggestion = close if node.keyword.isupper() or not node.keyword.islower() else close.lower()
            message += f" (did you mean {suggestion}?)"
        raise Failure(message)
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
            raise Failure(f"{name} requires at least one argument")
        pairs = []
        for i in range(0, len(args) - 1, 2):
            if not args[i]:
                raise Failure(f"{name} names can not be blank")
            pairs.append(KeyValue(args[i], args[i + 1]))
        cls = Env if command == "env" else Label
        return cls(**base, pairs=tuple(pairs), legacy=node.legacy_kv)
    if command == "arg":
        if not args:
            raise Failure("ARG requires at least one argument")
        defs = []
        for arg in args:
            key, eq, value = arg.partition("=")
            if eq and not key:
                raise Failure("ARG names can not be blank")
            defs.append(ArgDef(key, value if eq else None))
        return Arg(**base, args=tuple(defs))
    if command == "run":
        if not args and not node.heredocs:
            raise Failure("RUN requires at least one argument")
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
            raise Failure("SHELL requires at least one argument")
        if not node.json:
            raise Failure("SHELL requires the arguments to be in JSON form")
        return Shell(**base, command=args)
    if command in ("copy", "add"):
        return _parse_copy(node, flags, base)
    if command in ("workdir", "user", "stopsignal", "maintainer"):
        if len(args) != 1:
            raise Failure(f"{name} requires exactly one argument")
        if command == "workdir":
            return Workdir(**base, path=args[0])
        if command == "user":
            return User(**base, user=args[0])
        if command == "stopsignal":
            return StopSignal(**base, signal=args[0])
        return Maintainer(**base, maintainer=args[0])
    if command == "expose":
        if not args:
            raise Failure("EXPOSE requires at least one argument")
        return Expose(**base, ports=tuple(sorted(args)))
    if command == "volume":
        if not args:
            raise Failure("VOLUME requires at least one argument")
        paths = tuple(a.strip() for a in args)
        if any(not p for p in paths):
            raise Failure("VOLUME specified can not be an empty string")
        return Volume(**base, paths=paths, json=node.json)
    if command == "healthcheck":
        return _parse_healthcheck(node, base)
    if command == "onbuild":
        if not args:
            raise Failure("ONBUILD requires at least one argument")
        trigger = args[0].strip().upper()
        if trigger == "ONBUILD":
            raise Failure("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise Failure(f"{trigger} isn't allowed as an ONBUILD trigger")
        expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original, count=1)
        for doc in node.heredocs:
            expression += "\n" + doc.content + doc.name
        return Onbuild(**base, expression=expression, trigger=trigger)
    raise Failure(f"unknown instruction: {node.keyword}")  # pragma: no cover


def _parse_from(node: Node, flags: dict, base: dict) -> From:
    args = node.args
    stage_name = written = as_keyword = ""
    if len(args) == 3 and args[1].lower() == "as":
        written = args[2]
        stage_name = written.lower()
        as_keyword = args[1]
        if not _STAGE_NAME.match(stage_name):
            raise Failure(
                f'invalid name for build stage: "{written}", name can\'t start with a number or contain symbols'
            )
    elif len(args) != 1:
        raise Failure("FROM requires either one or three arguments")
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
        raise Failure(
            f"{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        )
    dest = args[-1]
    if not node.json and parse_heredoc(dest) is not None:
        raise Failure(f"{name} cannot accept a heredoc as a destination")
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
        raise Failure("HEALTHCHECK requires at least one argument")
    kind = args[0].upper()
    rest = args[1:]
    if kind == "NONE":
        _parse_flags(node.flags, {})
        if rest:
            raise Failure("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(**base, test=("NONE",))
    flags = _parse_flags(node.flags, _FLAGS["healthcheck"])
    if kind != "CMD":
        raise Failure(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    command = rest if node.json else ((" ".join(rest),) if rest else ())
    if not command:
        raise Failure("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *command) if node.json else ("CMD-SHELL", *command)

    def interval(flag: str) -> int:
        value = str(flags.get(flag, ""))
        if not value:
            return 0
        try:
            ns = parse_duration(value)
        except ValueError as err:
            raise Failure(str(err)) from None
        if ns == 0:
            return 0
        if ns < _MIN_DURATION:
            raise Failure(f'Interval "{flag}" cannot be less than 1ms')
        return ns

    retries = 0
    if flags.get("retries"):
        text = str(flags["retries"])
        if not re.fullmatch(r"[+-]?\d+", text) or abs(int(text)) > 2**31 - 1:
            raise Failure(f'strconv.ParseInt: parsing "{text}": invalid syntax')
        retries = int(text)
        if retries < 0:
            raise Failure(f"--retries cannot be negative ({retries})")
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
