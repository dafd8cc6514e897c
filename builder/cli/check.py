"""`pybuild check` (and `pybuild build --check` / `--call check`):
BuildKit's build checks, every warning and every error of the file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from builder.cli import gojson
from builder.cli.call import location, read_input, source_data
from builder.cli.guard import EXIT_ERROR, report, run_guarded
from builder.cli.shared import debug_option, key_values


@click.command()
@click.argument("context", default=".")
@click.option("-f", "--file", "dockerfile", help="Name of the Dockerfile (default: CONTEXT/Dockerfile; - for stdin).")
@click.option("--build-arg", "build_args", multiple=True, help="Set a build-time variable (KEY=VALUE or KEY).")
@click.option("--target", help="Check only this stage and what it needs.")
@click.option("--strict", is_flag=True, help="Fail (exit 1) when there is any warning.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: BuildKit's lint result, as `docker buildx build --call check,format=json` prints it.")
@debug_option
def check(context, dockerfile, build_args, target, strict, fmt, debug):
    """Check a Dockerfile against BuildKit's build-check rules.

    Prints `file:line: [Rule] message` per warning and `ERROR:
    file:line: message` per error (the check goes on past errors, so all
    of them are listed). Exits 0 when the Dockerfile is valid (even with
    warnings), 1 when it has errors, and 1 on warnings with --strict or a
    `# check=error=true` directive.

    \b
    Examples:
      pybuild check
      pybuild check -f Dockerfile.prod --strict .
      pybuild check --build-arg BASE=alpine --target runtime .
      pybuild check --format json .
    """
    found, config = run_checks(context, dockerfile, build_args, target, debug, fmt)
    if found.errors or (found.warnings and (strict or config.error)):
        sys.exit(EXIT_ERROR)


def run_checks(context, dockerfile, build_args, target, debug, fmt="text"):
    """Print the checks' warnings and errors and a summary (or the JSON);
    returns the CheckReport and the Dockerfile's check config. A Dockerfile
    that cannot be read ends the command (exit 1)."""
    from builder.context.dockerfile import dockerignore_patterns
    from frontend.check import check_all
    from frontend.lint import CheckConfig

    args = key_values(build_args, "--build-arg")

    def action():
        text, shown, path = read_input(context, dockerfile)
        excludes = dockerignore_patterns(Path(context), path)
        return text, shown, check_all(text, shown, build_args=args, target=target, excludes=excludes)

    text, shown, found = run_guarded(debug, action)
    if fmt == "json":
        click.echo(gojson.dumps(_lint_json(found, shown, text)))
    else:
        _print_text(found, text)
    return found, CheckConfig.parse(_check_directive(text))


def _print_text(found, text: str) -> None:
    from builder.errors import DefinitionError

    for warning in found.warnings:
        click.echo(str(warning))
    for error in found.errors:
        report(DefinitionError(error), text)
    counts = [_count(len(found.errors), "error"), _count(len(found.warnings), "warning")]
    listed = " and ".join(count for count in counts if count)
    if found.stopped:
        click.echo(f"Check stopped after {listed} (the rest of the file is not checked)")
    elif listed:
        verb = "has" if len(found.errors) + len(found.warnings) == 1 else "have"
        click.echo(f"Check complete, {listed} {verb} been found!")
    else:
        click.echo("Check complete, no warnings found.")


def _count(number: int, noun: str) -> str:
    return "" if not number else f"{number} {noun}" + ("s" if number > 1 else "")


def _check_directive(text: str) -> str | None:
    # The directive even when the file does not parse: its errors are
    # reported, and `check=error=true` still decides the status.
    from frontend.errors import DockerfileError
    from frontend.parser import parse

    try:
        return parse(text).directive("check")
    except DockerfileError:
        return None


def _lint_json(found, shown: str, text: str) -> dict:
    """BuildKit's lint.LintResults. `buildError` is the first error, as
    BuildKit has only one; `buildErrors`, pybuild's own, lists them all.
    A source has no `definition` (BuildKit's LLB of the Dockerfile's
    context, which pybuild does not make)."""
    from frontend.lint import RULES, rule_url

    warnings = []
    for warning in found.warnings:
        fields = {"ruleName": warning.rule, "description": RULES.get(warning.rule, ""),
                  "url": rule_url(warning.rule), "detail": warning.message}  # fmt: skip
        warnings.append({**{k: v for k, v in fields.items() if v}, "location": location(warning.location)})
    # Go writes the nil slice of a clean file as null.
    body = {"warnings": warnings or None,
            "sources": [{"filename": shown, "data": source_data(text), "language": "Dockerfile"}]}  # fmt: skip
    errors = [{"message": error.message, "location": location(error.location, merged=True)}
              for error in found.errors]  # fmt: skip
    if errors:
        body["buildError"] = errors[0]
        body["buildErrors"] = errors
    return body


COMMANDS = (check,)
