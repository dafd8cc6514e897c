"""The `pybuild` command. The only module that prints, exits, or catches
errors broadly: everything else raises one of the packages' base errors.

Exit status: 0 success; 1 a build error, a bad Dockerfile, bad flags or
configuration (click's usage errors too, which click itself ends with 2);
130 interrupted by SIGINT (143 by SIGTERM), after cleaning up.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import click

from builder.errors import PybuildError
from cache.errors import CacheError
from frontend.errors import DockerfileError, FrontendError, Location
from frontend.parser import read_dockerfile
from runtime.errors import ExecFailed, RuntimeFailure

USER_ERRORS = (PybuildError, FrontendError, CacheError, RuntimeFailure)
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
PROGRESS_MODES = ["auto", "plain", "tty", "quiet", "rawjson"]


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


# -- errors and signals -------------------------------------------------------------


def _report_error(exc: BaseException, dockerfile_text: str | None = None) -> None:
    click.echo(f"ERROR: {exc}", err=True)
    # A Dockerfile error, or a step that failed (builder.build sets the
    # failed step's location): the instruction's lines, as BuildKit shows them.
    location = getattr(exc, "location", None)
    if isinstance(location, Location) and dockerfile_text:
        if not isinstance(exc, DockerfileError):
            click.echo(f"at {location}:", err=True)  # a DockerfileError's message starts with it
        lines = dockerfile_text.splitlines()
        first = max(1, location.start - 2)
        last = min(len(lines), location.end + 2)
        click.echo("", err=True)
        for number in range(first, last + 1):
            marker = ">>>" if location.start <= number <= location.end else "   "
            click.echo(f" {marker} {number:>4} | {lines[number - 1]}", err=True)
    if isinstance(exc, ExecFailed) and exc.tail:
        click.echo("last output:", err=True)
        for line in exc.tail.rstrip("\n").splitlines():
            click.echo(f"  {line}", err=True)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so that every `finally`
    on the way out (the solver's cancel, unmounts, temp dirs) runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _SignalGuard:
    """The first SIGINT/SIGTERM interrupts the build; a second one while
    it cleans up is refused with a note (leaving mounts behind would be
    worse); a third exits at once."""

    def __init__(self):
        self.count = 0
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False

    def _handle(self, signum, frame):
        self.count += 1
        if self.count == 1:
            raise Interrupted(signum)
        if self.count == 2:
            os.write(2, b"\ncleaning up; interrupt again to quit at once (mounts may stay behind)\n")
            return
        os._exit(128 + signum)


def run_guarded(debug: bool, action, dockerfile_text=None):
    """Run `action`, turning the packages' errors into one line and exit 1.
    `dockerfile_text`: the text, or a function returning it, to show the
    lines around a Dockerfile error."""
    try:
        return action()
    except KeyboardInterrupt as exc:
        click.echo("ERROR: interrupted", err=True)
        sys.exit(128 + exc.signum if isinstance(exc, Interrupted) else EXIT_INTERRUPTED)
    except USER_ERRORS as exc:
        if debug:
            raise
        _report_error(exc, dockerfile_text() if callable(dockerfile_text) else dockerfile_text)
        sys.exit(EXIT_ERROR)
    except OSError as exc:
        if debug:
            raise
        click.echo(f"ERROR: {exc}", err=True)
        sys.exit(EXIT_ERROR)


# -- shared options -------------------------------------------------------------------


root_option = click.option("--root", type=click.Path(file_okay=False),
                           help="State directory [env PYBUILD_ROOT; default /var/lib/pybuild as root].")
config_option = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                             help="Configuration file [env PYBUILD_CONFIG; default "
                                  "$XDG_CONFIG_HOME/pybuild/config.toml, /etc/pybuild/config.toml].")
debug_option = click.option("--debug", is_flag=True, help="Show tracebacks of errors.")


def _settings(config_file=None, *, root=None, isolation=None, progress=None, insecure=()):
    """flag > environment > config file; raises ConfigError."""
    from builder.config import load_settings

    return load_settings(config_file, os.environ, root=root, isolation=isolation, progress=progress,
                         insecure=tuple(insecure))


def _root_dir(settings) -> Path:
    from builder.root.worker import default_root

    return settings.root or default_root()


def _key_values(values, what: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not key:
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint=what)
        if not sep:
            if what == "--build-arg":
                if key in os.environ:  # docker: `--build-arg K` takes K from the environment
                    result[key] = os.environ[key]
                continue
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint=what)
        result[key] = rest
    return result


def _annotations(values) -> dict[str, str]:
    """`KEY=VALUE` or `manifest:KEY=VALUE` (buildx's default target for an
    image output); other targets are set with -o annotation-index.KEY=..."""
    plain = {}
    for key, value in _key_values(values, "--annotation").items():
        kind, sep, name = key.partition(":")
        if sep and kind not in ("manifest",):
            raise click.BadParameter(f"{key!r}: only manifest annotations are set with --annotation; "
                                     "use -o type=...,annotation-index.KEY=VALUE for the index",
                                     param_hint="--annotation")
        plain[name if sep else key] = value
    return plain


# -- the group ------------------------------------------------------------------------


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pybuild", prog_name="pybuild")
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


# -- build ----------------------------------------------------------------------------


@main.command()
@click.argument("context", default=".")
@click.option("-f", "--file", "dockerfile", help="Name of the Dockerfile (default: CONTEXT/Dockerfile; - for stdin).")
@click.option("-t", "--tag", "tags", multiple=True, help="Name and optionally a tag (name:tag). Repeatable.")
@click.option("--build-arg", "build_args", multiple=True, help="Set a build-time variable (KEY=VALUE or KEY).")
@click.option("--target", help="Set the target build stage.")
@click.option("--platform", help="Target platform (os/arch[/variant]).")
@click.option("-o", "--output", "outputs", multiple=True,
              help="Output destination (type=image|registry|oci|docker|local|tar,dest=...,...). Repeatable.")
@click.option("--push", is_flag=True, help="Push each tag to its registry (type=image,push=true).")
@click.option("--load", is_flag=True, help="Store the image in the local store (the default without -o).")
@click.option("--no-cache", is_flag=True, help="Do not use the cache.")
@click.option("--no-cache-filter", "no_cache_filter", multiple=True,
              help="Run these stages again without the cache (STAGE[,STAGE]).")
@click.option("--explain", is_flag=True, help="Say why each step that ran missed the cache.")
@click.option("--cache-to", "cache_to", multiple=True,
              help="Export the build cache (type=registry,ref=REF[,mode=min|max][,cache-mounts=true] | "
                   "type=local,dest=DIR | type=inline).")
@click.option("--cache-from", "cache_from", multiple=True,
              help="Import a build cache (type=registry,ref=REF | type=local,src=DIR | IMAGE).")
@click.option("--pull", is_flag=True, help="Always resolve base images from their registry.")
@click.option("--secret", "secrets", multiple=True, help="Secret for RUN --mount=type=secret (id=ID,src=FILE|env=VAR).")
@click.option("--ssh", multiple=True, help="SSH agent socket for RUN --mount=type=ssh (default|ID=PATH).")
@click.option("-m", "--memory", help="Memory limit of each RUN (512m, 1g); no swap beyond it.")
@click.option("--cpus", help="CPUs each RUN may use (1.5).")
@click.option("--cpu-quota", type=int, help="CPU time of each RUN per --cpu-period, in microseconds.")
@click.option("--cpu-period", type=int, help="CFS period for --cpu-quota, in microseconds (default 100000).")
@click.option("--pids-limit", type=int, help="Most processes each RUN may have at once.")
@click.option("--ulimit", "ulimits", multiple=True, help="Resource limit of RUN processes (nofile=1024:2048). Repeatable.")
@click.option("--network", default="default", show_default=True, type=click.Choice(["default", "host", "none"]),
              help="Networking mode for RUN instructions.")
@click.option("--label", "labels", multiple=True, help="Set metadata on the image (KEY=VALUE). Repeatable.")
@click.option("--annotation", "annotations", multiple=True,
              help="Add an annotation to the image manifest (KEY=VALUE or manifest:KEY=VALUE). Repeatable.")
@click.option("--squash", is_flag=True, help="Merge the new layers of the built stage into one layer.")
@click.option("--build-context", "build_contexts", multiple=True,
              help="Additional named context (NAME=DIR, NAME=docker-image://REF or "
                   "NAME=oci-layout://PATH[:TAG][@DIGEST]), used by FROM NAME, "
                   "COPY --from=NAME and RUN --mount=from=NAME. Repeatable.")
@click.option("--add-host", "add_hosts", multiple=True, help="Add a line to /etc/hosts of each RUN (HOST:IP). Repeatable.")
@click.option("--check", "check_only", is_flag=True,
              help="Run the build checks instead of building (as `pybuild check`; exit 1 on warnings).")
@click.option("--isolation", type=click.Choice(["builtin", "oci"]),
              help="How RUN steps are isolated [config: isolation; default oci when runc/crun exists].")
@click.option("--insecure-registry", "insecure", multiple=True,
              help="Registry reached over plain HTTP (HOST[:PORT]). Repeatable.")
@click.option("--progress", type=click.Choice(PROGRESS_MODES),
              help="Progress output [env PYBUILD_PROGRESS; default auto: tty on a terminal, else plain].")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID (on stdout).")
@click.option("--iidfile", type=click.Path(dir_okay=False), help="Write the image ID to this file.")
@click.option("--metadata-file", type=click.Path(dir_okay=False), help="Write build metadata (JSON) to this file.")
@root_option
@config_option
@debug_option
def build(context, dockerfile, tags, build_args, target, platform, outputs, push, load, no_cache, no_cache_filter,
          explain, cache_to, cache_from, pull, secrets,
          ssh, memory, cpus, cpu_quota, cpu_period, pids_limit, ulimits, network, labels, annotations, squash,
          build_contexts, add_hosts, check_only, isolation, insecure, progress, quiet, iidfile, metadata_file, root,
          config_file, debug):
    """Build an image from a Dockerfile and a context.

    CONTEXT is a directory (default .), `-` for a tar archive or a
    Dockerfile on stdin, a git URL (https://host/repo.git#ref:subdir,
    git@host:repo.git) or the URL of a tar archive.

    \b
    Examples:
      pybuild -t app .
      pybuild -t app --build-arg VERSION=1.2 --target runtime .
      pybuild -o type=docker,dest=app.tar -t app .
      pybuild -q -t app - < context.tar
      pybuild -t app https://github.com/org/repo.git#main:docker
      pybuild --progress=plain --metadata-file meta.json -t app .
      pybuild --build-context src=../src --build-context base=docker-image://alpine:3 -t app .
      pybuild --check .
    """
    from builder.context.inputs import prepare_context

    if dockerfile == "-" and context == "-":
        raise click.UsageError("can't use stdin for both the build context and the Dockerfile")
    if check_only:
        # docker build --check: the frontend's lint subrequest, whose
        # status code is 1 as soon as there is a warning.
        warnings, _ = _checks(context, dockerfile, build_args, target, debug)
        if warnings:
            sys.exit(EXIT_ERROR)
        return
    args = _key_values(build_args, "--build-arg")
    label_map = _key_values(labels, "--label")
    annotation_map = _annotations(annotations)
    settings = run_guarded(debug, lambda: _settings(config_file, root=root, isolation=isolation, progress=progress,
                                                    insecure=insecure))
    stdin_text = run_guarded(debug, lambda: read_dockerfile(sys.stdin.buffer)) if dockerfile == "-" else None
    extra = {key: value for key, value in (("memory", memory), ("cpus", cpus), ("cpu_quota", cpu_quota),
                                           ("cpu_period", cpu_period), ("pids_limit", pids_limit),
                                           ("ulimits", ulimits)) if value}
    if annotation_map:
        extra["annotations"] = annotation_map
    if squash:
        extra["squash"] = True
    if build_contexts:
        extra["build_contexts"] = build_contexts
    if add_hosts:
        extra["add_hosts"] = add_hosts

    def action():
        from builder.root import memo
        from builder.build import build as run_build
        from builder.solver.progress import make_reporter

        with prepare_context(context, root=_root_dir(settings), stdin=sys.stdin.buffer) as prepared:
            dockerfile_path, dockerfile_text = _dockerfile_for(prepared, dockerfile, stdin_text)
            state["dockerfile_text"] = dockerfile_text
            reporter = make_reporter("quiet" if quiet else settings.progress)
            memoisable = (memo.ARGV is not None and not prepared.is_remote and stdin_text is None
                          and not (outputs or push or no_cache or no_cache_filter or explain or cache_to
                                   or cache_from or pull or metadata_file))
            observer = memo.Observer() if memoisable else None
            if observer is not None:
                reporter = memo.RecordingReporter(reporter)
                observer.look_file(prepared.directory)
                observer.look_file(dockerfile_path or prepared.directory / "Dockerfile")
                observer.look_build_contexts(build_contexts)
                if settings.config.path is not None:
                    observer.look_file(settings.config.path, read_ns=observer.started_ns)  # read at the start
            try:
                result = run_build(
                    prepared.directory, dockerfile=dockerfile_path, dockerfile_text=dockerfile_text, tags=tags,
                    build_args=args, target=target, platform=platform, outputs=outputs, push=push,
                    root=settings.root, isolation=settings.isolation,
                    network="host" if network == "default" else network, no_cache=no_cache, pull=pull,
                    no_cache_filter=no_cache_filter, explain=explain, cache_to=cache_to, cache_from=cache_from,
                    secrets=secrets, ssh=ssh, registry_hosts=settings.registry_hosts,
                    gc_policy=settings.config.gc_policy, size_limits=settings.config.limits,
                    labels=label_map, reporter=reporter, observer=observer, **extra)
                _write_result_files(result, iidfile, metadata_file)
                if not quiet:
                    memo.announce(reporter, result.tags, result.image_id, result.duration)
                if observer is not None:
                    memo.record(_root_dir(settings), memo.ARGV, observer, progress=settings.progress.value,
                                quiet=quiet, iidfile=iidfile, image_id=result.image_id,
                                manifest=result.manifest_digest, tags=result.tags, warnings=reporter.warnings,
                                config_path=str(settings.config.path) if settings.config.path else None,
                                secrets=secrets, ssh=ssh, debug=debug)
            finally:
                reporter.close()
        if quiet:
            click.echo(result.image_id)

    state = {"dockerfile_text": None}  # for the lines shown around a Dockerfile error
    with _SignalGuard():
        run_guarded(debug, action, lambda: state["dockerfile_text"])


def _dockerfile_for(prepared, dockerfile: str | None, stdin_text: str | None) -> tuple[Path | None, str | None]:
    """The Dockerfile's path and, when already known, its text. docker
    resolves -f against the working directory for a local context and
    inside the context for stdin and remote ones."""
    if stdin_text is not None:
        return None, stdin_text
    if prepared.dockerfile_text is not None:
        return None, prepared.dockerfile_text
    from builder.context.trees import read_dockerfile_at
    from runtime.fsutil import resolve_in_root

    if dockerfile and prepared.is_remote and not Path(dockerfile).is_absolute():
        # Inside a fetched context: its directories resolve inside it too.
        path = resolve_in_root(prepared.directory, dockerfile, follow_final=False)
    elif dockerfile:
        path = Path(dockerfile)
    else:
        path = prepared.directory / "Dockerfile"
    text = read_dockerfile_at(path)
    # Without -f, build() names it "Dockerfile" in messages, as docker does.
    return (path if dockerfile else None), text


def _write_result_files(result, iidfile: str | None, metadata_file: str | None) -> None:
    if iidfile:
        Path(iidfile).write_text(result.image_id)
    if metadata_file:
        Path(metadata_file).write_text(json.dumps(build_metadata(result), indent=2, sort_keys=True) + "\n")


def build_metadata(result) -> dict:
    """buildx's --metadata-file keys, plus pybuild's own under `pybuild.`."""
    manifest = result.image.manifest
    metadata = {
        "containerimage.digest": result.manifest_digest,
        "containerimage.config.digest": result.image_id,
        "containerimage.descriptor": {"mediaType": manifest.media_type, "digest": str(manifest.digest),
                                      "size": manifest.size},
        "image.name": ",".join(result.tags),
        "pybuild.duration": round(result.duration, 3),
        "pybuild.cached": result.cached_steps,
        "pybuild.executed": result.executed_steps,
    }
    if result.pushed:
        metadata["pybuild.pushed"] = dict(result.pushed)
    return metadata


# -- check ----------------------------------------------------------------------------


@main.command()
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
    warnings, config = _checks(context, dockerfile, build_args, target, debug)
    if warnings and (strict or config.error):
        sys.exit(EXIT_ERROR)


def _checks(context, dockerfile, build_args, target, debug):
    """Print the build checks' warnings and summary; returns the warnings
    and the Dockerfile's check config. A Dockerfile that cannot be parsed or
    converted ends the command (exit 1)."""
    from builder.context.trees import dockerignore_patterns, read_dockerfile_at
    from frontend.check import check as run_check
    from frontend.lint import CheckConfig
    from frontend.parser import parse

    args = _key_values(build_args, "--build-arg")
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


# -- information and shell integration ------------------------------------------------


@main.command()
def version():
    """Show the pybuild version.

    \b
    Example:
      pybuild version
    """
    from importlib.metadata import version as dist_version

    click.echo(f"pybuild {dist_version('pybuild')}")
    click.echo(f"python {sys.version.split()[0]}")


@main.command()
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output format.")
@root_option
@config_option
@debug_option
def info(output_format, root, config_file, debug):
    """Show the root directory, its size, and what this host supports.

    \b
    Examples:
      pybuild info
      pybuild --root /tmp/pb info --format json
    """

    def gather():
        settings = _settings(config_file, root=root)
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

    from builder.root.worker import Worker
    from runtime.executors import available_executors, default_isolation

    root = _root_dir(settings)
    worker = Worker.open(root, settings.isolation)
    try:
        snapshotter = type(worker.snapshots).__name__
    finally:
        worker.close()
    return {
        "version": _version(),
        "root": str(root),
        "config file": str(settings.config.path) if settings.config.path else "(none)",
        "store size": _human(_tree_size(root)),
        "isolation": settings.isolation or default_isolation(),
        "isolations available": sorted(available_executors()),
        "snapshotter": "overlayfs" if snapshotter.startswith("Overlay") else "copy (overlayfs unusable here)",
        "overlayfs in kernel": _has_overlayfs(),
        "cgroups": _cgroup_version(),
        "runc": shutil.which("runc") or "not found",
        "crun": shutil.which("crun") or "not found",
        "insecure registries": list(settings.insecure_registries),
    }


def _version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("pybuild")


def _tree_size(root: Path) -> int:
    """Bytes used under root, each inode once (snapshots hardlink files)."""
    from builder.root.gc import tree_size

    return tree_size(root)


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


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell):
    """Print the shell completion script for SHELL.

    \b
    Examples:
      eval "$(pybuild completion bash)"            # in ~/.bashrc
      pybuild completion zsh > "${fpath[1]}/_pybuild"
      pybuild completion fish > ~/.config/fish/completions/pybuild.fish
    """
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)(main, {}, "pybuild", "_PYBUILD_COMPLETE")
    click.echo(completer.source())


# -- the local store ------------------------------------------------------------------


def _with_worker(root, config_file, debug, fn):
    from builder.root.worker import Worker

    def action():
        settings = _settings(config_file, root=root)
        worker = Worker.open(_root_dir(settings), "builtin")
        try:
            return fn(worker)
        finally:
            worker.close()

    return run_guarded(debug, action)


@main.command()
@root_option
@config_option
@debug_option
def images(root, config_file, debug):
    """List the images in the local store.

    \b
    Example:
      pybuild images
    """
    from builder.export.assemble import load_image

    def show(worker):
        click.echo(f"{'NAME':<60} {'IMAGE ID':<14} {'SIZE':>10}")
        for name, digest, _ in worker.index.images():
            image = load_image(worker.store, digest)
            size = sum(layer.size for layer in image.layers)
            click.echo(f"{name:<60} {image.config.digest.short:<14} {_human(size):>10}")

    _with_worker(root, config_file, debug, show)


@main.command()
@root_option
@config_option
@debug_option
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
            click.echo(f"{kind:<24} {count:>7} {_human(size):>10}")
        click.echo(f"{'total':<24} {'':>7} {_human(usage.total):>10}")

    _with_worker(root, config_file, debug, show)


@main.command()
@click.option("-a", "--all", "everything", is_flag=True,
              help="Remove the whole build cache and the cache mounts (named images stay).")
@click.option("--keep-storage", help="Keep at most this much build cache (e.g. 10GB), least recently used goes.")
@click.option("--filter", "filters", multiple=True, help="until=DURATION: remove cache unused for that long.")
@root_option
@config_option
@debug_option
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
        click.echo(f"Total reclaimed space: {_human(done.freed)} ({done.results} cache records, "
                   f"{done.snapshots} snapshots, {done.blobs} blobs, {done.cache_mounts} cache mounts)")

    _with_worker(root, config_file, debug, collect)


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{size}"


@main.command()
@click.argument("image")
@root_option
@config_option
@debug_option
def inspect(image, root, config_file, debug):
    """Show an image's manifest and config as JSON.

    \b
    Example:
      pybuild inspect app:latest
    """
    from builder.root.images import find

    def show(worker):
        stored = find(worker, image)
        click.echo(json.dumps({
            "Name": stored.name,
            "Id": str(stored.image.config.digest),
            "Digest": str(stored.image.manifest.digest),
            "Manifest": stored.manifest,
            "Config": stored.config,
        }, indent=2, sort_keys=True))

    _with_worker(root, config_file, debug, show)


@main.command()
@click.argument("image")
@root_option
@config_option
@debug_option
def history(image, root, config_file, debug):
    """Show the history of an image, newest first.

    \b
    Example:
      pybuild history app
    """
    from builder.root.images import find, history as image_history

    def show(worker):
        click.echo(f"{'CREATED':<30} {'CREATED BY':<60} {'SIZE':>10}  COMMENT")
        for row in image_history(find(worker, image)):
            created_by = row["created_by"].replace("\n", " ")
            if len(created_by) > 60:
                created_by = created_by[:57] + "..."
            click.echo(f"{row['created']:<30} {created_by:<60} {_human(row['size']):>10}  {row['comment']}")

    _with_worker(root, config_file, debug, show)


@main.command()
@click.argument("source")
@click.argument("target")
@root_option
@config_option
@debug_option
def tag(source, target, root, config_file, debug):
    """Give an image another name.

    \b
    Example:
      pybuild tag app registry.local:5000/app:1
    """
    from builder.root.images import tag as tag_image

    _with_worker(root, config_file, debug, lambda worker: tag_image(worker, source, target))


@main.command()
@click.argument("names", nargs=-1, required=True)
@root_option
@config_option
@debug_option
def rmi(names, root, config_file, debug):
    """Remove image names from the local store (blobs go with `prune`).

    \b
    Example:
      pybuild rmi app:old app:older
    """
    from builder.root.images import remove

    def drop(worker):
        for name in names:
            click.echo(f"Untagged: {remove(worker, name)}")

    _with_worker(root, config_file, debug, drop)


@main.command()
@click.argument("name")
@click.option("--insecure-registry", "insecure", multiple=True, help="Registry reached over plain HTTP.")
@root_option
@config_option
@debug_option
def push(name, insecure, root, config_file, debug):
    """Push an image from the local store to its registry.

    \b
    Example:
      pybuild push registry.local:5000/app:1
    """
    from builder.root.images import compressed_for_push, find
    from builder.registry.reference import Reference
    from builder.registry.client import RegistryClient

    def send(worker):
        stored = find(worker, name)
        ref = Reference.parse(name)
        hosts = _settings(config_file, insecure=insecure).registry_hosts
        image = compressed_for_push(worker, stored.image)
        digest = RegistryClient(worker.store, hosts=hosts).push(ref, image)
        click.echo(f"{ref}: digest: {digest}")

    _with_worker(root, config_file, debug, send)


@main.command()
@click.argument("name")
@click.option("--platform", help="os/arch[/variant] to select from an index.")
@click.option("--insecure-registry", "insecure", multiple=True, help="Registry reached over plain HTTP.")
@root_option
@config_option
@debug_option
def pull(name, platform, insecure, root, config_file, debug):
    """Pull an image into the local store.

    \b
    Example:
      pybuild pull --platform linux/arm64 registry.local:5000/base:1
    """
    from builder.build import parse_platform
    from builder.root.images import resolve_now
    from builder.registry.reference import Reference
    from builder.registry.client import RegistryClient

    def fetch(worker):
        ref = Reference.parse(name)
        hosts = _settings(config_file, insecure=insecure).registry_hosts
        client = RegistryClient(worker.store, hosts=hosts)
        # As a build's FROM reads it: aliases, and linux/arm meaning arm/v7.
        resolved = resolve_now(worker, client, ref, str(parse_platform(platform)))
        for layer in resolved.layers:
            client.fetch_blob(ref, layer)
        worker.index.put_image(str(ref), resolved.manifest.digest)
        click.echo(f"{ref}: digest: {resolved.manifest.digest}")

    _with_worker(root, config_file, debug, fetch)


@main.command()
@click.option("--fix", is_flag=True, help="Remove orphans, corrupt blobs and stale entries.")
@root_option
@config_option
@debug_option
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

    if run_guarded(debug, lambda: _with_worker(root, config_file, debug, examine)):
        sys.exit(EXIT_ERROR)


@main.command()
@click.argument("registry")
@click.option("-u", "--username", help="User name (asked when not given).")
@click.option("-p", "--password", help="Password (prefer --password-stdin: a flag shows in `ps`).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--insecure-registry", "insecure", multiple=True, help="Registry reached over plain HTTP.")
@config_option
@debug_option
def login(registry, username, password, password_stdin, insecure, config_file, debug):
    """Log in to a registry: check the credentials, then save them in
    docker's config.json ($DOCKER_CONFIG or ~/.docker), as `docker login`.

    \b
    Example:
      echo "$TOKEN" | pybuild login registry.local:5000 -u ci --password-stdin
    """
    from builder.registry.auth import Credentials, store_credentials
    from builder.registry.client import RegistryClient

    if password_stdin:
        if password:
            raise click.UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    username = username or click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    if not username or not password:
        raise click.UsageError("a user name and a password are required")
    creds = Credentials(username, password)

    def action():
        host = _registry_host(registry)
        hosts = _settings(config_file, insecure=insecure).registry_hosts
        client = RegistryClient(None, hosts=hosts, auth=lambda _registry: creds)
        try:
            client.check_login(host)
        finally:
            client.close()
        path = store_credentials(host, creds)
        click.echo(f"Login Succeeded (credentials saved in {path})")

    run_guarded(debug, action)


@main.command()
@click.argument("registry")
@debug_option
def logout(registry, debug):
    """Forget the credentials saved for a registry.

    \b
    Example:
      pybuild logout registry.local:5000
    """
    from builder.registry.auth import erase_credentials

    def action():
        host = _registry_host(registry)
        if erase_credentials(host):
            click.echo(f"Removing login credentials for {host}")
        else:
            click.echo(f"Not logged in to {host}")

    run_guarded(debug, action)


def _registry_host(text: str) -> str:
    """`https://host:5000/v2/`, `host:5000` or `docker.io` → the registry's name."""
    host = text.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


if __name__ == "__main__":
    main()
