"""`-o type=registry,sign=KEYFILE` (and `type=image,push=true,sign=`):
after the push, the pushed digest (the index's when the image carries
attestations) is signed in cosign's format (builder/signing, docs/signing.md).

The keys are read before the build: an encrypted key's wrong password
fails before anything is uploaded.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from builder.errors import PybuildError
from builder.export.outputs import OutputSpec, OutputType


def signed_outputs(specs: Sequence[OutputSpec]) -> list[OutputSpec]:
    """The outputs that ask for a signature; refused where nothing is pushed."""
    found = []
    for spec in specs:
        if "sign" not in spec.attrs:
            continue
        pushes = spec.type is OutputType.REGISTRY or (spec.type is OutputType.IMAGE and spec.flag("push"))
        if not pushes or not spec.attrs["sign"]:
            raise PybuildError(f"output option sign={spec.attrs['sign']}: a key file to sign what is pushed "
                               "(type=registry, or type=image,push=true)")
        found.append(spec)
    return found


def signing_keys(specs: Sequence[OutputSpec], given: Mapping[str, object]) -> dict[str, object]:
    """The private key of each sign= file: the caller's (the CLI reads them,
    asking an encrypted key's password on the terminal), else read here
    with the password from COSIGN_PASSWORD."""
    keys = {}
    for spec in signed_outputs(specs):
        path = spec.attrs["sign"]
        if path not in keys:
            keys[path] = given.get(path) or _read_key(path)
    return keys


def _read_key(path: str):
    from builder.signing.errors import SigningError
    from builder.signing.keys import load_private_key, read_key_file

    def password() -> bytes:
        value = os.environ.get("COSIGN_PASSWORD")
        if value is None:
            raise SigningError(f"the private key {path} is encrypted: set COSIGN_PASSWORD")
        return value.encode()

    return load_private_key(read_key_file(path), password, name=path)


def sign_pushed(worker, specs: Sequence[OutputSpec], tags: Sequence[str], pushed: Mapping[str, str],
                keys: Mapping[str, object], *, hosts, insecure: Sequence[str], reporter) -> None:
    """Sign what each sign= output pushed, on the registry itself (never a
    pull mirror: builder.signing.store.origin_client)."""
    outputs = signed_outputs(specs)
    if not outputs:
        return
    # Only a signing build pays for these (requests, cryptography: ~70 ms).
    from builder.config import file_registry_hosts
    from builder.registry.reference import Reference
    from builder.signing.sign import sign_image
    from builder.signing.store import origin_client
    from cache.digest import Digest

    client = origin_client(worker.store, hosts if hosts is not None else file_registry_hosts())
    try:
        for spec in outputs:
            for name in spec.names or tags:
                ref = Reference.parse(name)
                if spec.flag("registry.insecure") or ref.registry in insecure:
                    client.allow_insecure(ref.registry)
                signed = sign_image(client, worker.store, ref, Digest.parse(pushed[name]), keys[spec.attrs["sign"]])
                reporter.message(f"Pushed signature to {signed.signature_ref}")
    finally:
        client.close()
