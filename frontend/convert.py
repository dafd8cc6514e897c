"""Dockerfile → Definition: stages, scopes and ops, as BuildKit's
`dockerfile2llb` converts a Dockerfile to LLB.

The steps, in order:
1. parse the text and type the instructions (parser.py, instructions.py);
2. expand every FROM with the global ARGs, link stages to the stages they
   build on or copy from, reject cycles, pick the target;
3. resolve the base images of the stages the target needs (and only
   those), add their ONBUILD triggers, repeat while triggers add stages;
4. dispatch the needed stages in file order: each instruction updates the
   stage's image config and history, and the filesystem ones add an op on
   top of the stage's current root filesystem vertex.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import posixpath
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Mapping

from frontend import lint
from frontend import instructions as ins
from frontend.dockerignore import Matcher
from frontend.definition import (
    Definition,
    HistoryEntry,
    ImageResolver,
    NamedContext,
    NamedContextLookup,
    ResolvedImage,
    StageImage,
    VertexMeta,
    Warning,
    build_graph,
)
from frontend.durations import format_duration
from frontend.errors import DockerfileError, Location
from frontend.lexer import ExpansionError, Lexer, go_quote
from frontend.ops import (
    PROXY_ARGS,
    ContextSource,
    CopyPart,
    CopyParts,
    Exec,
    FileCopy,
    GitSource,
    HttpSource,
    ImageSource,
    InlineFile,
    MakeDir,
    MountSpec,
    MountType,
    NamedLocalSource,
    NetworkMode,
    Op,
    Platform,
    Scratch,
    WriteFiles,
)
from frontend.parser import Dockerfile, chomp_heredoc, parse, parse_heredoc
from frontend.platforms import parse_platform

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")
HISTORY_COMMENT = "buildkit.dockerfile.v0"
# Build args BuildKit never reports as unused.
_BUILTIN_ARGS = frozenset(
    [*PROXY_ARGS, "SOURCE_DATE_EPOCH", "BUILDKIT_INLINE_CACHE",
     "BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE", "BUILDKIT_CACHE_MOUNT_NS",
     "BUILDKIT_CONTEXT_KEEP_GIT_DIR", "BUILDKIT_MULTI_PLATFORM", "BUILDKIT_SYNTAX"]
)  # fmt: skip
# BuildKit keeps these ARGs out of the RUN environment.
_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})


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
    """The build-check warnings of a Dockerfile (see check.check): every
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
    meta_args, stages = ins.parse_stages(parsed)
    if not stages:
        raise DockerfileError("dockerfile contains no stages to build", Location(path, 1, 1))
    return _Converter(
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


# -- platform ARGs ---------------------------------------------------------


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


# -- references --------------------------------------------------------------

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


def _check_reference(ref: str) -> str | None:
    """An error message when `ref` is not a valid image reference."""
    if _REFERENCE.match(ref):
        return None
    if _REFERENCE.match(ref.lower()):
        return "invalid reference format: repository name must be lowercase"
    return "invalid reference format"


def _pinned(resolved: ResolvedImage) -> str:
    return resolved.ref if "@" in resolved.ref else f"{resolved.ref}@{resolved.digest}"


# -- history strings (Go's fmt verbs, as BuildKit prints them) ---------------


def _go_list(values) -> str:
    """%q of a []string: ["a" "b"]."""
    return "[" + " ".join(go_quote(v) for v in values) + "]"


def _go_plain_list(values) -> str:
    """%v of a []string: [a b]."""
    return "[" + " ".join(values) + "]"


def _healthcheck_history(health: dict) -> str:
    """%+v of BuildKit's HealthcheckConfig."""
    return (
        "HEALTHCHECK {Test:" + _go_plain_list(health.get("Test", []))
        + f" Interval:{format_duration(health.get('Interval', 0))}"
        + f" Timeout:{format_duration(health.get('Timeout', 0))}"
        + f" StartPeriod:{format_duration(health.get('StartPeriod', 0))}"
        + f" StartInterval:{format_duration(health.get('StartInterval', 0))}"
        + f" Retries:{health.get('Retries', 0)}}}"
    )  # fmt: skip


# -- ports and signals ---------------------------------------------------------

_SIGNALS = ("HUP INT QUIT ILL TRAP ABRT IOT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT "
            "CHLD CLD CONT STOP TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO POLL PWR SYS "
            "UNUSED").split()  # fmt: skip


def _valid_signal(text: str) -> bool:
    """moby/sys/signal.ParseSignal: a number, NAME, SIGNAME or RTMIN+n."""
    if text.isdigit():
        return 0 < int(text) <= 64
    name = text.upper()
    name = name[3:] if name.startswith("SIG") else name
    if name in _SIGNALS:
        return True
    match = re.fullmatch(r"RT(MIN|MAX)([+-]\d+)?", name)
    return bool(match) and abs(int(match.group(2) or 0)) <= 15


def _expose_ports(spec: str) -> list[str]:
    """docker/go-connections nat.ParsePortSpec: the container ports of
    `[ip:][hostPort:]containerPort[-end][/proto]`."""
    proto = "tcp"
    if "/" in spec:
        spec, proto = spec.rsplit("/", 1)
        if not proto:
            raise ValueError(f'invalid port specification: "{spec}/"')
        if proto.lower() not in ("tcp", "udp", "sctp"):
            raise ValueError(f"invalid proto: {proto}")
        proto = proto.lower()
    container = spec.rsplit(":", 1)[-1] if not spec.startswith("[") or "]:" in spec else spec
    if not container:
        raise ValueError("no port specified: " + spec + "<empty>")
    start, dash, end = container.partition("-")
    if not start.isdigit() or (dash and not end.isdigit()):
        raise ValueError(f"invalid containerPort: {container}")
    first, last = int(start), int(end) if dash else int(start)
    if first > 65535 or last > 65535 or last < first:
        raise ValueError(f"invalid containerPort: {container}")
    return [f"{port}/{proto}" for port in range(first, last + 1)]


# -- chmod -------------------------------------------------------------------

_SYMBOLIC_MODE = re.compile(r"^[ugoa]*([-+=]([rwxXst]*|[ugo]))+(,[ugoa]*([-+=]([rwxXst]*|[ugo]))+)*$")


def _check_chmod(value: str) -> None:
    message = f"invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
    if re.fullmatch(r"[0-7]+", value):
        if int(value, 8) > 0o7777:
            raise ValueError(message)
        return
    if re.fullmatch(r"[0-9]+", value) or not _SYMBOLIC_MODE.match(value):
        raise ValueError(message)


# -- sources of ADD ------------------------------------------------------------


def _is_git(src: str) -> bool:
    if src.startswith(("git@", "git://", "ssh://")):
        return True
    if src.startswith(("http://", "https://")):
        return src.split("#", 1)[0].endswith(".git")
    return False


def _is_http(src: str) -> bool:
    return src.startswith(("http://", "https://")) and not _is_git(src)


def _url_file_name(url: str) -> str:
    """The file name of `ADD <url>`, as BuildKit's frontend derives it: Go's
    path.Base of the URL's decoded path, "__unnamed__" when the URL does not
    parse or the base is no plain name. BuildKit keeps `..` (from
    `http://host/a/..`), which names the download's parent directory; here
    it is unnamed too, as are names with NUL."""
    unnamed = "__unnamed__"
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:  # `http://[::1/x`: the download fails and says so
        return unnamed
    if re.search(r"%(?![0-9A-Fa-f]{2})", path):
        return unnamed  # Go's url.Parse refuses a bad escape
    # Go's path.Base: trailing slashes go, "" is ".", all slashes are "/".
    trimmed = urllib.parse.unquote(path).rstrip("/")
    base = trimmed.rpartition("/")[2] if trimmed else ("/" if path else ".")
    if base in ("", ".", "..", "/") or "\0" in base:
        return unnamed
    return base


def _normalize(base: str, p: str, keep_slash: bool) -> str:
    """BuildKit's system.NormalizePath: an absolute, clean path; a trailing
    "/" (or "/.") survives when keep_slash, since it means "a directory"."""
    joined = posixpath.normpath(posixpath.join(base, p))
    if joined.startswith("//"):
        joined = "/" + joined.lstrip("/")
    if keep_slash and (p.endswith("/") or p.endswith("/.")) and joined != "/":
        joined += "/"
    return joined


# -- conversion state ----------------------------------------------------------


@dataclass(eq=False)
class _Image:
    """A base image or `--from` image, resolved once per reference."""

    ref: str
    platform: Platform
    resolved: ResolvedImage | None = None
    vertex: str = ""


@dataclass(eq=False)
class _StageState:
    stage: ins.Stage
    index: int
    display: str  # "builder" or "stage-2"; "" when the file has one stage
    base_name: str = ""
    base_stage: _StageState | None = None
    platform: Platform | None = None
    deps: dict = field(default_factory=dict)  # _StageState | _Image -> Instruction
    commands: list = field(default_factory=list)  # (Instruction, is_onbuild)
    onbuild_done: bool = False
    image: _Image | None = None
    named: NamedContext | None = None  # a --build-context replacing the stage, or its FROM
    dispatched: bool = False
    # filled when dispatched
    rootfs: str = ""
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    env: dict = field(default_factory=dict)  # the RUN/expansion scope: image env + ARGs
    build_args: list = field(default_factory=list)  # ArgDef with their values, in order
    base_image: ResolvedImage | None = None
    cmd_set: bool = False
    workdir_set: bool = False
    from_vars: set = field(default_factory=set)
    cmd_total: int = 0
    cmd_index: int = 0


class _Converter:
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
        self.images: dict[tuple[str, Platform], _Image] = {}
        self.states: list[_StageState] = []
        self.by_name: dict[str, _StageState] = {}
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

    # -- helpers -----------------------------------------------------------
    def expand(self, word: str, env: Mapping[str, str], location: Location) -> str:
        try:
            return self.lexer.process_word(word, env)
        except ExpansionError as err:
            raise DockerfileError(err.message, location) from None

    def expand_checked(self, word: str, state: _StageState, cmd: ins.Instruction) -> str:
        """Expand a word of an instruction BuildKit expands, reporting
        UndefinedVar for names neither set nor declared by an ARG."""
        try:
            result = self.lexer.process(word, state.env)
        except ExpansionError as err:
            raise DockerfileError(err.message, cmd.location) from None
        declared = {a.key for a in state.build_args}
        for name in sorted(result.unmatched - declared - _NON_ENV_ARGS):
            lint.undefined_var(self.linter, name, state.env, cmd.location)
        return result.result

    def add(self, op: Op, name: str = "", location: Location | None = None, stage: str = "") -> str:
        self.ops.append(op)
        vertex = op.vertex_id
        if name:
            self.metadata[vertex] = VertexMeta(name=name, location=location, stage=stage)
        return vertex

    # -- 1. stages and their links -----------------------------------------
    def run(self) -> Definition:
        self.global_args = self.meta_arg_values(self.build_args)
        lint.static_checks(self.parsed, self.meta_args, self.stages, self.linter)
        self.check_default_bases()
        for stage in self.stages:
            self.add_state(stage)
        target = self.find_target()
        for state in self.states:
            state.commands = [(cmd, False) for cmd in state.stage.commands] if state.named is None else []
            for cmd, _ in state.commands:
                self.link_sources(state, cmd)
        self.check_cycles()
        if len(self.states) == 1:
            self.states[0].display = ""
        needed = self.resolve_needed(target)
        if self.all_stages:
            for state in self.states:
                self.resolve_needed(state)
            needed = list(self.states)
        for state in self.states:
            if state in needed and not state.dispatched:
                self.dispatch_stage(state)
        warnings = self.lint()
        config = _omit_empty(target.config)
        if self.explicit_platform:
            _set_platform(config, self.platform)
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
            if _check_reference(base) is not None:
                lint.invalid_default_arg_in_from(self.linter, from_.base, from_.location)

    def add_state(self, stage: ins.Stage) -> None:
        from_ = stage.from_
        try:
            result = self.lexer.process(from_.base, self.global_args)
        except ExpansionError as err:
            raise DockerfileError(err.message, from_.location) from None
        if not result.result:
            raise DockerfileError(f"base name ({from_.base}) should not be blank", from_.location)
        state = _StageState(stage=stage, index=stage.index, display=stage.name or f"stage-{stage.index}")
        state.base_name = result.result
        state.from_vars = result.matched
        declared = set(self.global_args) | {a.key for cmd in self.meta_args for a in cmd.args}
        for name in sorted(result.unmatched - declared):
            lint.undefined_arg_in_from(self.linter, name, declared, from_.location)
        if from_.platform:
            try:
                expansion = self.lexer.process(from_.platform, self.global_args)
            except ExpansionError as err:
                raise DockerfileError(err.message, from_.location) from None
            for name in sorted(expansion.unmatched - declared):
                lint.undefined_arg_in_from(self.linter, name, declared, from_.location)
            if not expansion.result:
                raise DockerfileError(f"empty platform value from expression {from_.platform}", from_.location)
            try:
                state.platform = parse_platform(expansion.result)
            except ValueError as err:
                raise DockerfileError(f"failed to parse platform {from_.platform}: {err}", from_.location) from None
            lint.from_platform(self.linter, from_, expansion, self.global_args["TARGETPLATFORM"], state.platform)
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

    def find_target(self) -> _StageState:
        if not self.target_name:
            return self.states[-1]
        state = self.by_name.get(self.target_name.lower())
        if state is None:
            raise DockerfileError(f'target stage "{self.target_name}" could not be found')
        return state

    def stage_or_image(self, ref: str, cmd: ins.Instruction, state: _StageState) -> _StageState | _Image:
        """What `--from=ref` names: a stage (by name or index) or an image."""
        if "$" in ref and self.expand(ref, {}, cmd.location) != ref:
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
        problem = _check_reference(ref)
        if problem:
            raise DockerfileError(f'failed to parse stage name "{ref}": {problem}', cmd.location)
        context = self.named_context(ref)
        if context is not None and (not context.image or context.image == "scratch"):
            return context
        if context is not None:
            ref = context.image
        key = (ref, state.platform or self.platform)
        if key not in self.images:
            self.images[key] = _Image(ref=ref, platform=key[1])
        return self.images[key]

    def link_sources(self, state: _StageState, cmd: ins.Instruction) -> None:
        if isinstance(cmd, ins.Copy) and cmd.from_:
            state.deps[self.stage_or_image(cmd.from_, cmd, state)] = cmd
        elif isinstance(cmd, ins.Run):
            for raw in cmd.mounts:
                try:
                    mount = ins.parse_mount(raw, lambda word: word)
                except ins.Failure as err:
                    raise DockerfileError(str(err), cmd.location) from None
                if mount.from_:
                    state.deps[self.stage_or_image(mount.from_, cmd, state)] = cmd

    def check_cycles(self) -> None:
        done: set[int] = set()
        for start in self.states:
            stack: list[tuple[_StageState, object]] = [(start, iter(list(start.deps.items())))]
            on_path = {start.index}
            while stack:
                node, it = stack[-1]
                step = next(it, None)  # type: ignore[call-overload]
                if step is None:
                    stack.pop()
                    on_path.discard(node.index)
                    done.add(node.index)
                    continue
                dep, cmd = step
                if not isinstance(dep, _StageState) or dep.index in done:
                    continue
                if dep.index in on_path:
                    raise DockerfileError(f"circular dependency detected on stage: {dep.display}", cmd.location)
                on_path.add(dep.index)
                stack.append((dep, iter(list(dep.deps.items()))))

    # -- 2. what the target needs, resolved --------------------------------
    def reachable(self, target: _StageState) -> list[_StageState]:
        seen: dict[int, _StageState] = {}
        todo = [target]
        while todo:
            state = todo.pop()
            if state.index in seen:
                continue
            seen[state.index] = state
            todo.extend(d for d in state.deps if isinstance(d, _StageState))
        return [seen[i] for i in sorted(seen)]

    def resolve_needed(self, target: _StageState) -> list[_StageState]:
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
                    triggers = list(_config_section(state.image.resolved.config).get("OnBuild") or [])
                if triggers:
                    new_deps |= self.add_triggers(state, triggers)
            if not new_deps:
                return needed

    def resolve_base(self, state: _StageState) -> None:
        location = state.stage.from_.location
        if state.named is None:
            problem = _check_reference(state.base_name)
            if problem:
                raise DockerfileError(f'failed to parse stage name "{state.base_name}": {problem}', location)
            # BuildKit (resolveBaseImage): a named context wins over the image of that name.
            state.named = self.named_context(state.base_name)
        ref = state.base_name if state.named is None else state.named.image
        if ref and ref != "scratch":
            state.image = self.image_for(ref, state.platform or self.platform)
        # Otherwise a local directory or docker-image://scratch: init_state makes it.

    def image_for(self, ref: str, platform: Platform) -> _Image:
        key = (ref, platform)
        image = self.images.setdefault(key, _Image(ref=ref, platform=platform))
        if image.resolved is None:
            image.resolved = self.resolve(ref, platform)
        return image

    def add_triggers(self, state: _StageState, triggers: list[str]) -> bool:
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
            cmd = ins.parse_instruction(node, self.path)
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

    # -- 3. dispatch -------------------------------------------------------
    def init_state(self, state: _StageState) -> None:
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
            state.config = _empty_config(platform)
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
        state.config = _base_config(resolved.config, platform)
        state.history = [
            HistoryEntry(
                created_by=str(h.get("created_by", "")),
                empty_layer=bool(h.get("empty_layer", False)),
                comment=str(h.get("comment", "")),
            )
            for h in (resolved.config.get("history") or [])
            if isinstance(h, Mapping)
        ]
        pinned = _pinned(resolved)
        if _has_no_layers(resolved.config):
            state.rootfs = self.add(Scratch())
        else:
            state.rootfs = self.add(
                ImageSource(ref=pinned, platform=platform),
                self.step_name(state, f"FROM {pinned}"),
                from_.location,
                state.display,
            )
        state.image.vertex = state.rootfs

    def dispatch_stage(self, state: _StageState) -> None:
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
            cfg["WorkingDir"] = _workdir(cfg["WorkingDir"], cfg["WorkingDir"])
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
            handler = getattr(self, "do_" + type(cmd).__name__.lower())
            handler(state, cmd)

    def step_name(self, state: _StageState, text: str) -> str:
        if state.cmd_total == 0:
            return text
        state.cmd_index += 1
        width = int(1 + math.log10(state.cmd_total))
        prefix = "[" + (state.display + " " if state.display else "")
        prefix += f"{state.cmd_index:>{width}}/{state.cmd_total}] "
        if getattr(self, "on_build", False):
            prefix += "ONBUILD "
        return prefix + text

    def commit(self, state: _StageState, created_by: str, layer: bool = False, buildkit_suffix: bool = False) -> None:
        if buildkit_suffix:
            created_by += " # buildkit"
        state.history.append(HistoryEntry(created_by=created_by, empty_layer=not layer, comment=HISTORY_COMMENT))

    def display_text(self, state: _StageState, cmd: ins.Instruction) -> str:
        lexer = Lexer(self.parsed.escape, raw_quotes=True, skip_unset=True)
        try:
            text = lexer.process_word(cmd.original, state.env)
        except ExpansionError:
            text = cmd.original
        head, _, rest = text.partition(" ")
        return head.upper() + (" " + rest if rest else "")

    # -- metadata-only instructions ------------------------------------------
    def do_env(self, state: _StageState, cmd: ins.Env) -> None:
        pairs = [(self.expand_checked(p.key, state, cmd), self.expand_checked(p.value, state, cmd))
                 for p in cmd.pairs]  # fmt: skip
        env_list = state.config["config"].setdefault("Env", [])
        for key, value in pairs:
            state.env[key] = value
            _set_env(env_list, key, value)
        self.commit(state, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))

    def do_label(self, state: _StageState, cmd: ins.Label) -> None:
        pairs = [(self.expand_checked(p.key, state, cmd), self.expand_checked(p.value, state, cmd))
                 for p in cmd.pairs]  # fmt: skip
        labels = state.config["config"].get("Labels") or {}
        for key, value in pairs:
            labels[key] = value
        state.config["config"]["Labels"] = labels
        self.commit(state, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))

    def do_arg(self, state: _StageState, cmd: ins.Arg) -> None:
        commits = []
        for arg in cmd.args:
            value = arg.value
            if value is None and arg.key not in self.build_args and arg.key in self.global_args:
                value = self.global_args[arg.key]  # ARG NAME picks the global value up
            if arg.key in self.build_args:
                value = self.build_args[arg.key]
            elif arg.value is not None:
                value = self.expand_checked(arg.value, state, cmd)
            if value is not None and arg.key not in _NON_ENV_ARGS:
                state.env[arg.key] = value
            self.used_args.add(arg.key)
            state.build_args.append(ins.ArgDef(arg.key, value))
            commits.append(arg.key if value is None else f"{arg.key}={value}")
        self.commit(state, "ARG " + " ".join(commits))

    def do_user(self, state: _StageState, cmd: ins.User) -> None:
        user = self.expand_checked(cmd.user, state, cmd)
        state.config["config"]["User"] = user
        self.commit(state, f"USER {user}")

    def do_cmd(self, state: _StageState, cmd: ins.Cmd) -> None:
        if cmd.shell_form and not state.config["config"].get("Shell"):
            lint.json_args_recommended(self.linter, cmd.name, cmd.location)
        args = self.with_shell(state, cmd.command) if cmd.shell_form else list(cmd.command)
        state.config["config"]["Cmd"] = args
        state.config["config"]["ArgsEscaped"] = True
        state.cmd_set = True
        self.commit(state, "CMD " + _go_list(args))

    def do_entrypoint(self, state: _StageState, cmd: ins.Entrypoint) -> None:
        if cmd.shell_form and not state.config["config"].get("Shell"):
            lint.json_args_recommended(self.linter, cmd.name, cmd.location)
        # A bare `ENTRYPOINT` is an empty shell form: BuildKit still wraps it
        # in the shell, giving ["/bin/sh", "-c", ""].
        args = self.with_shell(state, cmd.command) if cmd.shell_form else list(cmd.command)
        cfg = state.config["config"]
        cfg["Entrypoint"] = args
        if not state.cmd_set:
            cfg.pop("Cmd", None)  # an ENTRYPOINT drops the CMD inherited from the base
        self.commit(state, "ENTRYPOINT " + _go_list(args))

    def do_shell(self, state: _StageState, cmd: ins.Shell) -> None:
        state.config["config"]["Shell"] = list(cmd.command)
        self.commit(state, "SHELL " + _go_plain_list(cmd.command))

    def do_expose(self, state: _StageState, cmd: ins.Expose) -> None:
        ports: list[str] = []
        for raw in cmd.ports:
            try:
                result = self.lexer.process(raw, state.env)
            except ExpansionError as err:
                raise DockerfileError(err.message, cmd.location) from None
            words = result.words
            declared = {a.key for a in state.build_args}
            for name in sorted(result.unmatched - declared):
                lint.undefined_var(self.linter, name, state.env, cmd.location)
            for word in words:
                lint.expose_port(self.linter, word, cmd.location)
                try:
                    ports.extend(_expose_ports(word))
                except ValueError as err:
                    raise DockerfileError(str(err), cmd.location) from None
        exposed = state.config["config"].get("ExposedPorts") or {}
        exposed.update((port, {}) for port in ports)
        state.config["config"]["ExposedPorts"] = exposed
        # Current BuildKit prints the port list (`EXPOSE %v` of a []string),
        # not the map older releases printed.
        self.commit(state, "EXPOSE " + _go_plain_list(ports))

    def do_volume(self, state: _StageState, cmd: ins.Volume) -> None:
        paths = [self.expand_checked(p, state, cmd) for p in cmd.paths]
        volumes = state.config["config"].get("Volumes") or {}
        for p in paths:
            if not p:
                raise DockerfileError("VOLUME specified can not be an empty string", cmd.location)
            volumes[p] = {}
        state.config["config"]["Volumes"] = volumes
        self.commit(state, "VOLUME " + _go_plain_list(paths))

    def do_stopsignal(self, state: _StageState, cmd: ins.StopSignal) -> None:
        signal = self.expand_checked(cmd.signal, state, cmd)
        if not _valid_signal(signal):
            raise DockerfileError(f"Invalid signal: {signal}", cmd.location)
        state.config["config"]["StopSignal"] = signal
        self.commit(state, f"STOPSIGNAL {signal}")

    def do_healthcheck(self, state: _StageState, cmd: ins.Healthcheck) -> None:
        health: dict = {"Test": list(cmd.test)}
        for key, value in (("Interval", cmd.interval), ("Timeout", cmd.timeout),
                           ("StartPeriod", cmd.start_period), ("StartInterval", cmd.start_interval),
                           ("Retries", cmd.retries)):  # fmt: skip
            if value:
                health[key] = value
        state.config["config"]["Healthcheck"] = health
        self.commit(state, _healthcheck_history(health))

    def do_onbuild(self, state: _StageState, cmd: ins.Onbuild) -> None:
        # BuildKit records the trigger in the config but adds no history entry.
        cfg = state.config["config"]
        cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), cmd.expression]

    def do_maintainer(self, state: _StageState, cmd: ins.Maintainer) -> None:
        state.config["author"] = cmd.maintainer
        self.commit(state, f"MAINTAINER {cmd.maintainer}")

    def with_shell(self, state: _StageState, command) -> list[str]:
        shell = state.config["config"].get("Shell") or list(DEFAULT_SHELL)
        return [*shell, " ".join(command)]

    # -- filesystem instructions -------------------------------------------
    def do_workdir(self, state: _StageState, cmd: ins.Workdir) -> None:
        path = self.expand_checked(cmd.path, state, cmd)
        if not state.workdir_set and not path.startswith("/"):
            lint.workdir_relative(self.linter, path, cmd.location)
        state.workdir_set = True
        workdir = _workdir(state.config["config"].get("WorkingDir") or "", path)
        state.config["config"]["WorkingDir"] = workdir
        layer = workdir != "/"
        if layer:
            user = state.config["config"].get("User") or ""
            state.rootfs = self.add(
                MakeDir(inputs=(state.rootfs,), path=_normalize("/", workdir, keep_slash=False), user=user),
                self.step_name(state, self.display_text(state, cmd)),
                cmd.location,
                state.display,
            )
        self.commit(state, f"WORKDIR {workdir}", layer=layer)

    def run_env(self, state: _StageState) -> tuple[str, ...]:
        env = [f"{k}={v}" for k, v in state.env.items()]
        present = {k.upper() for k in state.env}
        # Proxy build args reach RUN without an ARG, as in BuildKit.
        for key in sorted(self.build_args):
            if key.upper() in PROXY_ARGS and key.upper() not in present and key not in state.env:
                env.append(f"{key}={self.build_args[key]}")
                self.used_args.add(key)
        return tuple(env)

    def do_run(self, state: _StageState, cmd: ins.Run) -> None:
        inputs = [state.rootfs]
        mounts: list[MountSpec] = []
        name_suffix = ""
        args = list(cmd.command)
        if cmd.heredocs:
            doc = cmd.heredocs[0]
            if parse_heredoc(args[0]) is not None:
                data = chomp_heredoc(doc.content) if doc.chomp else doc.content
                if data.startswith("#!"):
                    # A script with a shebang is written to a file and run
                    # as a program, from a read-only mount at /dev/pipes/.
                    script = self.add(
                        WriteFiles(
                            inputs=(self.add(Scratch()),),
                            files=(InlineFile(doc.name, data.encode()),),
                            dest="/",
                            chmod="0755",
                        ),
                        "preparing inline document",
                    )
                    inputs.append(script)
                    mounts.append(MountSpec(type=MountType.BIND, target="/dev/pipes/", input=len(inputs) - 1,
                                            source="/", readonly=True))  # fmt: skip
                    args = ["/dev/pipes/" + doc.name]
                else:
                    # A plain script is handed to the shell as its command.
                    args = [data]
                name_suffix = f" ({_summarize(doc.content)})"
            else:
                # `RUN python3 <<EOF` and friends: give the shell the whole
                # heredoc text and let it do the redirection.
                full = args[0]
                for d in cmd.heredocs:
                    full += "\n" + d.content + d.name
                args = [full]
        if cmd.shell_form:
            args = self.with_shell(state, args)
        for raw in cmd.mounts:
            spec_mount = self.run_mount(state, cmd, raw, inputs)
            mounts.append(spec_mount)
        try:
            network = NetworkMode(cmd.network or "default")
        except ValueError:
            raise DockerfileError(f'unsupported network mode "{cmd.network}"', cmd.location) from None
        security = cmd.security or "sandbox"
        if security not in ("sandbox", "insecure"):
            raise DockerfileError(f'unsupported security mode "{cmd.security}"', cmd.location)
        env = self.run_env(state)
        cfg = state.config["config"]
        op = Exec(
            inputs=tuple(inputs),
            args=tuple(args),
            env=env,
            # The config keeps an absolute WORKDIR as written ("/a/./b/"); the
            # op takes the clean form so that spelling does not change its key.
            cwd=_normalize("/", cfg.get("WorkingDir") or "/", keep_slash=False),
            user=cfg.get("User") or "",
            network=network,
            mounts=tuple(mounts),
            security=security,
            extra_hosts=self.extra_hosts,
        )
        state.rootfs = self.add(
            op, self.step_name(state, self.display_text(state, cmd) + name_suffix), cmd.location, state.display
        )
        self.commit(state, "RUN " + self.run_command_string(state, args), layer=True, buildkit_suffix=True)

    def run_command_string(self, state: _StageState, args: list[str]) -> str:
        values: dict[str, str] = {}
        for arg in state.build_args:
            values[arg.key] = state.env.get(arg.key, arg.value or "")
        if not values:
            return " ".join(args)
        return " ".join([f"|{len(values)}", *(f"{k}={v}" for k, v in values.items()), *args])

    def run_mount(self, state: _StageState, cmd: ins.Run, raw: str, inputs: list[str]) -> MountSpec:
        try:
            mount = ins.parse_mount(raw, lambda word: self.expand(word, state.env, cmd.location))
        except ins.Failure as err:
            raise DockerfileError(str(err), cmd.location) from None
        index = None
        if mount.from_:
            source = self.source_vertex(state, cmd, mount.from_, as_tree=True)
            inputs.append(source)
            index = len(inputs) - 1
        elif mount.type == MountType.BIND:
            inputs.append(self.context_vertex())
            index = len(inputs) - 1
        target = mount.target
        if target and not target.startswith("/"):
            target = _normalize(state.config["config"].get("WorkingDir") or "/", target, keep_slash=False)
        return MountSpec(
            type=mount.type,
            target=target,
            input=index,
            source=_normalize("/", mount.source or "/", keep_slash=False),
            readonly=mount.readonly,
            cache_id=mount.id if mount.type == MountType.CACHE else "",
            sharing=mount.sharing,
            mode=mount.mode,
            uid=mount.uid,
            gid=mount.gid,
            size=mount.size,
            secret_id=mount.id if mount.type in (MountType.SECRET, MountType.SSH) else "",
            env=mount.env,
            required=mount.required,
        )

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

    def source_vertex(self, state: _StageState, cmd: ins.Instruction, ref: str, as_tree: bool = False) -> str:
        source = self.stage_or_image(ref, cmd, state)
        if isinstance(source, NamedContext):
            return self.named_source(source, as_tree)
        if isinstance(source, _StageState):
            if not source.dispatched:
                raise DockerfileError(
                    f'cannot copy from stage "{ref}", it needs to be defined before current stage "{state.display}"',
                    cmd.location,
                )
            return source.rootfs
        image = self.image_for(source.ref, source.platform)
        assert image.resolved is not None
        if not image.vertex:
            image.vertex = self.add(
                ImageSource(ref=_pinned(image.resolved), platform=image.platform),
                f"[internal] load metadata for {image.ref}",
                cmd.location,
                state.display,
            )
        return image.vertex

    def do_copy(self, state: _StageState, cmd: ins.Copy) -> None:
        self.copy_like(state, cmd, is_add=False)

    def do_add(self, state: _StageState, cmd: ins.Add) -> None:
        self.copy_like(state, cmd, is_add=True)

    def copy_like(self, state: _StageState, cmd, is_add: bool) -> None:
        loc = cmd.location
        env = state.env
        sources = [self.expand_checked(s, state, cmd) for s in cmd.sources]
        dest_raw = self.expand_checked(cmd.dest, state, cmd)
        chown = self.expand_checked(cmd.chown, state, cmd) if cmd.chown else ""
        chmod = self.expand_checked(cmd.chmod, state, cmd) if cmd.chmod else ""
        excludes = tuple(self.expand(e, env, loc) for e in cmd.excludes)
        heredoc_lexer = Lexer("\\", skip_quotes=True)
        contents = []
        for content in cmd.contents:
            data = content.data
            if content.expand:
                try:
                    data = heredoc_lexer.process_word(data, env)
                except ExpansionError as err:
                    raise DockerfileError(err.message, loc) from None
            contents.append((content.path, data))
        if chmod:
            try:
                _check_chmod(chmod)
            except ValueError as err:
                raise DockerfileError(str(err), loc) from None
        checksum = self.expand(cmd.checksum, env, loc) if is_add and cmd.checksum else ""
        parents = bool(getattr(cmd, "parents", False))
        workdir = state.config["config"].get("WorkingDir") or "/"
        if dest_raw.startswith("/"):
            dest = _normalize("/", dest_raw, keep_slash=True)
        else:
            dest = _normalize(workdir, dest_raw or "./", keep_slash=True)
            if dest_raw in ("", ".") and dest != "/":
                dest += "/"

        word = "ADD" if is_add else "COPY"
        created_by = word
        if parents:
            created_by += " --parents"
        if chown:
            created_by += f" --chown={chown}"
        if chmod:
            created_by += f" --chmod={chmod}"
        created_by += "".join(" " + s for s in sources) + "".join(" <<" + p for p, _ in contents)
        created_by += " " + dest_raw

        if checksum:
            if len(sources) != 1:
                raise DockerfileError("checksum can't be specified for multiple sources", loc)
            if not (_is_http(sources[0]) or _is_git(sources[0])):
                raise DockerfileError("checksum requires HTTP(S) or Git sources", loc)
        remote = [s for s in sources if _is_http(s) or _is_git(s)]
        if remote and not is_add:
            kind = "a git ref" if _is_git(remote[0]) else "a URL"
            raise DockerfileError(f"source can't be {kind} for COPY", loc)

        name = self.step_name(state, self.display_text(state, cmd))
        explicit_unpack = bool(cmd.unpack) if is_add and cmd.unpack is not None else None
        from_ = getattr(cmd, "from_", "")
        where = _CopySources(self, state, cmd, name=name, from_=from_, is_add=is_add, parents=parents,
                             checksum=checksum, explicit_unpack=explicit_unpack)

        if (remote and (len(sources) > 1 or contents)) or (contents and sources):
            op: Op = self.copy_parts(cmd, state.rootfs, sources, contents, dest, chown, chmod, excludes, where)
        elif contents:
            op = WriteFiles(
                inputs=(state.rootfs,),
                files=tuple(InlineFile(p, d.encode()) for p, d in contents),
                dest=dest,
                chown=chown,
                chmod=chmod,
            )
        else:
            unpack = False
            if remote and _is_git(remote[0]):
                src_vertex, paths = where.git(remote[0])
            elif remote:
                src_vertex, paths = where.http(remote[0])
                unpack = where.unpacks_url()
            else:
                paths = where.local_paths(sources)
                src_vertex = where.local_vertex()
                unpack = where.unpacks_local()
            op = FileCopy(
                inputs=(state.rootfs, src_vertex),
                sources=paths,
                dest=dest,
                chown=chown,
                chmod=chmod,
                link=cmd.link,
                parents=parents,
                excludes=excludes,
                unpack=unpack,
                follow_symlinks=True,
                created_by=created_by + " # buildkit",
            )
        state.rootfs = self.add(op, name, loc, state.display)
        self.commit(state, created_by, layer=True, buildkit_suffix=True)

    def copy_parts(self, cmd, rootfs: str, sources: list[str], contents: list[tuple[str, str]], dest: str,
                   chown: str, chmod: str, excludes: tuple[str, ...], where: _CopySources) -> CopyParts:
        """A COPY/ADD mixing source kinds: one CopyParts, its parts in
        BuildKit's order (dispatchCopy): the source paths as written (local,
        URL and git interleaved), then the heredocs; a later part overwrites
        an earlier one. Consecutive local sources share one part."""
        word = "ADD" if where.is_add else "COPY"
        if not (dest.endswith("/") or dest.endswith("/.")):
            raise DockerfileError(f"When using {word} with more than one source file, "
                                  "the destination must be a directory and end with a /", cmd.location)
        inputs: list[str] = [rootfs]
        parts: list[CopyPart] = []

        def input_index(vertex: str) -> int:
            if vertex not in inputs[1:]:
                inputs.append(vertex)
            return inputs.index(vertex, 1)

        local: list[str] = []

        def flush_local() -> None:
            if local:
                parts.append(CopyPart(input=input_index(where.local_vertex()), sources=where.local_paths(local),
                                      parents=where.parents, unpack=where.unpacks_local()))
                local.clear()

        for src in sources:
            if _is_git(src):
                flush_local()
                vertex, paths = where.git(src)
                parts.append(CopyPart(input=input_index(vertex), sources=paths))
            elif _is_http(src):
                flush_local()
                vertex, paths = where.http(src)
                parts.append(CopyPart(input=input_index(vertex), sources=paths, unpack=where.unpacks_url()))
            else:
                local.append(src)
        flush_local()
        if contents:
            parts.append(CopyPart(files=tuple(InlineFile(p, d.encode()) for p, d in contents)))
        return CopyParts(
            inputs=tuple(inputs),
            parts=tuple(parts),
            dest=dest,
            chown=chown,
            chmod=chmod,
            link=cmd.link,
            excludes=excludes,
            is_add=where.is_add,
        )

    # -- 4. checks -----------------------------------------------------------
    def lint(self) -> list[Warning]:
        warnings = self.linter.warnings
        if self.raise_on_lint and self.linter.config.error and warnings:
            rules = ", ".join(sorted({w.rule for w in warnings}))
            first = warnings[0]
            raise DockerfileError(f"lint violation found for rules: {rules}", first.location)
        return warnings


class _CopySources:
    """Where one COPY/ADD's sources come from: the vertex and paths of a
    git source, a URL, or local paths (the context or `--from`), shared by
    the single-kind FileCopy and the mixed CopyParts."""

    def __init__(self, conv: _Converter, state: _StageState, cmd, *, name: str, from_: str, is_add: bool,
                 parents: bool, checksum: str, explicit_unpack: bool | None):
        self.conv, self.state, self.cmd, self.name = conv, state, cmd, name
        self.from_, self.is_add, self.parents = from_, is_add, parents
        self.checksum, self.explicit_unpack = checksum, explicit_unpack

    def _add(self, op: Op) -> str:
        return self.conv.add(op, self.name, self.cmd.location, self.state.display)

    def git(self, src: str) -> tuple[str, tuple[str, ...]]:
        url, _, fragment = src.partition("#")
        ref, _, subdir = fragment.partition(":")
        keep_git_dir = bool(getattr(self.cmd, "keep_git_dir", False))
        vertex = self._add(GitSource(remote=url, ref=ref, keep_git_dir=keep_git_dir))
        # `#ref:subdir` adds that directory's contents, as BuildKit's git source does.
        return vertex, ("/" + subdir.strip("/"),)

    def http(self, url: str) -> tuple[str, tuple[str, ...]]:
        filename = _url_file_name(url)
        return self._add(HttpSource(url=url, checksum=self.checksum, filename=filename)), ("/" + filename,)

    def local_paths(self, local: list[str]) -> tuple[str, ...]:
        matcher = self.conv.matcher
        if not self.from_ and matcher is not None:
            for src in local:
                rel = _normalize("/", src, keep_slash=False).lstrip("/")
                if rel and not any(c in src for c in "*?[") and matcher.excluded(rel):
                    lint.copy_ignored(self.conv.linter, "Add" if self.is_add else "Copy", src, self.cmd.location)
        if self.parents:
            # A leading "./" is the usual relative prefix, not the
            # `/./` pivot: `./x/./y/a.txt` keeps `y/a.txt`.
            return tuple("/" + re.sub(r"^(?:\./+)+", "", s).lstrip("/") for s in local)
        return tuple(_normalize("/", s, keep_slash=False) for s in local)

    def local_vertex(self) -> str:
        if self.from_:
            return self.conv.source_vertex(self.state, self.cmd, self.from_)
        return self.conv.context_vertex()

    # BuildKit: --unpack=... overrides; by default ADD unpacks local archives, never a URL's file.
    def unpacks_local(self) -> bool:
        return self.is_add if self.explicit_unpack is None else self.explicit_unpack

    def unpacks_url(self) -> bool:
        return bool(self.explicit_unpack)


def _summarize(doc: str) -> str:
    lines = doc.strip().replace("\r\n", "\n").split("\n")
    return lines[0] + ("..." if len(lines) > 1 else "")


def _config_section(config: Mapping) -> Mapping:
    section = config.get("config") if isinstance(config, Mapping) else None
    return section if isinstance(section, Mapping) else {}


def _has_no_layers(config: Mapping) -> bool:
    rootfs = config.get("rootfs")
    if isinstance(rootfs, Mapping) and rootfs.get("diff_ids"):
        return False
    history = config.get("history") or []
    return bool(isinstance(rootfs, Mapping)) and all(
        isinstance(h, Mapping) and h.get("empty_layer") for h in history
    )


def _empty_config(platform: Platform) -> dict:
    image: dict = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        image["variant"] = platform.variant
    image["config"] = {"Env": ["PATH=" + DEFAULT_PATH], "WorkingDir": "/"}
    return image


# Top-level fields of an image config that an image built on it keeps
# (BuildKit decodes into DockerOCIImage, which drops the others).
_KEPT_FIELDS = ("author", "architecture", "os", "os.version", "os.features", "variant")
# The `config` fields of DockerOCIImageConfig (OCI ImageConfig plus Docker's
# Healthcheck, OnBuild, Shell). A base image made by the classic builder
# also carries Hostname, Image, AttachStdin...; BuildKit's decoder drops them.
_CONFIG_FIELDS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
                  "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "Shell")
_HEALTHCHECK_FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")


def _go_fields(section: Mapping, names: tuple[str, ...]) -> dict:
    """The members of a JSON object that Go's decoder maps onto a struct
    with these field names: matched case-insensitively, the last one wins."""
    by_lower = {name.lower(): name for name in names}
    fields: dict = {}
    for key, value in section.items():
        name = key if key in names else by_lower.get(str(key).lower())
        if name is not None:
            fields[name] = value
    return fields


def _base_config(config: Mapping, platform: Platform) -> dict:
    plain = json.loads(json.dumps(config, default=_json_default))
    image: dict = {k: plain[k] for k in _KEPT_FIELDS if k in plain}
    image.setdefault("architecture", platform.architecture)
    image.setdefault("os", platform.os)
    section = plain.get("config")
    section = _go_fields(section, _CONFIG_FIELDS) if isinstance(section, dict) else {}
    for key in ("ExposedPorts", "Volumes"):  # map[string]struct{}: only the keys survive
        if isinstance(section.get(key), dict):
            section[key] = {name: {} for name in section[key]}
    if isinstance(section.get("Healthcheck"), dict):
        section["Healthcheck"] = _go_fields(section["Healthcheck"], _HEALTHCHECK_FIELDS)
    section.pop("OnBuild", None)  # consumed by this build, not inherited
    image["config"] = section
    return _omit_empty(image)


def _is_empty(value) -> bool:
    """Go's omitempty test: false, 0, "", nil and empty slices and maps."""
    if value is None or isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value == 0
    return isinstance(value, (str, list, tuple, dict)) and not value


def _omit_empty(image: Mapping) -> dict:
    """An image config as BuildKit marshals it: every field of the config
    section, its Healthcheck and the platform fields is `omitempty`, so an
    empty `CMD []`, an `ENTRYPOINT []` or a null inherited from a base image
    is left out rather than written as [] or null."""
    out = copy.deepcopy(dict(image))
    section = out.get("config")
    if isinstance(section, dict):
        health = section.get("Healthcheck")
        if isinstance(health, dict):
            section["Healthcheck"] = {k: v for k, v in health.items() if not _is_empty(v)}
        # Healthcheck is a pointer: only a missing one is omitted, {} stays.
        out["config"] = {k: v for k, v in section.items()
                         if (v is not None if k == "Healthcheck" else not _is_empty(v))}
    for key in ("author", "os.version", "os.features", "variant"):
        if key in out and _is_empty(out[key]):
            del out[key]
    return out


def _set_platform(image: dict, platform: Platform) -> None:
    """BuildKit's finalizeResultImage for an explicit --platform: the image
    says the requested os/architecture whatever its last base said; the
    variant is replaced when one was asked for or the os/arch changed."""
    same = image.get("os") == platform.os and image.get("architecture") == platform.architecture
    image["os"], image["architecture"] = platform.os, platform.architecture
    if platform.variant or not same:
        image.pop("variant", None)
        if platform.variant:
            image["variant"] = platform.variant
    if not same:
        image.pop("os.version", None)


def _workdir(current: str, path: str) -> str:
    """BuildKit's system.NormalizeWorkdir: a relative path is joined to the
    current directory and cleaned; an absolute one is kept as written
    (`WORKDIR /a/./b/` stays "/a/./b/" in the config and the history)."""
    parent = current or "/"
    if not parent.startswith("/"):
        parent = _normalize("/", parent, keep_slash=False)
    if not path:
        return parent
    if path.startswith("/"):
        return path
    return _normalize(parent, path, keep_slash=False)


def _json_default(value):
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _set_env(env_list: list[str], key: str, value: str) -> None:
    for i, entry in enumerate(env_list):
        if entry.split("=", 1)[0] == key:
            env_list[i] = f"{key}={value}"
            return
    env_list.append(f"{key}={value}")
