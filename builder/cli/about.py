"""What pybuild and this host are: `version`, `info`, `completion`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from builder.cli.guard import run_guarded
from builder.cli.shared import human, load_settings, root_dir, root_options


@click.command()
def version():
    """Show the pybuild version.

    \b
    Example:
      pybuild version
    """
    click.echo(f"pybuild {version_string()}")
    click.echo(f"python {sys.version.split()[0]}")


@click.command()
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output format.")
@root_options
def info(output_format, root, config_file, debug):
    """Show the root directory, its size, and what this host supports.

    \b
    Examples:
      pybuild info
      pybuild --root /tmp/pb info --format json
    """

    def gather():
        settings = load_settings(config_file, root=root)
        return _host_info(settings)

    facts = run_guarded(debug, gather)
    if output_format == "json":
        click.echo(json.dumps(facts, indent=2, sort_keys=True))
        return
    for key, value in facts.items():
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        click.echo(f"{key + ':':<22} {value}")


def _host_info(settings) -> dict:
    import shutil

    from builder.root.gc import tree_size
    from builder.root.worker import Worker
    from runtime.binfmt import buildable_platforms
    from runtime.executors import available_executors, default_isolation
    from runtime.snapshotters import choose

    root = root_dir(settings)
    worker = Worker.open(root, settings.isolation)
    try:
        choice = choose(worker.snapshots.root)
    finally:
        worker.close()
    return {
        "version": version_string(),
        "root": str(root),
        "config file": str(settings.config.path) if settings.config.path else "(none)",
        "store size": human(tree_size(root)),  # each inode once: snapshots hardlink files
        "isolation": settings.isolation or default_isolation(),
        "isolations available": sorted(available_executors()),
        "snapshotter": choice.name,
        "snapshotter reason": choice.reason,
        "rootless": _rootless(),
        "overlayfs in kernel": _has_overlayfs(),
        "cgroups": _cgroup_version(),
        "runc": shutil.which("runc") or "not found",
        "crun": shutil.which("crun") or "not found",
        "insecure registries": list(settings.insecure_registries),
        "platforms": buildable_platforms(),  # native, then emulated (`pybuild binfmt`)
    }


def _rootless() -> str:
    from runtime.userns import host_ids, rootless

    if not rootless():
        return "no"
    # Reported after Worker.open, so the namespace was entered or that failed.
    return f"yes: uid {host_ids()[0]} is root of its own user namespace"


def print_version(ctx, _param, value) -> None:
    """--version, as click's version_option prints it, but asking for the
    version only when it is wanted and never failing (version_string)."""
    if value and not ctx.resilient_parsing:
        click.echo(f"pybuild, version {version_string()}")
        ctx.exit()


def version_string() -> str:
    """The installed distribution's version; run from a checkout on
    PYTHONPATH (as the rootless tests do) there is none to ask."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("pybuild")
    except PackageNotFoundError:  # run from a checkout on PYTHONPATH
        return "unknown (not installed)"


def _has_overlayfs() -> bool:
    try:
        return any(line.split()[-1] == "overlay" for line in Path("/proc/filesystems").read_text().splitlines())
    except OSError:
        return False


def _cgroup_version() -> str:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2"
    if Path("/sys/fs/cgroup").is_dir():
        return "v1"
    return "none"


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx, shell):
    """Print the shell completion script for SHELL.

    \b
    Examples:
      eval "$(pybuild completion bash)"            # in ~/.bashrc
      pybuild completion zsh > "${fpath[1]}/_pybuild"
      pybuild completion fish > ~/.config/fish/completions/pybuild.fish
    """
    from click.shell_completion import get_completion_class

    group = ctx.find_root().command  # the `pybuild` group this command belongs to
    completer = get_completion_class(shell)(group, {}, "pybuild", "_PYBUILD_COMPLETE")
    click.echo(completer.source())


COMMANDS = (version, info, completion)
