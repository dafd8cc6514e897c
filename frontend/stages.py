"""The stages of a Dockerfile and what links them, before any is
dispatched: each FROM expanded with the global ARGs, the stages and
images each stage builds on, copies or mounts from, cycles rejected, the
target picked, and the base images of the stages it needs resolved, with
their ONBUILD triggers added (which may link further stages)."""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

from frontend import instructions as ins
from frontend import lint
from frontend.definition import ImageResolver, NamedContext, NamedContextLookup, ResolvedImage
from frontend.errors import DockerfileError, Location, locate
from frontend.image_config import config_section
from frontend.instruction_parsing import parse_instruction
from frontend.lexer import ExpansionError, Lexer
from frontend.mounts import parse_mount
from frontend.ops import Platform
from frontend.parser import parse
from frontend.platforms import parse_platform
from frontend.stage_state import ImageRef, StageState

# -- references ----------------------------------------------------------------

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


def check_reference(ref: str) -> str | None:
    """An error message when `ref` is not a valid image reference."""
    if _REFERENCE.match(ref):
        return None
    if _REFERENCE.match(ref.lower()):
        # distribution/reference names the repository as it would be
        # normalized: docker.io's official images get "library/"
        return f"invalid reference format: repository name ({_repository_path(ref)}) must be lowercase"
    return "invalid reference format"


def _repository_path(ref: str) -> str:
    """The path of `ref`'s repository on its registry: `Name` -> "library/Name"."""
    name = ref.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return rest
    return name if slash else f"library/{name}"


def pinned(resolved: ResolvedImage) -> str:
    """The reference of a resolved image with its manifest digest."""
    return resolved.ref if "@" in resolved.ref else f"{resolved.ref}@{resolved.digest}"


# -- the stage graph -------------------------------------------------------------


class StageGraph:
    """The stages in file order, by name, and the images they read, keyed
    by (reference, platform) so that each is resolved once."""

    def __init__(self, *, path: str, lexer: Lexer, linter: lint.Linter, platform: Platform,
                 global_args: Mapping[str, str], meta_args: tuple[ins.Arg, ...],
                 resolve_image: ImageResolver, named_context: NamedContextLookup):  # fmt: skip
        self.path = path
        self.lexer = lexer
        self.linter = linter
        self.platform = platform
        self.global_args = global_args
        self.meta_args = meta_args
        self.resolve = resolve_image
        self.named_context = named_context
        self.states: list[StageState] = []
        self.by_name: dict[str, StageState] = {}
        self.images: dict[tuple[str, Platform], ImageRef] = {}

    # -- FROM, and the links of each instruction ---------------------------
    def add_stage(self, stage: ins.Stage) -> None:
        """The state of a stage, from its FROM expanded in the global scope."""
        from_ = stage.from_
        result = self._expand_global(from_.base, from_.location)
        # BuildKit warns of the undefined ARG before it refuses the blank
        # name the ARG left, so `FROM $NOPE` keeps its UndefinedArgInFrom.
        declared = set(self.global_args) | {a.key for cmd in self.meta_args for a in cmd.args}
        for name in sorted(result.unmatched - declared):
            lint.undefined_arg_in_from(self.linter, name, declared, from_.location)
        if not result.result:
            raise DockerfileError(f"base name ({from_.base}) should not be blank", from_.location)
        state = StageState(stage=stage, index=stage.index, display=stage.name or f"stage-{stage.index}")
        state.base_name = result.result
        state.from_vars = result.matched
        if from_.platform:
            state.platform = self._from_platform(from_, declared)
        if stage.name:
            state.named = self.named_context(stage.name)
        if state.named is not None:
            # BuildKit (dockerfile2llb toDispatchState): a named context
            # with a stage's name replaces the stage; its FROM, commands and
            # triggers are never read.
            state.onbuild_done = True
        else:
            # FROM <name> refers to an earlier stage only; a later one is an image.
            state.base_stage = self.by_name.get(state.base_name)
            if state.base_stage is not None:
                state.deps[state.base_stage] = from_
        self.states.append(state)
        if stage.name:
            self.by_name[stage.name] = state

    def _expand_global(self, word: str, location: Location):
        try:
            return self.lexer.process(word, self.global_args)
        except ExpansionError as err:
            raise DockerfileError(err.message, location) from None

    def _from_platform(self, from_: ins.From, declared: set[str]) -> Platform:
        """The platform of `FROM --platform=...`, expanded in the global scope."""
        expansion = self._expand_global(from_.platform, from_.location)
        for name in sorted(expansion.unmatched - declared):
            lint.undefined_arg_in_from(self.linter, name, declared, from_.location)
        if not expansion.result:
            raise DockerfileError(f"empty platform value from expression {from_.platform}", from_.location)
        try:
            platform = parse_platform(expansion.result)
        except ValueError as err:
            raise DockerfileError(f"failed to parse platform {from_.platform}: {err}", from_.location) from None
        lint.from_platform(self.linter, from_, expansion, self.global_args["TARGETPLATFORM"], platform)
        return platform

    def find_target(self, target_name: str | None) -> StageState:
        if not target_name:
            return self.states[-1]
        state = self.by_name.get(target_name.lower())
        if state is None:
            raise DockerfileError(f'target stage "{target_name}" could not be found')
        return state

    def stage_or_image(self, ref: str, cmd: ins.Instruction,
                       state: StageState) -> StageState | ImageRef | NamedContext:  # fmt: skip
        """What `--from=ref` names: a stage (by name or index), a named
        context that is no image, or an image."""
        if "$" in ref and self._expand_nothing(ref, cmd.location) != ref:
            raise DockerfileError(
                "variable expansion is not supported for --from, define a new stage with FROM using ARG "
                "from global scope as a workaround",
                cmd.location,
            )
        if ref.isdigit():
            index = int(ref)
            if index >= len(self.states):
                raise DockerfileError(f"invalid stage index {index}", cmd.location)
            return self.states[index]
        named = self.by_name.get(ref.lower())
        if named is not None:
            return named
        problem = check_reference(ref)
        if problem:
            raise DockerfileError(f'failed to parse stage name "{ref}": {problem}', cmd.location)
        context = self.named_context(ref)
        if context is not None and (not context.image or context.image == "scratch"):
            return context
        if context is not None:
            ref = context.image
        key = (ref, state.platform or self.platform)
        if key not in self.images:
            self.images[key] = ImageRef(ref=ref, platform=key[1])
        return self.images[key]

    def _expand_nothing(self, word: str, location: Location) -> str:
        # `word` expanded with no variable set: unchanged unless it names one.
        try:
            return self.lexer.process_word(word, {})
        except ExpansionError as err:
            raise DockerfileError(err.message, location) from None

    def link_sources(self, state: StageState, cmd: ins.Instruction) -> None:
        """Record what `COPY --from` or `RUN --mount=from=` reads."""
        if isinstance(cmd, ins.Copy) and cmd.from_:
            state.deps[self.stage_or_image(cmd.from_, cmd, state)] = cmd
        elif isinstance(cmd, ins.Run):
            for raw in cmd.mounts:
                try:
                    mount = parse_mount(raw, _unexpanded)
                except ins.Failure as err:
                    raise DockerfileError(str(err), cmd.location) from None
                if mount.from_:
                    state.deps[self.stage_or_image(mount.from_, cmd, state)] = cmd

    def check_cycles(self) -> None:
        done: set[int] = set()
        for start in self.states:
            stack: list[tuple[StageState, object]] = [(start, iter(list(start.deps.items())))]
            on_path = {start.index}
            # the instruction each stage on the path reads its next stage with
            leaving: dict[int, ins.Instruction] = {}
            while stack:
                node, it = stack[-1]
                step = next(it, None)  # type: ignore[call-overload]
                if step is None:
                    stack.pop()
                    on_path.discard(node.index)
                    done.add(node.index)
                    continue
                dep, cmd = step
                leaving[node.index] = cmd
                if not isinstance(dep, StageState) or dep.index in done:
                    continue
                if dep.index in on_path:
                    # docker 26 points at the named stage's own --from
                    # (a: COPY --from=b, b: COPY --from=a names a's line)
                    raise DockerfileError(f"circular dependency detected on stage: {dep.display}",
                                          leaving[dep.index].location)
                on_path.add(dep.index)
                stack.append((dep, iter(list(dep.deps.items()))))

    # -- what a target needs, resolved -------------------------------------
    def reachable(self, target: StageState) -> list[StageState]:
        seen: dict[int, StageState] = {}
        todo = [target]
        while todo:
            state = todo.pop()
            if state.index in seen:
                continue
            seen[state.index] = state
            todo.extend(d for d in state.deps if isinstance(d, StageState))
        return [seen[i] for i in sorted(seen)]

    def resolve_needed(self, target: StageState) -> list[StageState]:
        """The stages `target` needs, in file order, their base images
        resolved and triggers added, repeated while triggers link more."""
        while True:
            needed = self.reachable(target)
            new_deps = False
            for state in needed:
                if state.base_stage is None and state.image is None and (
                        state.named is not None or state.base_name != "scratch"):
                    self.resolve_base(state)
                if state.onbuild_done:
                    continue
                state.onbuild_done = True
                triggers: list[str] = []
                if state.base_stage is not None:
                    triggers = [c.expression for c in state.base_stage.stage.commands if isinstance(c, ins.Onbuild)]
                elif state.image is not None and state.image.resolved is not None:
                    triggers = list(config_section(state.image.resolved.config).get("OnBuild") or [])
                if triggers:
                    new_deps |= self.add_triggers(state, triggers)
            if not new_deps:
                return needed

    def resolve_base(self, state: StageState) -> None:
        location = state.stage.from_.location
        if state.named is None:
            problem = check_reference(state.base_name)
            if problem:
                raise DockerfileError(f'failed to parse stage name "{state.base_name}": {problem}', location)
            # BuildKit (resolveBaseImage): a named context wins over the image of that name.
            state.named = self.named_context(state.base_name)
        ref = state.base_name if state.named is None else state.named.image
        if ref and ref != "scratch":
            platform = state.platform or self.platform
            state.image = self.image_for(ref, platform, location)
            lint.base_image_platform(self.linter, ref, state.image.resolved.config, platform, location)
        # Otherwise a local directory or docker-image://scratch: the dispatcher makes it.

    def image_for(self, ref: str, platform: Platform, location: Location) -> ImageRef:
        """The image `ref` for `platform`, resolved once; a failure to
        resolve it names the instruction at `location`, as BuildKit names
        the FROM or COPY --from line whose image it could not resolve."""
        key = (ref, platform)
        image = self.images.setdefault(key, ImageRef(ref=ref, platform=platform))
        if image.resolved is None:
            try:
                image.resolved = self.resolve(ref, platform)
            except Exception as exc:
                locate(exc, location)
                raise
        return image

    def add_triggers(self, state: StageState, triggers: list[str]) -> bool:
        """Put the ONBUILD triggers of a stage's base before its own
        commands; True when they link a stage or image it did not read."""
        location = state.stage.from_.location
        commands = []
        new_deps = False
        for trigger in triggers:
            try:
                parsed = parse(str(trigger), self.path)
            except DockerfileError as err:
                raise DockerfileError(err.message, location) from None
            if len(parsed.nodes) != 1:
                raise DockerfileError("onbuild trigger should be a single expression", location)
            # A trigger has no line of its own: it points at the FROM.
            node = dataclasses.replace(parsed.nodes[0], start=location.start, end=location.end)
            cmd = parse_instruction(node, self.path)
            if isinstance(cmd, (ins.From, ins.Onbuild, ins.Maintainer)):
                raise DockerfileError(f"{cmd.name} isn't allowed as an ONBUILD trigger", location)
            before = len(state.deps)
            self.link_sources(state, cmd)
            new_deps |= len(state.deps) != before
            commands.append((cmd, True))
        state.commands = commands + state.commands
        if new_deps:
            self.check_cycles()
        return new_deps


def _unexpanded(word: str) -> str:
    # Linking reads `from=` as written: --from takes no variables.
    return word

