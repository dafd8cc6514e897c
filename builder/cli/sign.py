"""sign and verify: cosign-compatible signatures of images in a registry
(builder/signing)."""

from __future__ import annotations

import os
import sys

import click

from builder.cli.shared import insecure_option, load_settings, root_options, with_worker

key_option = click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False),
                          help="Key file (cosign.key to sign, cosign.pub to verify).")


def cosign_password() -> bytes:
    """The password of an encrypted key, as cosign finds it: COSIGN_PASSWORD,
    else asked on the terminal; with neither, an error (never a hang)."""
    from builder.signing.errors import SigningError

    value = os.environ.get("COSIGN_PASSWORD")
    if value is not None:
        return value.encode()
    if sys.stdin.isatty():
        return click.prompt("Enter password for private key", hide_input=True, default="",
                            show_default=False, err=True).encode()
    raise SigningError("the private key is encrypted: set COSIGN_PASSWORD (no terminal to ask the password on)")


def signing_key(key_file: str):
    """The private key of a `--key` / `sign=` file, its password asked for
    only when the key is encrypted (what `push --sign` uses too)."""
    from builder.signing.keys import load_private_key, read_key_file

    return load_private_key(read_key_file(key_file), cosign_password, name=key_file)


def _client(worker, config_file, insecure):
    from builder.signing.store import origin_client

    return origin_client(worker.store, load_settings(config_file, insecure=insecure).registry_hosts)


@click.command()
@click.argument("image")
@key_option
@insecure_option
@root_options
def sign(image, key_file, insecure, root, config_file, debug):
    """Sign an image in a registry with a cosign key (no transparency log).

    IMAGE names a tag or a digest; the digest it names is signed. The key is
    cosign's encrypted one (password from COSIGN_PASSWORD, else asked) or an
    unencrypted PEM PKCS#8 ECDSA P-256 key.

    \b
    Example:
      COSIGN_PASSWORD=... pybuild sign --key cosign.key registry.local:5000/app:1
    """
    from builder.registry.reference import Reference
    from builder.signing.sign import sign_image
    from builder.signing.verify import resolve_digest

    def run(worker):
        ref = Reference.parse(image)
        key = signing_key(key_file)
        client = _client(worker, config_file, insecure)
        digest = resolve_digest(client, ref)
        signed = sign_image(client, worker.store, ref, digest, key)
        state = "Pushed signature to" if signed.added else "Already signed by this key:"
        click.echo(f"{state} {signed.signature_ref} ({ref.name}@{digest})")

    with_worker(root, config_file, debug, run)


@click.command()
@click.argument("image")
@key_option
@insecure_option
@root_options
def verify(image, key_file, insecure, root, config_file, debug):
    """Check an image's cosign signatures against a public key (no
    transparency log: `cosign verify --insecure-ignore-tlog`).

    Exit status 0 with a line per valid signature, 1 when none is valid.

    \b
    Example:
      pybuild verify --key cosign.pub registry.local:5000/app:1
    """
    from builder.registry.reference import Reference
    from builder.signing.errors import SigningError
    from builder.signing.keys import load_public_key, read_key_file
    from builder.signing.verify import verify_image

    def run(worker):
        ref = Reference.parse(image)
        key = load_public_key(read_key_file(key_file), name=key_file)
        checked = verify_image(_client(worker, config_file, insecure), worker.store, ref, key)
        pinned = f"{ref.name}@{checked.digest}"
        if not checked.valid:
            if not checked.rejected:
                raise SigningError(f"no signatures found for {pinned}")
            reason = checked.rejected[0][1]
            raise SigningError(f"no valid signature of {pinned} with {key_file} "
                               f"({len(checked.rejected)} refused; first: {reason})")
        for claims in checked.valid:
            click.echo(f"Verified {pinned}: signed by {key_file} for {claims.docker_reference}")

    with_worker(root, config_file, debug, run)


COMMANDS = (sign, verify)
