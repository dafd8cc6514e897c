"""`pybuild check`: BuildKit's build checks over a whole Dockerfile, as
`docker build --check` runs them. The rules live in frontend.lint and run
while the converter dispatches the stages, so this entry point runs it.

`check` stops at the first error, as BuildKit's lint subrequest does;
`check_all` goes on past it and reports every error of the file (see its
docstring for how)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from frontend.convert import lint_dockerfile
from frontend.definition import ImageResolver, ResolvedImage, Warning
from frontend.errors import DockerfileError, Location
from frontend.ops import Platform
from frontend.parser import parse


def no_image(ref: str, platform: Platform) -> ResolvedImage:
    # Without a registry the base image is assumed to set nothing.
    return ResolvedImage(ref=ref, digest="sha256:" + "0" * 64, config={"config": {}})


def check(
    dockerfile: str,
    path: str = "Dockerfile",
    *,
    build_args: Mapping[str, str] = {},
    target: str | None = None,
    excludes: tuple[str, ...] = (),
    platform: Platform = Platform(),
    resolve_image: ImageResolver | None = None,
) -> list[Warning]:
    """Run the build checks over every stage (or the target's), as
    `docker build --check` does. Errors that would stop a build are raised
    as DockerfileError. Without `resolve_image`, base images are assumed to
    have an empty config, so variables they define read as undefined."""
    return lint_dockerfile(
        dockerfile,
        path=path,
        build_args=build_args,
        target=target,
        excludes=excludes,
        platform=platform,
        resolve_image=resolve_image or no_image,
    )


# Each error costs a conversion of the whole file: a text that is no
# Dockerfile (a README given to -f) would take minutes, one error a line.
MAX_ERRORS = 100


@dataclass(frozen=True)
class CheckReport:
    """Every warning and every error of a Dockerfile, each in line order;
    `stopped`: MAX_ERRORS were found and the rest of the file is unchecked."""

    warnings: tuple[Warning, ...]
    errors: tuple[DockerfileError, ...]
    stopped: bool = False


def check_all(dockerfile: str, path: str = "Dockerfile", **options) -> CheckReport:
    """`check`, going on past errors: each error's instruction is taken out
    of the text (its lines left blank, so every later line keeps its
    number; a FROM becomes `FROM scratch` keeping its stage name, so the
    stages after it and the references to it stay as written) and the
    checks run again, until a run ends without an error. Warnings of a run
    that the next run cannot see again (on lines taken out) are kept.

    BuildKit reports the first error only; a file with three mistakes
    would take three rounds of fix-and-rerun to find them. The check
    stops at MAX_ERRORS."""
    warnings: list[Warning] = []
    errors: list[DockerfileError] = []
    text = dockerfile
    changed: set[int] = set()
    stopped = False
    while True:
        try:
            warnings += check(text, path, **options)
            break
        except DockerfileError as err:
            if errors and not _has_instructions(text):
                # Every instruction is out: what remains to say (no
                # instructions, no stages) is about what check_all did.
                new_text = None
            else:
                errors.append(err)
                new_text = None if err.location is None else _without(text, err.location, changed)
            stopped = new_text not in (None, text) and len(errors) == MAX_ERRORS
            if new_text in (None, text) or stopped:
                warnings += err.warnings
                break
            warnings += [w for w in err.warnings if w.location and w.location.start in changed]
            text = new_text
    unique = list(dict.fromkeys(warnings))
    return CheckReport(
        warnings=tuple(sorted(unique, key=lambda w: w.location.start if w.location else 0)),
        errors=tuple(sorted(errors, key=lambda e: e.location.start if e.location else 0)),
        stopped=stopped,
    )


def _has_instructions(text: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.split("\n"))


def _without(text: str, location: Location, changed: set[int]) -> str | None:
    """`text` with the instruction at `location` taken out, or None when
    nothing is left to take (the error is about the file as a whole)."""
    lines = text.split("\n")
    start, end = location.start, min(location.end, len(lines))
    if start < 1 or start > len(lines) or not any(lines[n - 1].strip() for n in range(start, end + 1)):
        return None
    replacement = _stand_in(text, start) if start not in changed else None
    for number in range(start, end + 1):
        lines[number - 1] = ""
        changed.add(number)
    if replacement:
        lines[start - 1] = replacement
    return "\n".join(lines)


def _stand_in(text: str, line: int) -> str | None:
    """For a FROM at `line`: the same keyword and stage name over scratch.
    A stage taken out would move its instructions into the stage above and
    turn every `--from` naming it into an image reference."""
    try:
        nodes = parse(text).nodes
    except DockerfileError:
        return None
    node = next((n for n in nodes if n.start == line), None)
    if node is None or node.command != "from":
        return None
    args = node.args
    if len(args) == 3 and args[1].lower() == "as":
        return f"{node.keyword} scratch {args[1]} {args[2]}"
    return f"{node.keyword} scratch"
