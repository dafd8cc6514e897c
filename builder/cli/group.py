"""The `pybuild` group: `pybuild -t app .` means `pybuild build -t app .`,
the options every command has may come before the command's name, and
every error click reports is one line and exit 1."""

from __future__ import annotations

import sys

import click

from builder.cli import about, binfmt, build, check, maintenance, login, sign, store
from builder.cli.guard import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK


class DefaultGroup(click.Group):
    """`pybuild -t app .` means `pybuild build -t app .`, as docker users
    expect; and every error click reports exits 1, not click's 2."""

    # Options every command has, accepted before the command's name too:
    # `pybuild --root /tmp/pb images` is `pybuild images --root /tmp/pb`.
    LEADING = {"--root": 1, "--config": 1, "--debug": 0}

    def parse_args(self, ctx, args):
        args = self._hoist_leading_options(list(args))
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["build", *args]
        if not args and not ctx.resilient_parsing:
            args = ["--help"]
        return super().parse_args(ctx, args)

    def _hoist_leading_options(self, args: list[str]) -> list[str]:
        position = 0
        while position < len(args):
            name = args[position].split("=", 1)[0]
            if name not in self.LEADING:
                break
            position += 1 if "=" in args[position] else 1 + self.LEADING[name]
        if 0 < position < len(args) and args[position] in self.commands:
            return [args[position], *args[:position], *args[position + 1:]]
        return args

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """`extra` goes to click's context: builder.entry passes `obj`, the
        Invocation a build memoises under."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            # One line, as for every other error (docs/cli.md, exit codes);
            # click's own show() adds a usage block and a "Try" line.
            click.echo(f"ERROR: {exc.format_message()}", err=True)
            sys.exit(EXIT_ERROR)
        except click.Abort:  # click's KeyboardInterrupt outside a build
            click.echo("ERROR: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=about.print_version,
              help="Show the version and exit.")
def main():
    """pybuild: build OCI images from Dockerfiles, without a daemon.

    Without a command, `build` is meant: `pybuild -t app .` is
    `pybuild build -t app .`.

    \b
    Examples:
      pybuild -t app .
      pybuild build -f Dockerfile.prod -t registry.local/app:1 --push .
      pybuild -o type=oci,dest=app.tar .
      pybuild check .
      pybuild info
    """


# Each module names its commands; `pybuild --help` lists them by name.
for _module in (build, check, about, store, maintenance, login, binfmt, sign):
    for _command in _module.COMMANDS:
        main.add_command(_command)
