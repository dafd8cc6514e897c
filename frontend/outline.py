"""What a build of a Dockerfile takes as input, without building it: the
`outline` and `targets` subrequests of BuildKit's Dockerfile frontend
(`docker buildx build --call outline|targets`).

`targets` lists every stage as written (name, the `# NAME text`
description above its FROM, base, platform, line). `outline` lists, for the
target, the build args the stages it needs declare or their FROMs use
(with value, description and line), and the secrets and SSH sockets their
RUN --mount flags ask for. It follows dockerfile2llb's outline capture:

- a global ARG counts once a needed FROM uses it (or an ARG default that
  a counted one uses); an ARG in a needed stage always counts;
- `ARG NAME` in a stage with neither default nor --build-arg takes the
  global one: value, description and line are the global ARG's;
- a stage starts from what its base stage's FROM used, not what the base
  stage declared later; the target is looked at first, then its base,
  then the stages it copies or mounts from, and the first sight of a name
  wins (so does the first RUN of a stage naming a secret);
- the ONBUILD triggers of a base stage count in the stage built on it,
  at its FROM line (BuildKit 0.13 gives them the trigger's own line, 1;
  later versions, and pybuild's converter, the FROM's);
- everything is sorted by line.

The Dockerfile is converted first, as for a build of the target, so any
error a build would report is raised here too. Base images are not pulled
(as `pybuild check`), so variables only an image defines read as unset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from frontend import instructions as ins
from frontend.convert import convert, platform_args
from frontend.definition import ImageResolver
from frontend.errors import Location
from frontend.instruction_parsing import parse_instruction, parse_stages
from frontend.lexer import Lexer
from frontend.lint import description
from frontend.mounts import parse_mount
from frontend.ops import MountType, Platform
from frontend.parser import parse
from frontend.stage_state import DEFAULT_PATH, NON_ENV_ARGS


@dataclass(frozen=True)
class Arg:
    name: str
    value: str
    description: str
    location: Location


@dataclass(frozen=True)
class Secret:
    """A secret or an SSH socket a RUN mounts."""

    name: str
    required: bool
    location: Location


@dataclass(frozen=True)
class Outline:
    name: str
    description: str
    args: tuple[Arg, ...]
    secrets: tuple[Secret, ...]
    ssh: tuple[Secret, ...]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    default: bool
    base: str
    platform: str
    location: Location


def targets(dockerfile: str, path: str = "Dockerfile") -> tuple[Target, ...]:
    """Every stage as written; only the parser's errors are raised."""
    parsed = parse(dockerfile, path)
    _, stages = parse_stages(parsed)
    comments = {node.start: node.comments for node in parsed.nodes}
    return tuple(
        Target(
            name=stage.name,
            description=description(comments.get(stage.from_.location.start, ()), stage.name),
            default=stage is stages[-1],
            base=stage.from_.base,
            platform=stage.from_.platform,
            location=stage.from_.location,
        )
        for stage in stages
    )


@dataclass
class _Capture:
    """dockerfile2llb's outlineCapture of one stage."""

    args: dict[str, _ArgInfo]
    used: dict[str, None]
    secrets: dict[str, Secret] = field(default_factory=dict)
    ssh: dict[str, Secret] = field(default_factory=dict)


@dataclass(frozen=True)
class _ArgInfo:
    arg: Arg
    deps: frozenset[str] = frozenset()


@dataclass
class _Stage:
    stage: ins.Stage
    capture: _Capture
    base: _Stage | None = None
    deps: list[_Stage] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def commands(self) -> list[ins.Instruction]:
        """The stage's instructions after the ONBUILD triggers of its base
        stage, which the converter puts first, at the stage's FROM line."""
        if self.base is None:
            return list(self.stage.commands)
        at = self.stage.from_.location
        triggers = [cmd.expression for cmd in self.base.stage.commands if isinstance(cmd, ins.Onbuild)]
        nodes = [dataclasses.replace(parse(text, at.path).nodes[0], start=at.start, end=at.end) for text in triggers]
        return [parse_instruction(node, at.path) for node in nodes] + list(self.stage.commands)


def outline(
    dockerfile: str,
    path: str = "Dockerfile",
    *,
    resolve_image: ImageResolver,
    build_args: Mapping[str, str] = {},
    target: str | None = None,
    platform: Platform = Platform(),
) -> Outline:
    convert(dockerfile, path=path, build_args=build_args, target=target, platform=platform,
            resolve_image=resolve_image)
    parsed = parse(dockerfile, path)
    meta_args, stages = parse_stages(parsed)
    comments = {node.start: node.comments for node in parsed.nodes}
    lexer = Lexer(parsed.escape)
    scope = platform_args(platform, Platform())  # the build platform, as convert's default
    global_args = _global_args(meta_args, build_args, scope, lexer, comments)
    states: list[_Stage] = []
    by_name: dict[str, _Stage] = {}
    for stage in stages:
        expanded = lexer.process(stage.from_.base, scope)
        used = expanded.matched
        if stage.from_.platform:
            used |= lexer.process(stage.from_.platform, scope).matched
        base = by_name.get(expanded.result.lower())
        inherited = dict(base.capture.used) if base else {}
        state = _Stage(stage, _Capture(dict(global_args), inherited | dict.fromkeys(sorted(used))), base)
        states.append(state)
        if stage.name:
            by_name[stage.name] = state
    chosen = by_name[target.lower()] if target else states[-1]
    for state in states:
        for ref in _copied_from(state.commands()):
            source = states[int(ref)] if ref.isdigit() and int(ref) < len(states) else by_name.get(ref.lower())
            if source is not None:
                state.deps.append(source)
    needed = _reachable(chosen)
    for state in states:
        if id(state) in needed:
            _dispatch(state, lexer, scope, build_args, comments)
    return Outline(
        name=chosen.stage.name,
        description=description(comments.get(chosen.stage.from_.location.start, ()), chosen.stage.name),
        args=_by_line(_walk(chosen, lambda s: _used_args(s.capture))),
        secrets=_by_line(_walk(chosen, lambda s: list(s.capture.secrets.values()))),
        ssh=_by_line(_walk(chosen, lambda s: list(s.capture.ssh.values()))),
    )


def _global_args(meta_args, build_args, scope: dict[str, str], lexer: Lexer, comments) -> dict[str, _ArgInfo]:
    """BuildKit's buildMetaArgs: each global ARG's value (a --build-arg,
    else its default expanded so far) and the ARGs its default uses.
    Fills `scope` with the values, after the platform ARGs."""
    found: dict[str, _ArgInfo] = {}
    for cmd in meta_args:
        for definition in cmd.args:
            key, value, deps = definition.key, definition.value, frozenset()
            if key in build_args:
                value = build_args[key]
            elif value is not None:
                expansion = lexer.process(value, scope)
                value, deps = expansion.result, frozenset(expansion.matched - {key})
                if key in expansion.matched and key in found:
                    deps |= found[key].deps  # ARG A=$A:x keeps what the earlier A used
            if value is not None:
                scope[key] = value
            arg = Arg(key, value or "", description(comments.get(cmd.location.start, ()), key), cmd.location)
            found[key] = _ArgInfo(arg, deps)
    return found


def _copied_from(commands: list[ins.Instruction]):
    for cmd in commands:
        if isinstance(cmd, ins.Copy) and cmd.from_:
            yield cmd.from_
        elif isinstance(cmd, ins.Run):
            for raw in cmd.mounts:
                mount = parse_mount(raw, lambda word: word)
                if mount.from_:
                    yield mount.from_


def _reachable(start: _Stage) -> set[int]:
    seen: set[int] = set()
    todo = [start]
    while todo:
        state = todo.pop()
        if id(state) not in seen:
            seen.add(id(state))
            todo += [state.base] if state.base else []
            todo += state.deps
    return seen


def _dispatch(state: _Stage, lexer: Lexer, scope: Mapping[str, str], build_args: Mapping[str, str],
              comments) -> None:  # fmt: skip
    """The ARG, ENV and RUN --mount instructions of a stage, in order, with
    the scope they are expanded in (the base stage's, or an image's PATH)."""
    env = state.env = dict(state.base.env) if state.base else {"PATH": DEFAULT_PATH}
    capture = state.capture
    for cmd in state.commands():
        if isinstance(cmd, ins.Env):
            env.update({pair.key: lexer.process_word(pair.value, env) for pair in cmd.pairs})
        elif isinstance(cmd, ins.Arg):
            for definition in cmd.args:
                _stage_arg(capture, env, cmd, definition, lexer, scope, build_args, comments)
        elif isinstance(cmd, ins.Run):
            for raw in cmd.mounts:
                mount = parse_mount(raw, lambda word: lexer.process_word(word, env))
                kind = {MountType.SECRET: capture.secrets, MountType.SSH: capture.ssh}.get(mount.type)
                if kind is not None and mount.id not in kind:
                    kind[mount.id] = Secret(mount.id, mount.required, cmd.location)


def _stage_arg(capture: _Capture, env: dict[str, str], cmd: ins.Arg, definition: ins.ArgDef, lexer: Lexer,
               scope: Mapping[str, str], build_args: Mapping[str, str], comments) -> None:  # fmt: skip
    key, value = definition.key, definition.value
    inherited = value is None and key not in build_args and key in scope
    if key in build_args:
        value = build_args[key]
    elif inherited:
        value = scope[key]
    elif value is not None:
        value = lexer.process_word(value, env)
    if value is not None and key not in NON_ENV_ARGS:
        env[key] = value
    if not inherited:
        text = description(comments.get(cmd.location.start, ()), key)
        capture.args[key] = _ArgInfo(Arg(key, value or "", text, cmd.location))
    capture.used[key] = None


def _used_args(capture: _Capture) -> list[Arg]:
    """The args a stage used, with the global ARGs their defaults use."""
    todo = list(capture.used)
    while todo:
        key = todo.pop()
        capture.used[key] = None
        info = capture.args.get(key)
        todo += [dep for dep in sorted(info.deps) if dep not in capture.used] if info else []
    # In declaration order: `ARG A B` on one line lists A first.
    return [info.arg for key, info in capture.args.items() if key in capture.used]


def _walk(start: _Stage, items) -> list:
    """`items` of the stage, its base and the stages it reads, depth first,
    each name taken from the first stage that has it. A stage is walked
    once: when a second path reaches it, the first has taken its names and
    those of every stage below it (stages reading each other in a chain
    would otherwise be walked an exponential number of times)."""
    found: list = []
    names: set[str] = set()
    walked: set[int] = set()

    def visit(state: _Stage) -> None:
        walked.add(id(state))
        for item in items(state):
            if item.name not in names:
                names.add(item.name)
                found.append(item)
        for other in ([state.base] if state.base else []) + state.deps:
            if id(other) not in walked:
                visit(other)

    visit(start)
    return found


def _by_line(items: list) -> tuple:
    return tuple(sorted(items, key=lambda item: item.location.start))

