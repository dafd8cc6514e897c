"""The outputs of a build for several platforms (builder/multiplatform.py).

The platforms' images form one image index, each manifest's descriptor
carrying its platform, as BuildKit's image exporters make it: an OCI index
when the images have OCI media types, a Docker manifest list when they
have Docker's (`oci-mediatypes=false`).

- `type=image`: the local store keeps the index under each name;
- `--push`, `type=registry`: each platform's image is pushed by digest,
  then the index under the tag;
- `type=oci`: BuildKit's layout: `index.json` has one entry, the image
  index (with the name annotations), and `blobs/` holds every platform's;
- `type=local`, `type=tar`: a directory per platform named as buildx names
  it (`linux_amd64`, `linux_arm64`);
- `type=docker`: refused, with BuildKit's words (a docker archive holds
  images, not indexes).
"""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path
from typing import Sequence

from builder.errors import PybuildError
from builder.export.attest import make_index
from builder.export.oci import atomic_file
from builder.export.outputs import OutputSpec, OutputType, export_options
from builder.export.run import layout_created, output_specs, store_and_pushes, write_layout
from builder.image import Descriptor, Image
from builder.registry.reference import Reference

_IMAGE_OUTPUTS = (OutputType.IMAGE, OutputType.REGISTRY, OutputType.OCI)
DOCKER_REFUSAL = ("docker exporter does not currently support exporting manifest lists: a docker archive "
                  "holds one platform's image; use type=oci, type=image or --push for several platforms, "
                  "or give one --platform")


def platform_dir(platform) -> str:
    """buildx's directory name for a platform's files: `linux_arm64`, `linux_arm_v7`."""
    return str(platform).replace("/", "_")


def run_platform_outputs(built, tags, specs, push: bool, attest=None, facts=()):
    """Write every output of the platform builds `built`; returns the index
    (the first image output's, else the store's), the first platform's
    image and what was pushed (tag -> index digest). `attest` (a
    BuildAttestations) and `facts` (each platform's PlatformRecord) when
    the build attests."""
    from builder.export.run import attested_options

    first = built[0].session
    store = first.store
    tags = tuple(tags)
    specs = output_specs(specs, tags, push)
    planned = []
    for spec in specs:
        options = export_options(spec, built[0].assembler.defaults)  # type=docker: refused before the build
        wanted = attest.wanted(spec) if attest is not None else None
        entry = None
        if spec.type in _IMAGE_OUTPUTS:
            if wanted is not None and wanted.any:
                options = attested_options(first, spec, options)
            images = [b.assembler.image(options) for b in built]
            extra = []
            if wanted is not None and wanted.any:
                names = spec.names or tags
                extra = [attest.manifest_for(wanted, f, image, names) for f, image in zip(facts, images)]
            index = make_index(store, images, oci=options.oci_mediatypes, attestations=extra,
                               annotations=options.index_annotations if spec.type is not OutputType.OCI else ())
            entry = (images + extra, index)
        planned.append((spec, options, wanted, entry))
    found = next((entry for _, _, _, entry in planned if entry is not None), None)
    if found is None:
        images = [b.assembler.image() for b in built]
        found = (images, make_index(store, images, oci=built[0].assembler.defaults.oci_mediatypes))

    to_push: list[tuple[str, list[Image], Descriptor]] = []
    for spec, options, wanted, entry in planned:
        names = spec.names or tags
        if spec.type is OutputType.OCI:
            images, index = entry
            write_layout(first, spec, images, names, dict(options.index_annotations), docker=False,
                         created=layout_created(options), index=index)
        elif spec.type in (OutputType.LOCAL, OutputType.TAR):
            _write_files(built, spec, attest, wanted, facts)
        else:
            images, index = entry
            to_push += [(name, images, index) for name in store_and_pushes(first, spec, names, index.digest)]
    pushed: dict[str, str] = {}
    for name, images, index in to_push:
        if name not in pushed:
            pushed[name] = _push(first, name, images, index)
    return found[1], found[0][0], pushed


def _push(session, name: str, images: Sequence[Image], index: Descriptor) -> str:
    from builder.export.pushing import push_shown  # with requests: only a push pays for importing it

    ref = Reference.parse(name)
    digest = push_shown(session.reporter, ref, index, lambda: session.registry.push_index(ref, images, index))
    session.reporter.message(f"pushed {ref}@{digest}")
    return str(digest)


def _check_platform_dirs(dest: Path, names: Sequence[str]) -> None:
    """Before any platform is written: each DEST/NAME is absent or a real
    directory. A symlink there (an earlier export of a hostile image can
    leave one) would carry a platform's files wherever it points, and a
    file would fail the build halfway, after the first platforms."""
    import stat

    for name in names:
        try:
            mode = os.lstat(dest / name).st_mode
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            raise PybuildError(f"destination directory {dest} is a file") from None
        if not stat.S_ISDIR(mode):
            kind = "a symlink" if stat.S_ISLNK(mode) else "not a directory"
            raise PybuildError(f"cannot export to {dest / name}: it is {kind}; remove it or choose another dest")


def _write_files(built, spec: OutputSpec, attest=None, wanted=None, facts=()) -> None:
    """type=local: DEST/linux_amd64/... per platform; type=tar: one tar
    whose top directories are the platforms', as buildx writes them; each
    platform's attestation files in its directory."""
    from builder.export.attest import add_statement_files, copy_tar, export_attested_rootfs
    from builder.export.rootfs import export_rootfs

    attested = wanted is not None and wanted.any
    dest = Path(spec.dest)
    if spec.type is OutputType.LOCAL:
        _check_platform_dirs(dest, [platform_dir(b.platform) for b in built])
        for position, b in enumerate(built):
            if attested:
                export_attested_rootfs(b.session, b.chain, spec, attest, wanted, facts[position],
                                       b.assembler.image(), dest / platform_dir(b.platform))
            else:
                export_rootfs(b.session.snapshots, b.chain, dest / platform_dir(b.platform), as_tar=False,
                              preserve_special=spec.flag("preserve-special"))
        return
    parts = []
    for position, b in enumerate(built):
        part = b.session.tmp / f"rootfs-{platform_dir(b.platform)}.tar"
        files = []
        if attested:
            files = export_attested_rootfs(b.session, b.chain, spec, attest, wanted, facts[position],
                                           b.assembler.image(), part)
        else:
            export_rootfs(b.session.snapshots, b.chain, part, as_tar=True)
        parts.append((platform_dir(b.platform), part, files))

    def write(out) -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as combined:
            for prefix, part, files in parts:
                top = tarfile.TarInfo(prefix + "/")
                top.type, top.mode = tarfile.DIRTYPE, 0o755
                combined.addfile(top)
                copy_tar(part, combined, f"{prefix}/")
                add_statement_files(combined, files, attest.epoch if attest else None, f"{prefix}/")

    if str(dest) == "-":
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        atomic_file(dest, write)
