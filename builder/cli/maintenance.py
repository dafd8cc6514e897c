"""Keeping a root healthy: `du`, `prune`, `doctor`; `unshare` for a rootless one."""

from __future__ import annotations

import sys

import click

from builder.cli.guard import EXIT_ERROR
from builder.cli.shared import human, root_options, with_worker


@click.command()
@root_options
def du(root, config_file, debug):
    """Show the disk space of the root, by kind (see `pybuild prune`).

    \b
    Example:
      pybuild du --root /var/lib/pybuild
    """
    from builder.root.gc import disk_usage

    def show(worker):
        usage = disk_usage(worker)
        click.echo(f"{'KIND':<24} {'COUNT':>7} {'SIZE':>10}")
        for kind, count, size in usage.rows():
            click.echo(f"{kind:<24} {count:>7} {human(size):>10}")
        click.echo(f"{'total':<24} {'':>7} {human(usage.total):>10}")

    with_worker(root, config_file, debug, show)


@click.command()
@click.option("-a", "--all", "everything", is_flag=True,
              help="Remove the whole build cache and the cache mounts (named images stay).")
@click.option("--keep-storage", help="Keep at most this much build cache (e.g. 10GB), least recently used goes.")
@click.option("--filter", "filters", multiple=True, help="until=DURATION: remove cache unused for that long.")
@root_options
def prune(everything, keep_storage, filters, root, config_file, debug):
    """Remove build cache: unreferenced snapshots and blobs, and more with options.

    \b
    Examples:
      pybuild prune
      pybuild prune --filter until=24h --keep-storage 5GB
      pybuild prune --all
    """
    from builder.root.gc import GCError, parse_duration, parse_size, prune as run_prune

    def collect(worker):
        until = None
        for item in filters:
            key, _, value = item.partition("=")
            if key != "until" or not value:
                raise GCError(f"invalid --filter {item!r}: only until=DURATION is supported")
            until = parse_duration(value)
        keep = parse_size(keep_storage) if keep_storage else None
        done = run_prune(worker, all=everything, keep_storage=keep, until=until)
        click.echo(f"Total reclaimed space: {human(done.freed)} ({done.results} cache records, "
                   f"{done.snapshots} snapshots, {done.blobs} blobs, {done.cache_mounts} cache mounts)")

    with_worker(root, config_file, debug, collect)


@click.command()
@click.option("--fix", is_flag=True, help="Remove orphans, corrupt blobs and stale entries.")
@root_options
def doctor(fix, root, config_file, debug):
    """Check the root: blobs match their digests, cached results and images
    are complete, no orphan snapshot or stray temp file. Exit 1 on a problem
    left unfixed. Run it while no build uses the root.

    \b
    Example:
      pybuild doctor --fix
    """
    from builder.root.doctor import check

    def examine(worker):
        problems = check(worker, fix=fix)
        for problem in problems:
            click.echo(str(problem))
        unfixed = [p for p in problems if not p.fixed]
        click.echo(f"{len(problems)} problem(s), {len(problems) - len(unfixed)} fixed" if problems else "ok")
        return unfixed

    if with_worker(root, config_file, debug, examine):
        sys.exit(EXIT_ERROR)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def unshare(command):
    """Run COMMAND (default: $SHELL) as root of the user namespace a
    rootless pybuild builds in, as `podman unshare` does. Files a rootless
    build made belong to the user's subordinate ids outside it: this is how
    to remove or inspect them. As root, runs COMMAND as it is.

    \b
    Examples:
      pybuild unshare rm -rf ~/.local/share/pybuild
      pybuild unshare ls -ln ~/.local/share/pybuild/snapshots
    """
    import os

    from runtime import userns

    if userns.missing():  # builder.entry tried to enter it already
        click.echo(f"ERROR: {userns.missing()}", err=True)
        sys.exit(EXIT_ERROR)
    argv = list(command) or [os.environ.get("SHELL") or "/bin/sh"]
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        click.echo(f"ERROR: {argv[0]}: {exc.strerror}", err=True)
        sys.exit(127 if exc.errno == 2 else 126)


COMMANDS = (du, prune, doctor, unshare)
