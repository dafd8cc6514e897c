"""Dockerfile → Definition: stages, scopes and ops, as BuildKit's
`dockerfile2llb` converts a Dockerfile to LLB.

The steps, in order:
1. parse the text and type the instructions (parser.py,
   instruction_parsing.py);
2. expand every FROM with the global ARGs, link stages to the stages they
   build on or copy from, reject cycles, pick the target (stages.py);
3. resolve the base images of the stages the target needs (and only
   those), add their ONBUILD triggers, repeat while triggers add stages
   (stages.py);
4. dispatch the needed stages in file order: each instruction updates the
   stage's image config and history, and the filesystem ones add an op on
   top of the stage's current root filesystem vertex (the handlers of
   config_instructions.py, run_instruction.py and copy_instruction.py,
   through the Converter's helpers here).
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Mapping

from frontend import config_instructions, copy_instruction, lint, run_instruction
from frontend import instructions as ins
from frontend.definition import (
    Definition,
    HistoryEntry,
    ImageResolver,
    NamedContext,
    NamedContextLookup,
    StageImage,
    VertexMeta,
    Warning,
    build_graph,
)
from frontend.dockerignore import Matcher
from frontend.errors import DockerfileError, Location
from frontend.image_config import base_config, base_history, empty_config, has_no_layers, omit_empty, set_platform
from frontend.instruction_parsing import parse_stages
from frontend.lexer import ExpansionError, Lexer
from frontend.canonical import PROXY_ARGS
from frontend.ops import ContextSource, FileCopy, ImageSource, NamedLocalSource, Op, Platform, Scratch
from frontend.nodes import Dockerfile
from frontend.parser import parse
from frontend.paths import join_workdir
from frontend.stage_state import DEFAULT_PATH, DEFAULT_SHELL, HISTORY_COMMENT, NON_ENV_ARGS, StageState
from frontend.stages import StageGraph, check_reference, pinned

# Build args BuildKit never reports as unused.
_BUILTIN_ARGS = frozenset(
    [*PROXY_ARGS, "SOURCE_DATE_EPOCH", "BUILDKIT_INLINE_CACHE",
     "BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE", "BUILDKIT_CACHE_MOUNT_NS",
     "BUILDKIT_CONTEXT_KEEP_GIT_DIR", "BUILDKIT_MULTI_PLATFORM", "BUILDKIT_SYNTAX"]
)  # fmt: skip


def convert(
    dockerfile: str,
    *,
    path: str = "Dockerfile",
    build_args: Mapping[str, str] = {},
    target: str | None = None,
    platform: Platform = Platform(),
    build_platform: Platform = Platform(),
    resolve_image: ImageResolver,
    excludes: tuple[str, ...] = (),
    explicit_platform: bool = False,
    named_context: NamedContextLookup | None = None,
    extra_hosts: tuple[tuple[str, str], ...] = (),
) -> Definition:
    """Convert Dockerfile text to a build Definition for `target` (default:
    the last stage). Raises DockerfileError, with the Dockerfile location
    when there is one.

    `explicit_platform` says the user asked for `platform` (--platform):
    the image is then labelled with it whatever its base says.
    `named_context` finds the `--build-context` a stage name, FROM or
    --from means; `extra_hosts` (host, ip) are added to every RUN's
    /etc/hosts (`--add-host`)."""
    converter = _prepare(dockerfile, path=path, build_args=build_args, target=target, platform=platform,
                         build_platform=build_platform, resolve_image=resolve_image, excludes=excludes)
    converter.explicit_platform = explicit_platform
    converter.named_context = named_context or (lambda ref: None)
    converter.extra_hosts = tuple(extra_hosts)
    return converter.run()


def lint_dockerfile(
    dockerfile: str,
    *,
    path: str = "Dockerfile",
    build_args: Mapping[str, str] = {},
    target: str | None = None,
    platform: Platform = Platform(),
    resolve_image: ImageResolver,
    excludes: tuple[str, ...] = (),
) -> list[Warning]:
    """The build-check warnings of a Dockerfile (see frontend.check): every
    stage is dispatched when no target is given, as `docker build --check`."""
    converter = _prepare(dockerfile, path=path, build_args=build_args, target=target, platform=platform,
                         build_platform=platform, resolve_image=resolve_image, excludes=excludes)
    converter.all_stages = target is None
    converter.raise_on_lint = False
    try:
        return list(converter.run().warnings)
    except DockerfileError as err:
        err.warnings = tuple(converter.linter.warnings)
        raise


def _prepare(dockerfile, *, path, build_args, target, platform, build_platform, resolve_image, excludes):
    if not dockerfile:  # blank lines only: the parser's "file with no instructions"
        raise DockerfileError("the Dockerfile cannot be empty", Location(path, 1, 1))
    parsed = parse(dockerfile, path)
    meta_args, stages = parse_stages(parsed)
    if not stages:
        raise DockerfileError("dockerfile contains no stages to build", Location(path, 1, 1))
    return Converter(
        parsed=parsed,
        meta_args=meta_args,
        stages=stages,
        build_args=dict(build_args),
        target_name=target,
        platform=platform,
        build_platform=build_platform,
        resolve_image=resolve_image,
        context=ContextSource(excludes=tuple(excludes)),
    )


def platform_args(target: Platform, build: Platform) -> dict[str, str]:
    """The ARGs BuildKit defines in the global scope of every Dockerfile."""
    return {
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
    }


# Each instruction's handler: (converter, stage, instruction) -> None.
_HANDLERS: dict[type, Callable] = {
    ins.Env: config_instructions.do_env,
    ins.Label: config_instructions.do_label,
    ins.Arg: config_instructions.do_arg,
    ins.User: config_instructions.do_user,
    ins.Cmd: config_instructions.do_cmd,
    ins.Entrypoint: config_instructions.do_entrypoint,
    ins.Shell: config_instructions.do_shell,
    ins.Expose: config_instructions.do_expose,
    ins.Volume: config_instructions.do_volume,
    ins.StopSignal: config_instructions.do_stopsignal,
    ins.Healthcheck: config_instructions.do_healthcheck,
    ins.Onbuild: config_instructions.do_onbuild,
    ins.Maintainer: config_instructions.do_maintainer,
    ins.Workdir: config_instructions.do_workdir,
    ins.Run: run_instruction.do_run,
    ins.Copy: copy_instruction.do_copy,
    ins.Add: copy_instruction.do_add,
}


class Converter:
    """One conversion: the stage graph, the ops made so far and their
    metadata, the build-check linter, and the helpers instruction handlers
    share (expansion, op and history recording, step names, sources)."""

    def __init__(self, *, parsed: Dockerfile, meta_args, stages, build_args, target_name, platform,
                 build_platform, resolve_image, context: ContextSource):  # fmt: skip
        self.parsed = parsed
        self.path = parsed.path
        self.meta_args: tuple[ins.Arg, ...] = meta_args
        self.stages: tuple[ins.Stage, ...] = stages
        self.build_args: dict[str, str] = build_args
        self.target_name = target_name
        self.platform = platform
        self.build_platform = build_platform
        self.resolve = resolve_image
        self.context = context
        self.lexer = Lexer(parsed.escape)
        self.ops: list[Op] = []
        self.metadata: dict[str, VertexMeta] = {}
        self.used_args: set[str] = set()
        self.global_args: dict[str, str] = {}
        self.linter = lint.Linter(lint.CheckConfig.from_dockerfile(parsed))
        self.matcher = Matcher(context.excludes) if context.excludes else None
        self.all_stages = False
        self.raise_on_lint = True
        self.on_build = False
        self.explicit_platform = False
        self.named_context: NamedContextLookup = lambda ref: None
        self.extra_hosts: tuple[tuple[str, str], ...] = ()
        self.graph: StageGraph | None = None

    # -- helpers for the handlers --------------------------------------------
    def expand(self, word: str, env: Mapping[str, str], location: Location) -> str:
        try:
            return self.lexer.process_word(word, env)
        except ExpansionError as err:
            raise DockerfileError(err.message, location) from None

    def expand_checked(self, word: str, state: StageState, cmd: ins.Instruction) -> str:
        """Expand a word of an instruction BuildKit expands, reporting
        UndefinedVar for names neither set nor declared by an ARG."""
        try:
            result = self.lexer.process(word, state.env)
        except ExpansionError as err:
            raise DockerfileError(err.message, cmd.location) from None
        declared = {a.key for a in state.build_args}
        for name in sorted(result.unmatched - declared - NON_ENV_ARGS):
            lint.undefined_var(self.linter, name, state.env, cmd.location)
        return result.result

    def add(self, op: Op, name: str = "", location: Location | None = None, stage: str = "") -> str:
        self.ops.append(op)
        vertex = op.vertex_id
        if name:
            self.metadata[vertex] = VertexMeta(name=name, location=location, stage=stage)
        return vertex

    def step_name(self, state: StageState, text: str) -> str:
        if state.cmd_total == 0:
            return text
        state.cmd_index += 1
        width = int(1 + math.log10(state.cmd_total))
        prefix = "[" + (state.display + " " if state.display else "")
        prefix += f"{state.cmd_index:>{width}}/{state.cmd_total}] "
        if self.on_build:
            prefix += "ONBUILD "
        return prefix + text

    def commit(self, state: StageState, created_by: str, layer: bool = False, buildkit_suffix: bool = False) -> None:
        if buildkit_suffix:
            created_by += " # buildkit"
        state.history.append(HistoryEntry(created_by=created_by, empty_layer=not layer, comment=HISTORY_COMMENT))

    def display_text(self, state: StageState, cmd: ins.Instruction) -> str:
        lexer = Lexer(self.parsed.escape, raw_quotes=True, skip_unset=True)
        try:
            text = lexer.process_word(cmd.original, state.env)
        except ExpansionError:
            text = cmd.original
        head, _, rest = text.partition(" ")
        return head.upper() + (" " + rest if rest else "")

    def with_shell(self, state: StageState, command) -> list[str]:
        shell = state.config["config"].get("Shell") or list(DEFAULT_SHELL)
        return [*shell, " ".join(command)]

    def context_vertex(self) -> str:
        return self.add(self.context, "[internal] load build context")

    def named_source(self, context: NamedContext, as_tree: bool) -> str:
        """A named context that is not an image. COPY selects paths from a
        local one as from the build context (`as_tree` False: keyed on what
        it selects); FROM and RUN --mount need a filesystem, so the
        directory is copied into a snapshot first, keyed on its content."""
        if context.image == "scratch":
            return self.add(Scratch())
        name = f"[context {context.name}] load from client"
        local = self.add(NamedLocalSource(name=context.name, excludes=context.excludes), name)
        if not as_tree:
            return local
        return self.add(FileCopy(inputs=(self.add(Scratch()), local), sources=("/",), dest="/",
                                 follow_symlinks=True), name)

    def source_vertex(self, state: StageState, cmd: ins.Instruction, ref: str, as_tree: bool = False) -> str:
        """The vertex `--from=ref` reads: a dispatched stage's filesystem,
        a named context, or an image (its source op made once)."""
        assert self.graph is not None
        source = self.graph.stage_or_image(ref, cmd, state)
        if isinstance(source, NamedContext):
            return self.named_source(source, as_tree)
        if isinstance(source, StageState):
            if not source.dispatched:
                raise DockerfileError(
                    f'cannot copy from stage "{ref}", it needs to be defined before current stage "{state.display}"',
                    cmd.location,
                )
            return source.rootfs
        image = self.graph.image_for(source.ref, source.platform, cmd.location)
        assert image.resolved is not None
        if not image.vertex:
            image.vertex = self.add(
                ImageSource(ref=pinned(image.resolved), platform=image.platform),
                f"[internal] load metadata for {image.ref}",
                cmd.location,
                state.display,
            )
        return image.vertex

    # -- the conversion ------------------------------------------------------
    def run(self) -> Definition:
        self.global_args = self.meta_arg_values(self.build_args)
        lint.static_checks(self.parsed, self.meta_args, self.stages, self.linter)
        self.check_default_bases()
        graph = self.graph = StageGraph(
            path=self.path, lexer=self.lexer, linter=self.linter, platform=self.platform,
            global_args=self.global_args, meta_args=self.meta_args, resolve_image=self.resolve,
            named_context=self.named_context,
        )  # fmt: skip
        for stage in self.stages:
            graph.add_stage(stage)
        target = graph.find_target(self.target_name)
        for state in graph.states:
            state.commands = [(cmd, False) for cmd in state.stage.commands] if state.named is None else []
            for cmd, _ in state.commands:
                graph.link_sources(state, cmd)
        graph.check_cycles()
        if len(graph.states) == 1:
            graph.states[0].display = ""
        needed = graph.resolve_needed(target)
        if self.all_stages:
            for state in graph.states:
                graph.resolve_needed(state)
            needed = list(graph.states)
        for state in graph.states:
            if state in needed and not state.dispatched:
                self.dispatch_stage(state)
        warnings = self.lint()
        config = omit_empty(target.config)
        if self.explicit_platform:
            set_platform(config, self.platform)
        return Definition(
            graph=build_graph(self.ops),
            target=target.rootfs,
            image=StageImage(
                config=config,
                history=tuple(target.history),
                base=target.base_image,
            ),
            metadata=self.metadata,
            warnings=tuple(warnings),
            unused_build_args=tuple(
                sorted(k for k in self.build_args if k not in self.used_args and k not in _BUILTIN_ARGS)
            ),
        )

    def meta_arg_values(self, build_args: Mapping[str, str]) -> dict[str, str]:
        """The global scope: the platform ARGs, then each ARG before the
        first FROM, from `build_args` or else its expanded default."""
        args = platform_args(self.platform, self.build_platform)
        for cmd in self.meta_args:
            for arg in cmd.args:
                if arg.key in build_args:
                    args[arg.key] = build_args[arg.key]
                elif arg.value is not None:
                    args[arg.key] = self.expand(arg.value, args, cmd.location)
        return args

    def check_default_bases(self) -> None:
        """InvalidDefaultArgInFrom: every FROM, target or not, must name a
        valid image with the ARG defaults alone, so that a build never needs
        a --build-arg. Expansion errors end the check quietly: the build
        reports them with the values it really uses."""
        try:
            defaults = self.meta_arg_values({})
            bases = [(stage.from_, self.lexer.process_word(stage.from_.base, defaults)) for stage in self.stages]
        except DockerfileError:
            return
        for from_, base in bases:
            if check_reference(base) is not None:
                lint.invalid_default_arg_in_from(self.linter, from_.base, from_.location)

    def init_state(self, state: StageState) -> None:
        """A stage's starting point: its base stage's state, an empty
        filesystem and config, or its base image's."""
        from_ = state.stage.from_
        if state.base_stage is not None:
            base = state.base_stage
            state.rootfs = base.rootfs
            state.platform = base.platform
            state.config = copy.deepcopy(base.config)
            state.config["config"].pop("OnBuild", None)  # triggers do not carry over
            state.history = list(base.history)
            state.env = dict(base.env)
            state.build_args = list(base.build_args)
            state.base_image = base.base_image
            state.workdir_set = base.workdir_set
            return
        platform = state.platform or self.platform
        state.platform = platform
        if state.image is None:  # scratch, or a named local directory (BuildKit gives it an empty config)
            state.config = empty_config(platform)
            if state.named is not None:
                state.rootfs = self.named_source(state.named, as_tree=True)
                if state.named.image != "scratch":
                    # The directory's layer has no history of its own; BuildKit's
                    # exporter adds one naming the ref (normalizeLayersAndHistory).
                    state.history = [HistoryEntry(created_by=f"local source for {state.named.name}",
                                                  comment="buildkit.exporter.v0")]
            else:
                state.rootfs = self.add(Scratch())
            return
        resolved = state.image.resolved
        assert resolved is not None
        state.base_image = resolved
        state.config = base_config(resolved.config, platform)
        state.history = base_history(resolved.config)
        reference = pinned(resolved)
        if has_no_layers(resolved.config):
            state.rootfs = self.add(Scratch())
        else:
            state.rootfs = self.add(
                ImageSource(ref=reference, platform=platform),
                self.step_name(state, f"FROM {reference}"),
                from_.location,
                state.display,
            )
        state.image.vertex = state.rootfs

    def dispatch_stage(self, state: StageState) -> None:
        state.cmd_total = (1 if state.image is not None or state.named is not None else 0) + sum(
            isinstance(c, (ins.Add, ins.Copy, ins.Run, ins.Workdir)) for c, _ in state.commands
        )
        self.init_state(state)
        state.dispatched = True
        self.used_args |= state.from_vars  # a build arg consumed by FROM counts as used
        cfg = state.config["config"]
        if cfg.get("WorkingDir"):
            # BuildKit re-applies the inherited WorkingDir as a WORKDIR
            # relative to itself, so a relative one ("app") becomes "/app/app".
            cfg["WorkingDir"] = join_workdir(cfg["WorkingDir"], cfg["WorkingDir"])
        env_list = cfg.get("Env") or []
        cfg["Env"] = env_list
        if not any(e.split("=", 1)[0] == "PATH" for e in env_list):
            env_list.append("PATH=" + DEFAULT_PATH)
        if state.base_stage is None:
            for entry in env_list:
                key, _, value = entry.partition("=")
                state.env[key] = value
        for cmd, onbuild in state.commands:
            self.on_build = onbuild
            _HANDLERS[type(cmd)](self, state, cmd)

    def lint(self) -> list[Warning]:
        """The warnings; under `# check=error=true`, an error if any."""
        warnings = self.linter.warnings
        if self.raise_on_lint and self.linter.config.error and warnings:
            rules = ", ".join(sorted({w.rule for w in warnings}))
            first = warnings[0]
            raise DockerfileError(f"lint violation found for rules: {rules}", first.location)
        return warnings
