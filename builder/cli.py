"""The `pybuild` command. The only module that prints, exits, or catches
errors broadly: everything else raises one of the packages' base errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from builder.errors import PybuildError
from cache.errors import CacheError
from frontend.errors import DockerfileError, FrontendError
from runtime.errors import ExecFailed, RuntimeFailure

USER_ERRORS = (PybuildError, FrontendError, CacheError, RuntimeFailure)
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class DefaultGroup(click.Group):
    """`pybuild -t app .` means `pybuild build -t app .`, as docker users expect."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["build", *args]
        if not args:
            args = ["--help"]
        return super().parse_args(ctx, args)


def _report_error(exc: BaseException, dockerfile_text: str | None = None) -> None:
    click.echo(f"ERROR: {exc}", err=True)
    if isinstance(exc, DockerfileError) and exc.location and dockerfile_text:
        lines = dockerfile_text.splitlines()
        first = max(1, exc.location.start - 2)
        last = min(len(lines), exc.location.end + 2)
        click.echo("", err=True)
        for number in range(first, last + 1):
            marker = ">>>" if exc.location.start <= number <= exc.location.end else "   "
            click.echo(f" {marker} {number:>4} | {lines[number - 1]}", err=True)
    if isinstance(exc, ExecFailed) and exc.tail:
        click.echo("last output:", err=True)
        for line in exc.tail.rstrip("\n").splitlines():
            click.echo(f"  {line}", err=True)


def run_guarded(debug: bool, action, dockerfile_text: str | None = None):
    try:
        return action()
    except KeyboardInterrupt:
        click.echo("ERROR: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except USER_ERRORS as exc:
        if debug:
            raise
        _report_error(exc, dockerfile_text)
        sys.exit(EXIT_ERROR)
    except OSError as exc:
        if debug:
            raise
        click.echo(f"ERROR: {exc}", err=True)
        sys.exit(EXIT_ERROR)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pybuild", prog_name="pybuild")
def main():
    """pybuild: build OCI images from Dockerfiles, without a daemon.

    \b
    Examples:
      pybuild -t app .
      pybuild build -f Dockerfile.prod -t registry.local/app:1 --push .
      pybuild -o type=oci,dest=app.tar .
    """


root_option = click.option("--root", type=click.Path(file_okay=False), envvar="PYBUILD_ROOT",
                           help="State directory (default /var/lib/pybuild as root).")
debug_option = click.option("--debug", is_flag=True, help="Show tracebacks of errors.")


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


@main.command()
@click.argument("context", default=".")
@click.option("-f", "--file", "dockerfile", help="Name of the Dockerfile (default: CONTEXT/Dockerfile; - for stdin).")
@click.option("-t", "--tag", "tags", multiple=True, help="Name and optionally a tag (name:tag). Repeatable.")
@click.option("--build-arg", "build_args", multiple=True, help="Set a build-time variable (KEY=VALUE or KEY).")
@click.option("--target", help="Set the target build stage.")
@click.option("--platform", help="Target platform (os/arch[/variant]).")
@click.option("-o", "--output", "outputs", multiple=True, help="Output destination (type=oci|docker|local|tar|image|registry,...).")
@click.option("--push", is_flag=True, help="Push each tag to its registry.")
@click.option("--load", is_flag=True, help="Store the image in the local store (the default).")
@click.option("--no-cache", is_flag=True, help="Do not use the cache.")
@click.option("--pull", is_flag=True, help="Always resolve base images from their registry.")
@click.option("--secret", "secrets", multiple=True, help="Secret for RUN --mount=type=secret (id=ID,src=FILE|env=VAR).")
@click.option("--ssh", multiple=True, help="SSH agent socket for RUN --mount=type=ssh (default|ID=PATH).")
@click.option("--network", default="default", show_default=True, type=click.Choice(["default", "host", "none"]),
              help="Networking mode for RUN instructions.")
@click.option("--label", "labels", multiple=True, help="Set metadata on the image (KEY=VALUE).")
@click.option("--isolation", type=click.Choice(["builtin", "oci"]), help="How RUN steps are isolated.")
@click.option("--insecure-registry", "insecure", multiple=True, help="Registry reached over plain HTTP (HOST[:PORT]).")
@click.option("--progress", type=click.Choice(["auto", "plain", "tty", "quiet", "rawjson"]),
              default=lambda: os.environ.get("PYBUILD_PROGRESS", "auto"), help="Progress output.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@click.option("--iidfile", type=click.Path(dir_okay=False), help="Write the image ID to this file.")
@click.option("--metadata-file", type=click.Path(dir_okay=False), help="Write build metadata (JSON) to this file.")
@root_option
@debug_option
def build(context, dockerfile, tags, build_args, target, platform, outputs, push, load, no_cache, pull, secrets,
          ssh, network, labels, isolation, insecure, progress, quiet, iidfile, metadata_file, root, debug):
    """Build an image from a Dockerfile and a context directory.

    \b
    Examples:
      pybuild -t app .
      pybuild -t app --build-arg VERSION=1.2 --target runtime .
      pybuild -o type=docker,dest=app.tar -t app .
    """
    from builder.build import build as run_build
    from builder.progress import make_reporter

    dockerfile_text = None
    if dockerfile == "-":
        dockerfile_text = sys.stdin.read()
        dockerfile = None
    elif dockerfile:
        path = Path(dockerfile)
        dockerfile = path
    if dockerfile_text is None:
        try:
            dockerfile_text = (Path(dockerfile) if dockerfile else Path(context) / "Dockerfile").read_text()
        except (OSError, UnicodeDecodeError):
            dockerfile_text = None  # build() reports it with the right message
    reporter = make_reporter("quiet" if quiet else progress)
    args = _key_values(build_args, "--build-arg")
    label_map = _key_values(labels, "--label")

    def action():
        result = run_build(
            context, dockerfile=dockerfile, dockerfile_text=dockerfile_text, tags=tags, build_args=args,
            target=target, platform=platform, outputs=outputs, push=push, root=root, isolation=isolation,
            network="host" if network == "default" else network, no_cache=no_cache, pull=pull,
            secrets=secrets, ssh=ssh, insecure_registries=insecure, labels=label_map, reporter=reporter)
        if iidfile:
            Path(iidfile).write_text(result.image_id)
        if metadata_file:
            Path(metadata_file).write_text(json.dumps({
                "containerimage.digest": result.manifest_digest,
                "containerimage.config.digest": result.image_id,
                "image.name": ",".join(result.tags),
                "pybuild.duration": round(result.duration, 3),
                "pybuild.cached": result.cached_steps,
                "pybuild.executed": result.executed_steps,
                **({"pybuild.pushed": result.pushed} if result.pushed else {}),
            }, indent=2, sort_keys=True))
        if quiet:
            click.echo(result.image_id)
        else:
            for tag in result.tags:
                reporter.message(f"naming to {tag}")
            reporter.message(f"writing image {result.image_id} done ({result.duration:.1f}s)")
        return result

    run_guarded(debug, action, dockerfile_text)


def _with_worker(root, debug, fn):
    from builder.worker import Worker

    def action():
        worker = Worker.open(Path(root) if root else None, "builtin")
        try:
            return fn(worker)
        finally:
            worker.close()

    return run_guarded(debug, action)


@main.command()
@root_option
@debug_option
def images(root, debug):
    """List the images in the local store."""
    from builder.assemble import load_image

    def show(worker):
        click.echo(f"{'NAME':<60} {'IMAGE ID':<14} {'SIZE':>10}")
        for name, digest, _ in worker.index.images():
            image = load_image(worker.store, digest)
            size = sum(layer.size for layer in image.layers)
            click.echo(f"{name:<60} {image.config.digest.short:<14} {_human(size):>10}")

    _with_worker(root, debug, show)


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{size}"


@main.command()
@click.argument("image")
@root_option
@debug_option
def inspect(image, root, debug):
    """Show an image's manifest and config as JSON."""
    from builder.images import find

    def show(worker):
        stored = find(worker, image)
        click.echo(json.dumps({
            "Name": stored.name,
            "Id": str(stored.image.config.digest),
            "Digest": str(stored.image.manifest.digest),
            "Manifest": stored.manifest,
            "Config": stored.config,
        }, indent=2, sort_keys=True))

    _with_worker(root, debug, show)


@main.command()
@click.argument("image")
@root_option
@debug_option
def history(image, root, debug):
    """Show the history of an image, newest first."""
    from builder.images import find, history as image_history

    def show(worker):
        click.echo(f"{'CREATED':<30} {'CREATED BY':<60} {'SIZE':>10}  COMMENT")
        for row in image_history(find(worker, image)):
            created_by = row["created_by"].replace("\n", " ")
            if len(created_by) > 60:
                created_by = created_by[:57] + "..."
            click.echo(f"{row['created']:<30} {created_by:<60} {_human(row['size']):>10}  {row['comment']}")

    _with_worker(root, debug, show)


@main.command()
@click.argument("source")
@click.argument("target")
@root_option
@debug_option
def tag(source, target, root, debug):
    """Give an image another name."""
    from builder.images import tag as tag_image

    _with_worker(root, debug, lambda worker: tag_image(worker, source, target))


@main.command()
@click.argument("names", nargs=-1, required=True)
@root_option
@debug_option
def rmi(names, root, debug):
    """Remove image names from the local store (blobs go with `prune`)."""
    from builder.images import remove

    def drop(worker):
        for name in names:
            click.echo(f"Untagged: {remove(worker, name)}")

    _with_worker(root, debug, drop)


@main.command()
@click.argument("name")
@click.option("--insecure-registry", "insecure", multiple=True, help="Registry reached over plain HTTP.")
@root_option
@debug_option
def push(name, insecure, root, debug):
    """Push an image from the local store to its registry."""
    from builder.images import find
    from builder.reference import Reference
    from builder.registry import RegistryClient

    def send(worker):
        stored = find(worker, name)
        ref = Reference.parse(name)
        digest = RegistryClient(worker.store, insecure=insecure).push(ref, stored.image)
        click.echo(f"{ref}: digest: {digest}")

    _with_worker(root, debug, send)


@main.command()
@click.argument("name")
@click.option("--platform", help="os/arch[/variant] to select from an index.")
@click.option("--insecure-registry", "insecure", multiple=True, help="Registry reached over plain HTTP.")
@root_option
@debug_option
def pull(name, platform, insecure, root, debug):
    """Pull an image into the local store."""
    from builder.reference import Reference
    from builder.registry import RegistryClient

    def fetch(worker):
        ref = Reference.parse(name)
        client = RegistryClient(worker.store, insecure=insecure)
        resolved = client.resolve(ref, platform or "linux/amd64")
        for layer in resolved.layers:
            client.fetch_blob(ref, layer)
        worker.index.put_image(str(ref), resolved.manifest.digest)
        click.echo(f"{ref}: digest: {resolved.manifest.digest}")

    _with_worker(root, debug, fetch)


@main.command()
def version():
    """Show the pybuild version."""
    from importlib.metadata import version as dist_version

    click.echo(f"pybuild {dist_version('pybuild')}")


if __name__ == "__main__":
    main()
