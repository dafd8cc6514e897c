"""The local image store: `images`, `inspect`, `history`, `tag`, `rmi`,
and `push`/`pull` between it and a registry."""

from __future__ import annotations

import json

import click

from builder.cli.build import PROGRESS_MODES
from builder.cli.shared import human, insecure_option, load_settings, root_options, with_worker


@click.command()
@root_options
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
            click.echo(f"{name:<60} {image.config.digest.short:<14} {human(size):>10}")

    with_worker(root, config_file, debug, show)


@click.command()
@click.argument("image")
@click.option("--format", "template", metavar="TEMPLATE",
              help="Print one value as buildx imagetools inspect does: '{{json .Provenance}}', "
                   "'{{json .SBOM}}', '{{json .Manifest}}', '{{json .Image}}' (docs/cli.md).")
@root_options
def inspect(image, template, root, config_file, debug):
    """Show an image's manifest and config as JSON; of an index (a build
    for several platforms), the index and each platform's image. With
    --format, one value: its provenance or SBOM attestation, manifest or
    config (per platform for an index of several).

    \b
    Example:
      pybuild inspect app:latest
      pybuild inspect --format '{{json .Provenance}}' app:latest
    """
    from builder.cli.inspect_format import parse_template, render
    from builder.root.images import find, find_index, index_summary

    chosen = parse_template(template) if template is not None else None

    def show(worker):
        if chosen is not None:
            click.echo(render(worker, image, chosen), nl=False)  # as buildx: no newline after
            return
        index = find_index(worker, image)
        if index is not None:
            click.echo(json.dumps(index_summary(worker, index), indent=2, sort_keys=True))
            return
        stored = find(worker, image)
        click.echo(json.dumps({
            "Name": stored.name,
            "Id": str(stored.image.config.digest),
            "Digest": str(stored.image.manifest.digest),
            "Manifest": stored.manifest,
            "Config": stored.config,
        }, indent=2, sort_keys=True))

    with_worker(root, config_file, debug, show)


@click.command()
@click.argument("image")
@click.option("--platform", help="os/arch[/variant]: the image of an index to show (default: this host's).")
@root_options
def history(image, platform, root, config_file, debug):
    """Show the history of an image, newest first.

    \b
    Example:
      pybuild history --platform linux/arm64 app
    """
    from builder.build import parse_platform
    from builder.root.images import find, history as image_history

    def show(worker):
        stored = find(worker, image, parse_platform(platform) if platform else None)
        click.echo(f"{'CREATED':<30} {'CREATED BY':<60} {'SIZE':>10}  COMMENT")
        for row in image_history(stored):
            created_by = row["created_by"].replace("\n", " ")
            if len(created_by) > 60:
                created_by = created_by[:57] + "..."
            click.echo(f"{row['created']:<30} {created_by:<60} {human(row['size']):>10}  {row['comment']}")

    with_worker(root, config_file, debug, show)


@click.command()
@click.argument("source")
@click.argument("target")
@root_options
def tag(source, target, root, config_file, debug):
    """Give an image (or a multi-platform index) another name.

    \b
    Example:
      pybuild tag app registry.local:5000/app:1
    """
    from builder.root.images import tag as tag_image

    with_worker(root, config_file, debug, lambda worker: tag_image(worker, source, target))


@click.command()
@click.argument("names", nargs=-1, required=True)
@root_options
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

    with_worker(root, config_file, debug, drop)


def sign_key_file(value: str | None) -> str | None:
    """The key file of `--sign key=FILE` (cosign's spelling of a key
    reference), None without the flag."""
    if value is None:
        return None
    name, sep, path = value.partition("=")
    if name != "key" or not sep or not path:
        raise click.BadParameter(f"{value!r}: expected key=FILE (a cosign key or a PEM PKCS#8 key)",
                                 param_hint="--sign")
    return path


@click.command()
@click.argument("name")
@click.option("--sign", "sign", metavar="key=FILE",
              help="Sign the pushed digest with this cosign key, as `pybuild sign` (docs/signing.md).")
@click.option("--progress", type=click.Choice(PROGRESS_MODES),
              help="Progress output on stderr, as a build's [env PYBUILD_PROGRESS; default auto].")
@insecure_option
@root_options
def push(name, sign, progress, insecure, root, config_file, debug):
    """Push an image from the local store to its registry; an index (a
    build for several platforms) goes whole: each platform's image by
    digest, then the index under the tag. With --sign, the pushed digest
    (the index's for an index) is then signed. The layers' bytes sent show
    on stderr as a build's push shows them.

    \b
    Example:
      pybuild push registry.local:5000/app:1
      COSIGN_PASSWORD=... pybuild push --sign key=cosign.key registry.local:5000/app:1
    """
    from builder.cli.sign import signing_key
    from builder.export.pushing import push_shown
    from builder.registry.client import RegistryClient
    from builder.registry.reference import Reference
    from builder.root.images import compressed_for_push, find, find_index, index_for_push
    from builder.signing.sign import sign_image
    from builder.signing.store import origin_client
    from builder.solver.progress import make_reporter

    key_file = sign_key_file(sign)

    def send(worker):
        ref = Reference.parse(name)
        index = find_index(worker, name)
        stored = find(worker, name) if index is None else None
        # Before any upload: a wrong password must leave the registry as it was.
        key = signing_key(key_file) if key_file else None
        settings = load_settings(config_file, progress=progress, insecure=insecure)
        hosts = settings.registry_hosts
        client = RegistryClient(worker.store, hosts=hosts)
        if index is not None:
            images, top = index_for_push(worker, index)
        else:
            image = compressed_for_push(worker, stored.image)
            top = image.manifest
        reporter = make_reporter(settings.progress)
        try:
            digest = push_shown(reporter, ref, top, lambda: client.push_index(ref, images, top) if index is not None
                                else client.push(ref, image))
        finally:
            reporter.close()
        click.echo(f"{ref}: digest: {digest}")
        if key is not None:
            signed = sign_image(origin_client(worker.store, hosts), worker.store, ref, digest, key)
            state = "Pushed signature to" if signed.added else "Already signed by this key:"
            click.echo(f"{state} {signed.signature_ref} ({ref.name}@{digest})")

    with_worker(root, config_file, debug, send)


@click.command()
@click.argument("name")
@click.option("--platform", help="os/arch[/variant] to select from an index.")
@insecure_option
@root_options
def pull(name, platform, insecure, root, config_file, debug):
    """Pull an image into the local store.

    \b
    Example:
      pybuild pull --platform linux/arm64 registry.local:5000/base:1
    """
    from builder.build import parse_platform
    from builder.registry.client import RegistryClient
    from builder.registry.reference import Reference
    from builder.root.images import resolve_now

    def fetch(worker):
        ref = Reference.parse(name)
        hosts = load_settings(config_file, insecure=insecure).registry_hosts
        client = RegistryClient(worker.store, hosts=hosts)
        # As a build's FROM reads it: aliases, and linux/arm meaning arm/v7.
        resolved = resolve_now(worker, client, ref, str(parse_platform(platform)))
        for layer in resolved.layers:
            client.fetch_blob(ref, layer)
        worker.index.put_image(str(ref), resolved.manifest.digest)
        click.echo(f"{ref}: digest: {resolved.manifest.digest}")

    with_worker(root, config_file, debug, fetch)


COMMANDS = (images, inspect, history, tag, rmi, push, pull)
