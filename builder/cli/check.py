"""`pybuild check` (and `pybuild build --check`): BuildKit's build checks."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from builder.cli.guard import EXIT_ERROR, run_guarded
from builder.cli.shared import debug_option, key_values


@click.command()
@click.argument("context", default=".")
@click.option("-f", "--file", "dockerfile", help="Name of the Dockerfile (default: CONTEXT/Dockerfile; - for stdin).")
@click.option("--build-arg", "build_args", multiple=True, help="Set a build-time variable (KEY=VALUE or KEY).")
@click.option("--target", help="Check only this stage and what it needs.")
@click.option("--strict", is_flag=True, help="Fail (exit 1) when there is any warning.")
@debug_option
def check(context, dockerfile, build_args, target, strict, debug):
    """Check a Dockerfile against BuildKit's build-check rules.

    Prints `file:line: [Rule] message` per warning. Exits 0 when the
    Dockerfile is valid (even with warnings), 1 when it cannot be parsed,
    and 1 on warnings with --strict or a `# check=error=true` directive.

    \b
    Examples:
      pybuild check
      pybuild check -f Dockerfile.prod --strict .
      pybuild check --build-arg BASE=alpine --target runtime .
    """
    warnings, config = run_checks(context, dockerfile, build_args, target, debug)
    if warnings and (strict or config.error):
        sys.exit(EXIT_ERROR)


def run_checks(context, dockerfile, build_args, target, debug):
    """Print the build checks' warnings and summary; returns the warnings
    and the Dockerfile's check config. A Dockerfile that cannot be parsed or
    converted ends the command (exit 1)."""
    from builder.context.dockerfile import dockerignore_patterns, read_dockerfile_at
    from frontend.check import check as run_check
    from frontend.errors import DockerfileError
    from frontend.lint import CheckConfig
    from frontend.parser import parse, read_dockerfile

    args = key_values(build_args, "--build-arg")
    from_stdin = dockerfile == "-"
    path = Path(context) / "Dockerfile" if from_stdin or not dockerfile else Path(dockerfile)
    shown = str(dockerfile) if dockerfile and not from_stdin else "Dockerfile"
    text = None

    def action():
        nonlocal text
        text = read_dockerfile(sys.stdin.buffer) if from_stdin else read_dockerfile_at(path)
        excludes = dockerignore_patterns(Path(context), path)
        try:
            warnings = run_check(text, shown, build_args=args, target=target, excludes=excludes)
        except DockerfileError as err:
            for warning in err.warnings:  # found before the error: shown with it
                click.echo(str(warning))
            raise
        return warnings, CheckConfig.from_dockerfile(parse(text, shown))

    warnings, config = run_guarded(debug, action, lambda: text)
    for warning in warnings:
        click.echo(str(warning))
    if warnings:
        plural = "warning has" if len(warnings) == 1 else "warnings have"
        click.echo(f"Check complete, {len(warnings)} {plural} been found!")
    else:
        click.echo("Check complete, no warnings found.")
    return warnings, config


COMMANDS = (check,)
