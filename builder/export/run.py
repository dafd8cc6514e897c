"""Running a build's outputs (`-o`, `--push`, `-t`).

Each output gets the image its own options ask for (compression, media
types, annotations, rewritten timestamps): `Assembler` makes one per
distinct `ExportOptions` and LayerMaker shares the layer blobs between
them. Local work comes first, pushes last, as BuildKit's exporters finish
with the network.

The build's own image (its ID and digest in `BuildResult`) is the first
image output's, or the default image when no output makes one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from builder.errors import PybuildError
from builder.image import Descriptor, Image
from builder.export.outputs import OutputSpec, OutputType, export_options
from builder.registry.reference import Reference

_IMAGE_OUTPUTS = (OutputType.IMAGE, OutputType.REGISTRY, OutputType.OCI, OutputType.DOCKER)


def output_specs(specs, tags, push: bool) -> list[OutputSpec]:
    """The outputs a build writes: those asked for, plus the store's with
    push=true for --push, or the store alone when none was asked for."""
    specs = list(specs)
    if push:
        if not tags:
            raise PybuildError("--push needs at least one -t/--tag")
        # --push means type=image,push=true for the tags (unless an output pushes them already).
        pushing = {n for s in specs if _pushes(s) for n in (s.names or tags)}
        if not set(tags) <= pushing:
            specs.append(OutputSpec(OutputType.IMAGE, {"push": "true"}))
    return specs or [OutputSpec(OutputType.IMAGE, {})]  # the default: the local store


def store_and_pushes(session, spec: OutputSpec, names, digest: str) -> list[str]:
    """For an image or registry output: the image (or index) `digest` kept
    under `names` in the store when the output stores, and the names it
    pushes (their registries allowed plain HTTP when it says so)."""
    if spec.type is OutputType.IMAGE and spec.flag("store", True):
        for name in names:
            session.index.put_image(str(Reference.parse(name)), digest)
    if not _pushes(spec):
        return []
    if not names:
        raise PybuildError(f"output type={spec.type.value} needs name= or -t to push")
    if spec.flag("registry.insecure"):
        for name in names:
            session.registry.allow_insecure(Reference.parse(name).registry)
    return list(names)


def run_outputs(session, assembler, chain, tags, specs, push: bool, attest=None, facts=None):
    """Every output of one platform's build; `attest` (a BuildAttestations)
    and `facts` (its PlatformRecord) when the build attests. Returns the
    build's image, what was pushed (name -> digest) and the index of its
    first image output when attestations made one."""
    tags = tuple(tags)
    specs = output_specs(specs, tags, push)
    planned = []
    for spec in specs:
        options = export_options(spec, assembler.defaults)  # validates every output's options
        wanted = attest.wanted(spec) if attest is not None else None
        if wanted is not None and wanted.any and spec.type in _IMAGE_OUTPUTS:
            options = attested_options(session, spec, options)
        planned.append((spec, options, wanted, assembler.image(options) if spec.type in _IMAGE_OUTPUTS else None))
    result = next((image for _, _, _, image in planned if image is not None), None) or assembler.image()

    index = None
    to_push: list[tuple[str, Image, tuple | None]] = []
    for spec, options, wanted, image in planned:
        names = spec.names or tags
        attested = None
        if image is not None and wanted is not None and wanted.any:
            from builder.export.attest import make_index

            manifest = attest.manifest_for(wanted, facts, image, names)
            annotations = options.index_annotations if spec.type is not OutputType.OCI else ()
            attested = ([image, manifest], make_index(session.store, [image], oci=True, annotations=annotations,
                                                      attestations=[manifest]))
            if index is None and image is result:
                index = attested[1]
        if spec.type in (OutputType.OCI, OutputType.DOCKER):
            write_layout(session, spec, attested[0] if attested else image, names, dict(options.index_annotations),
                         docker=spec.type is OutputType.DOCKER, created=layout_created(options),
                         index=attested[1] if attested else None)
        elif spec.type in (OutputType.LOCAL, OutputType.TAR):
            from builder.export.rootfs import export_rootfs

            if wanted is not None and wanted.any:
                _attested_rootfs(session, chain, spec, attest, wanted, facts, assembler.image())
            else:
                export_rootfs(session.snapshots, chain, Path(spec.dest), as_tar=spec.type is OutputType.TAR,
                              preserve_special=spec.flag("preserve-special"))
        else:
            digest = attested[1].digest if attested else image.manifest.digest
            to_push += [(name, image, attested) for name in store_and_pushes(session, spec, names, digest)]
    pushed: dict[str, str] = {}
    for name, image, attested in to_push:
        if name not in pushed:
            pushed[name] = _push(session, name, image, attested)
    return result, pushed, index


def _attested_rootfs(session, chain, spec, attest, wanted, facts, image) -> None:
    """type=local or type=tar with attestation files (builder.export.attest)."""
    from builder.export.attest import add_statement_files, copy_tar, export_attested_rootfs

    files = export_attested_rootfs(session, chain, spec, attest, wanted, facts, image)
    if spec.type is OutputType.LOCAL:
        return
    import tarfile

    from builder.export.oci import atomic_file

    def write(out) -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as combined:
            copy_tar(session.tmp / "rootfs.tar", combined)
            add_statement_files(combined, files, attest.epoch)

    if spec.dest == "-":
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        atomic_file(Path(spec.dest), write)


def attested_options(session, spec: OutputSpec, options):
    """BuildKit turns OCI media types on for an image with attestations
    (an attestation manifest is OCI's own), saying so. The local store keeps
    an attested image with the gzip layers a push sends: `pybuild push` of
    it then sends the manifests the attestations name (compressed_for_push
    would make new ones, which no subject names)."""
    from dataclasses import replace

    from builder.export.compression import Compression

    if spec.type is OutputType.IMAGE and "compression" not in spec.attrs \
            and options.compression is Compression.UNCOMPRESSED:
        options = replace(options, compression=Compression.GZIP)
    if options.oci_mediatypes:
        return options
    session.reporter.warning("forcibly turning on oci-mediatype mode for attestations")
    return replace(options, oci_mediatypes=True)


def _pushes(spec: OutputSpec) -> bool:
    return spec.type is OutputType.REGISTRY or (spec.type is OutputType.IMAGE and spec.flag("push"))


def layout_created(options) -> str:
    """The `org.opencontainers.image.created` of a layout's index entries.

    BuildKit's oci and docker exporters write SOURCE_DATE_EPOCH there, or the
    time of the export, in whole seconds (Go's time.RFC3339 of a UTC time),
    so an epoch build's archive stays byte-for-byte reproducible."""
    import datetime as dt
    import time

    seconds = options.source_date_epoch if options.source_date_epoch is not None else int(time.time())
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_layout(session, spec: OutputSpec, image: Image | Sequence[Image], names, index_annotations, *,
                 docker: bool, created: str | None = None, index: Descriptor | None = None) -> None:
    """A type=oci or type=docker output: `image`, or the images of `index`
    (builder/export/oci.layout_entries), to dest= as a tar, a directory
    (tar=false) or stdout (dest=-)."""
    from builder.export.docker import docker_entries, stream_docker_archive, write_docker_archive
    from builder.export.oci import (atomic_directory, parse_names, stream_oci_archive, write_directory,
                                    write_oci_layout)

    store = session.store
    dest = spec.dest
    if not dest:
        raise PybuildError(f"type={spec.type.value} needs dest=FILE (no docker daemon is used)")
    as_tar = spec.flag("tar", True)
    if dest == "-":
        if not as_tar:
            raise PybuildError(f"type={spec.type.value},tar=false cannot go to stdout")
        if docker:
            stream_docker_archive(store, image, sys.stdout.buffer, tags=names, index_annotations=index_annotations,
                                  created=created)
        else:
            stream_oci_archive(store, image, sys.stdout.buffer, ref_names=names,
                               index_annotations=index_annotations, created=created, index=index)
        sys.stdout.buffer.flush()
        return
    if not docker:
        write_oci_layout(store, image, Path(dest), tar=as_tar, ref_names=names,
                         index_annotations=index_annotations, created=created, index=index)
    elif as_tar:
        write_docker_archive(store, image, Path(dest), tags=names, index_annotations=index_annotations,
                             created=created)
    else:
        entries = docker_entries(store, image, parse_names(names), index_annotations, created)
        atomic_directory(Path(dest), lambda root: write_directory(store, entries, root))


def _push(session, name: str, image: Image, attested=None) -> str:
    """`image` under `name`; with `attested` (its images and index), the
    images by digest, then the index under the name."""
    from builder.export.pushing import push_shown  # with requests: only a push pays for importing it

    ref = Reference.parse(name)
    if attested is not None:
        digest = push_shown(session.reporter, ref, attested[1], lambda: session.registry.push_index(ref, *attested))
    else:
        digest = push_shown(session.reporter, ref, image.manifest, lambda: session.registry.push(ref, image))
    session.reporter.message(f"pushed {ref}@{digest}")
    return str(digest)
