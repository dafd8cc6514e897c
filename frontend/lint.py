"""BuildKit's build checks (`docker build --check`): rules and messages.

Rules that need only the text run over the parsed stages here
(`static_checks`). Rules that need the variable scope at an instruction
(UndefinedVar, UndefinedArgInFrom, InvalidDefaultArgInFrom, the FROM
--platform rules, JSONArgsRecommended, WorkdirRelativePath, the EXPOSE
rules, CopyIgnoredFile) are reported by the converter while it expands
and dispatches, through the same `Linter`, so the scope logic exists once.
The entry point of `pybuild check` is frontend.check.check, which runs the
converter; this module imports no converter code.

`# check=skip=Rule1,Rule2;error=true;experimental=Rule3` configures them,
as in BuildKit; experimental rules (CopyIgnoredFile) run only when named.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from frontend import instructions as ins
from frontend.definition import Warning
from frontend.errors import Location
from frontend.lexer import ProcessResult, go_quote
from frontend.ops import Platform
from frontend.platforms import parse_platform as parse_platform_text
from frontend.nodes import Dockerfile

RULES: dict[str, str] = {
    "ConsistentInstructionCasing": "All commands within the Dockerfile should use the same casing (either upper or lower)",
    "CopyIgnoredFile": "Attempting to Copy file that is excluded by .dockerignore",
    "DuplicateStageName": "Stage names should be unique",
    "ExposeInvalidFormat": "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
    "ExposeProtoCasing": "Protocol in EXPOSE instruction should be lowercase",
    "FromAsCasing": "The 'as' keyword should match the case of the 'from' keyword",
    "FromPlatformFlagConstDisallowed": "FROM --platform flag should not use a constant value",
    "InvalidDefaultArgInFrom": "Default value for global ARG results in an empty or invalid base image name",
    "InvalidBaseImagePlatform": "Base image platform does not match expected target platform",
    "InvalidDefinitionDescription": "Comment for build stage or argument should follow the format: `# <arg/stage name> "
                                    "<description>`. If this is not intended to be a description comment, add an empty "
                                    "line or comment between the instruction and the comment.",
    "JSONArgsRecommended": "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    "LegacyKeyValueFormat": "Legacy key/value format with whitespace separator should not be used",
    "MaintainerDeprecated": "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    "MultipleInstructionsDisallowed": "Multiple instructions of the same type should not be used in the same stage",
    "NoEmptyContinuation": "Empty continuation lines will become errors in a future release",
    "RedundantTargetPlatform": "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    "ReservedStageName": "Reserved words should not be used as stage names",
    "SecretsUsedInArgOrEnv": "Sensitive data should not be used in the ARG or ENV commands",
    "StageNameCasing": "Stage names should be lowercase",
    "UndefinedArgInFrom": "FROM command must use declared ARGs",
    "UndefinedVar": "Variables should be defined before their use",
    "WorkdirRelativePath": "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
}
EXPERIMENTAL = frozenset({"CopyIgnoredFile", "InvalidDefinitionDescription"})
# Every rule has a page under this address but InvalidBaseImagePlatform,
# which BuildKit reports without one.
_RULE_DOCS = "https://docs.docker.com/go/dockerfile/rule/"


def rule_url(rule: str) -> str:
    """The documentation page BuildKit links a rule to ("" for none)."""
    if rule not in RULES or rule == "InvalidBaseImagePlatform":
        return ""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", rule)  # JSONArgs -> JSON-Args
    return f"{_RULE_DOCS}{words.lower()}/"

_SECRET = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)")
_PUBLIC = re.compile(r"(?i)(?:_|^)public(?:_|$)")
_RESERVED_STAGE_NAMES = ("context", "scratch")


@dataclass(frozen=True)
class CheckConfig:
    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    error: bool = False
    experimental: frozenset[str] = frozenset()
    experimental_all: bool = False

    @classmethod
    def parse(cls, text: str | None) -> CheckConfig:
        """`skip=A,B;error=true;experimental=all`; unknown keys are ignored."""
        if not text:
            return cls()
        skip: set[str] = set()
        experimental: set[str] = set()
        skip_all = error = experimental_all = False
        for part in text.split(";"):
            key, _, value = part.partition("=")
            key = key.strip().lower()
            names = {v.strip() for v in value.split(",") if v.strip()}
            if key == "skip":
                skip_all = skip_all or "all" in {n.lower() for n in names}
                skip |= names
            elif key == "error":
                error = value.strip().lower() in ("true", "1")
            elif key == "experimental":
                experimental_all = experimental_all or "all" in {n.lower() for n in names}
                experimental |= names
        return cls(frozenset(skip), skip_all, error, frozenset(experimental), experimental_all)

    @classmethod
    def from_dockerfile(cls, dockerfile: Dockerfile) -> CheckConfig:
        return cls.parse(dockerfile.directive("check"))

    def enabled(self, rule: str) -> bool:
        if self.skip_all or rule in self.skip:
            return False
        if rule in EXPERIMENTAL:
            return self.experimental_all or rule in self.experimental
        return True


@dataclass
class Linter:
    config: CheckConfig = field(default_factory=CheckConfig)
    warnings: list[Warning] = field(default_factory=list)

    def warn(self, rule: str, message: str, location: Location | None) -> None:
        if self.config.enabled(rule):
            warning = Warning(rule=rule, message=message, location=location)
            if warning not in self.warnings:
                self.warnings.append(warning)


def suggest(name: str, options) -> str:
    """The closest option, as BuildKit's suggest.Search, or ""."""
    close = difflib.get_close_matches(name, sorted(set(options)), n=1, cutoff=0.6)
    return close[0] if close else ""


# -- messages the converter reports ------------------------------------------


def undefined_var(linter: Linter, name: str, options, location: Location) -> None:
    match = suggest(name, options)
    message = f"Usage of undefined variable '${name}'"
    if match:
        message += f" (did you mean ${match}?)"
    linter.warn("UndefinedVar", message, location)


def undefined_arg_in_from(linter: Linter, name: str, options, location: Location) -> None:
    match = suggest(name, options)
    message = f"FROM argument '{name}' is not declared"
    if match:
        message += f" (did you mean {match}?)"
    linter.warn("UndefinedArgInFrom", message, location)


def invalid_default_arg_in_from(linter: Linter, base: str, location: Location) -> None:
    linter.warn(
        "InvalidDefaultArgInFrom",
        f"Default value for ARG {base} results in empty or invalid base image name",
        location,
    )


def from_platform(linter: Linter, from_: ins.From, expansion: ProcessResult, target_platform: str,
                  platform: Platform) -> None:  # fmt: skip
    """The FROM --platform rules, judged from how the flag expanded.

    RedundantTargetPlatform needs TARGETPLATFORM to be the only variable and
    the value to be exactly its value, so `${TARGETPLATFORM%/*}` or
    `$TARGETPLATFORM$X` stay quiet. A constant is allowed when the stage
    name says which platform it is for (`AS build-arm64`, `AS linux`): such
    stages are picked per platform with `FROM build-$TARGETARCH`."""
    if expansion.matched == {"TARGETPLATFORM"} and not expansion.unmatched and expansion.result == target_platform:
        linter.warn(
            "RedundantTargetPlatform",
            f"Setting platform to predefined {from_.platform} in FROM is redundant as this is the default behavior",
            from_.location,
        )
    if expansion.matched or expansion.unmatched:
        return
    if platform.os in from_.stage_name or platform.architecture in from_.stage_name:
        return
    linter.warn(
        "FromPlatformFlagConstDisallowed",
        f"FROM --platform flag should not use constant value {go_quote(expansion.result)}",
        from_.location,
    )


# Fallbacks containerd's matcher takes when an index lacks the platform
# itself (builder.registry.platforms): not a mismatch.
_COMPATIBLE = {("amd64", "386"), ("arm64", "arm")}


def base_image_platform(linter: Linter, ref: str, config: dict, platform: Platform, location: Location) -> None:
    """BuildKit's InvalidBaseImagePlatform (dockerfile2llb, 0.15+): the base
    image's config names another os/architecture than the stage's platform
    (a single-platform image, or an index entry that says otherwise), so the
    stage's binaries are not the platform's. A warning, as BuildKit's."""
    os_name, arch = str(config.get("os") or ""), str(config.get("architecture") or "")
    if not os_name or not arch:
        return
    try:
        actual = parse_platform_text(f"{os_name}/{arch}")
    except ValueError:
        actual = Platform(os=os_name, architecture=arch)
    if actual.os == platform.os and (actual.architecture == platform.architecture
                                     or (platform.architecture, actual.architecture) in _COMPATIBLE):
        return
    linter.warn(
        "InvalidBaseImagePlatform",
        f'Base image {ref} was pulled with platform "{actual.os}/{actual.architecture}", '
        f'expected "{platform.os}/{platform.architecture}" for current build',
        location,
    )


def expose_port(linter: Linter, spec: str, location: Location) -> None:
    """One EXPOSE word after expansion, split as BuildKit splits
    `[ip:][hostPort:]containerPort[/proto]`: an empty ip or host port (`:80`)
    is no mapping."""
    parts = spec.split(":")
    _, slash, proto = parts[-1].partition("/")
    if slash and proto != proto.lower():
        linter.warn("ExposeProtoCasing", f"Defined protocol '{spec}' in EXPOSE instruction should be lowercase",
                    location)  # fmt: skip
    if len(parts) > 3 or any(parts[:-1]):
        linter.warn(
            "ExposeInvalidFormat",
            f"EXPOSE instruction should not define an IP address or host-port mapping, found '{spec}'",
            location,
        )


def json_args_recommended(linter: Linter, instruction: str, location: Location) -> None:
    linter.warn(
        "JSONArgsRecommended",
        f"JSON arguments recommended for {instruction} to prevent unintended behavior related to OS signals",
        location,
    )


def workdir_relative(linter: Linter, path: str, location: Location) -> None:
    linter.warn(
        "WorkdirRelativePath",
        f'Relative workdir "{path}" can have unexpected results if the base image changes',
        location,
    )


def copy_ignored(linter: Linter, instruction: str, path: str, location: Location) -> None:
    linter.warn(
        "CopyIgnoredFile",
        f'Attempting to {instruction} file "{path}" that is excluded by .dockerignore',
        location,
    )


def secret_key(linter: Linter, instruction: str, key: str, location: Location) -> None:
    if _SECRET.search(key) and not _PUBLIC.search(key):
        linter.warn(
            "SecretsUsedInArgOrEnv",
            f'Do not use ARG or ENV instructions for sensitive data ({instruction} "{key}")',
            location,
        )


# -- rules over the text -----------------------------------------------------


def static_checks(dockerfile: Dockerfile, meta_args, stages, linter: Linter) -> None:
    path = dockerfile.path
    for line in dockerfile.empty_continuations:
        linter.warn("NoEmptyContinuation", "Empty continuation line", Location(path, line, line))
    _casing(stages, linter)
    _descriptions(dockerfile, meta_args, stages, linter)
    seen: set[str] = set()
    for arg_cmd in meta_args:
        for arg in arg_cmd.args:
            secret_key(linter, "ARG", arg.key, arg_cmd.location)
    for stage in stages:
        from_ = stage.from_
        if from_.as_keyword:
            keyword, as_word = from_.keyword, from_.as_keyword
            if (keyword.islower() and not as_word.islower()) or (keyword.isupper() and not as_word.isupper()):
                linter.warn("FromAsCasing", f"'{as_word}' and '{keyword}' keywords' casing do not match",
                            from_.location)  # fmt: skip
        if from_.stage_name_as_written and from_.stage_name_as_written != from_.stage_name:
            linter.warn("StageNameCasing", f"Stage name '{from_.stage_name_as_written}' should be lowercase",
                        from_.location)  # fmt: skip
        if stage.name:
            if stage.name in seen:
                linter.warn("DuplicateStageName",
                            f'Duplicate stage name "{stage.name}", stage names should be unique', from_.location)  # fmt: skip
            seen.add(stage.name)
            if stage.name in _RESERVED_STAGE_NAMES:
                linter.warn("ReservedStageName",
                            f'Stage name should not use the same name as reserved stage "{stage.name}"',
                            from_.location)  # fmt: skip
        last: dict[str, ins.Instruction] = {}
        for cmd in stage.commands:
            _command_checks(cmd, last, linter)


def _command_checks(cmd: ins.Instruction, last: dict, linter: Linter) -> None:
    if isinstance(cmd, (ins.Env, ins.Label)):
        if cmd.legacy:
            linter.warn(
                "LegacyKeyValueFormat",
                f'"{cmd.name} key=value" should be used instead of legacy "{cmd.name} key value" format',
                cmd.location,
            )
        if isinstance(cmd, ins.Env):
            for pair in cmd.pairs:
                secret_key(linter, "ENV", pair.key, cmd.location)
    elif isinstance(cmd, ins.Arg):
        for arg in cmd.args:
            secret_key(linter, "ARG", arg.key, cmd.location)
    elif isinstance(cmd, ins.Maintainer):
        linter.warn("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label",
                    cmd.location)  # fmt: skip
    if isinstance(cmd, (ins.Cmd, ins.Entrypoint, ins.Healthcheck)):
        kind = cmd.name
        previous = last.get(kind)
        if previous is not None:
            linter.warn(
                "MultipleInstructionsDisallowed",
                f"Multiple {kind} instructions should not be used in the same stage because only the last one will be used",
                previous.location,
            )
        last[kind] = cmd


def _casing(stages, linter: Linter) -> None:
    keywords: list[tuple[str, Location]] = []
    for stage in stages:
        keywords.append((stage.from_.keyword, stage.from_.location))
        keywords += [(cmd.keyword, cmd.location) for cmd in stage.commands]
    lower = sum(1 for k, _ in keywords if k == k.lower())
    upper = sum(1 for k, _ in keywords if k == k.upper() and k != k.lower())
    majority_lower = lower > upper
    for keyword, location in keywords:
        if majority_lower and keyword.lower() != keyword:
            casing = "lowercase"
        elif not majority_lower and keyword.upper() != keyword:
            casing = "uppercase"
        else:
            continue
        linter.warn(
            "ConsistentInstructionCasing",
            f"Command '{keyword}' should match the case of the command majority ({casing})",
            location,
        )


def description(comments, name: str) -> str:
    """The description a `# NAME text` comment above a FROM or ARG gives
    `name` (BuildKit's getComment): the first comment line that starts
    with the name and a space, without them."""
    for line in comments if name else ():
        if line.startswith(name + " "):
            return line[len(name) + 1:]
    return ""


def _descriptions(dockerfile: Dockerfile, meta_args, stages, linter: Linter) -> None:
    """InvalidDefinitionDescription: the comment right above a named FROM
    or an ARG reads as its description only when its last line starts with
    the name; any other comment there is a description gone wrong."""
    comments = {node.start: node.comments for node in dockerfile.nodes}
    defined = [(stage.from_, [stage.name] if stage.name else []) for stage in stages]
    defined += [(cmd, [arg.key for arg in cmd.args]) for cmd in meta_args]
    defined += [(cmd, [arg.key for arg in cmd.args]) for stage in stages for cmd in stage.commands
                if isinstance(cmd, ins.Arg)]  # fmt: skip
    for cmd, names in sorted(defined, key=lambda item: item[0].location.start):
        above = comments.get(cmd.location.start, ())
        if not above or not names or above[-1].split(" ")[0] in names:
            continue
        example = names[0] if len(names) == 1 else "<arg_key>"
        kind = "FROM" if isinstance(cmd, ins.From) else "ARG"
        linter.warn("InvalidDefinitionDescription",
                    f"Comment for {kind} should follow the format: `# {example} <description>`", cmd.location)
