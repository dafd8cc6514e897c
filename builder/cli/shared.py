"""What the commands share: the options every command has, the settings
they resolve (flag > environment > config file), KEY=VALUE flags, sizes as
people read them, and how the console script was started."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click


@dataclass(frozen=True)
class Invocation:
    """How the console script (builder.entry) was started, passed as the
    click context's `obj`: a build memoises its result under exactly this
    command line (builder.root.memo). None when the CLI runs some other way
    (`python -m builder.cli`, tests), and then nothing is memoised."""

    argv: tuple[str, ...]
    started_ns: int  # what the build read before it began observing (the config file) was read after this


root_option = click.option("--root", type=click.Path(file_okay=False),
                           help="State directory [env PYBUILD_ROOT; default /var/lib/pybuild as root, "
                                "$XDG_DATA_HOME/pybuild (~/.local/share/pybuild) otherwise].")
config_option = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                             help="Configuration file [env PYBUILD_CONFIG; default "
                                  "$XDG_CONFIG_HOME/pybuild/config.toml, /etc/pybuild/config.toml].")
debug_option = click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
insecure_option = click.option("--insecure-registry", "insecure", multiple=True,
                               help="Registry reached over plain HTTP.")


def root_options(command):
    """--root, --config and --debug: what every command that opens the root takes."""
    return root_option(config_option(debug_option(command)))


def load_settings(config_file=None, *, root=None, isolation=None, progress=None, insecure=()):
    """flag > environment > config file; raises ConfigError."""
    from builder.config import load_settings as load

    return load(config_file, os.environ, root=root, isolation=isolation, progress=progress,
                insecure=tuple(insecure))


def root_dir(settings) -> Path:
    from builder.config import default_root

    return settings.root or default_root()


def key_values(values, what: str) -> dict[str, str]:
    """`KEY=VALUE` flags as a dict; `--build-arg KEY` alone takes KEY from
    the environment, as docker does (and is left out when it is unset)."""
    result = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not key:
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint=what)
        if not sep:
            if what == "--build-arg":
                if key in os.environ:
                    result[key] = os.environ[key]
                continue
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint=what)
        result[key] = rest
    return result


def human(size: float) -> str:
    """Bytes as docker prints them: 512B, 1.5kB, 20.3MB, 1024.0GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{size}"


def with_worker(root, config_file, debug: bool, fn):
    """Run `fn(worker)` on the root the flags name, guarded as every command
    is (builder.cli.guard.run_guarded); the worker is closed after."""
    from builder.cli.guard import run_guarded
    from builder.root.worker import Worker

    def action():
        settings = load_settings(config_file, root=root)
        worker = Worker.open(root_dir(settings), "builtin")
        try:
            return fn(worker)
        finally:
            worker.close()

    return run_guarded(debug, action)
