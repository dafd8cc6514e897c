"""Attestations on a build's outputs (docs/attestations.md).

As BuildKit's exporters treat them:
- an image that leaves the machine (a push, type=oci) gets an attestation
  manifest beside each platform's image, both listed in an OCI index, even
  for one platform;
- the local store keeps them only when asked for explicitly: buildx's
  default min provenance is dropped there, as docker's classic image store
  drops it;
- type=docker: the default is dropped; an explicit request is refused, in
  the words docker 26's buildx uses for its docker driver;
- type=local and type=tar: each attestation is a file beside the root
  filesystem (provenance.json, sbom.spdx.json), whose subjects are the
  exported files; the inline-only default is not written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from builder.attest.manifests import Statement, index_manifests, store_attestation_manifest
from builder.attest.options import AttestOptions, is_default
from builder.errors import PybuildError
from builder.export.outputs import OutputSpec, OutputType
from builder.image import DOCKER_MANIFEST_LIST, OCI_INDEX, Descriptor, Image, canonical_json
from cache.digest import Digest

DOCKER_REFUSAL = ("Attestation is not supported for the docker exporter: a docker archive holds one image "
                  "without an index; use type=oci, type=image or --push, or drop --provenance/--sbom/--attest")
SBOM_FILE = "sbom.spdx.json"


@dataclass
class PlatformRecord:
    """One platform's facts for its attestations: its BuildRecord, its
    platform as purls spell it, and the stages scan-stage=true scans."""

    record: object
    platform: str
    stages: list = field(default_factory=list)


@dataclass
class BuildAttestations:
    """What a build attests and how, shared by its outputs."""

    options: AttestOptions
    worker: object
    epoch: int | None = None

    @property
    def explicit(self) -> bool:
        """Asked for, not buildx's default alone."""
        return self.options.sbom is not None or (
            self.options.provenance is not None and not is_default(self.options.provenance))

    def check_outputs(self, specs: Sequence[OutputSpec]) -> None:
        """Before the build: an explicit request an output cannot hold."""
        if self.explicit and any(spec.type is OutputType.DOCKER for spec in specs):
            raise PybuildError(DOCKER_REFUSAL)

    def wanted(self, spec: OutputSpec) -> AttestOptions:
        """The attestations output `spec` gets."""
        options = self.options
        if spec.type is OutputType.DOCKER:
            return AttestOptions()
        pushes = spec.type is OutputType.REGISTRY or (spec.type is OutputType.IMAGE and spec.flag("push"))
        if spec.type is OutputType.IMAGE and not pushes and is_default(options.provenance):
            return replace(options, provenance=None)
        if spec.type in (OutputType.LOCAL, OutputType.TAR) and options.provenance is not None \
                and options.provenance.inline_only:
            return replace(options, provenance=None)
        return options

    def statements(self, wanted: AttestOptions, facts: PlatformRecord, image: Image,
                   subjects: Sequence[tuple[str, Digest]]) -> list[tuple[str, Statement]]:
        """(file name, statement) for each attestation, in BuildKit's order:
        the SBOMs (the image's, then the stages'), then the provenance."""
        found: list[tuple[str, Statement]] = []
        if wanted.sbom is not None:
            from builder.attest.sbom import SPDX_PREDICATE, sbom_statements
            from builder.attest.sbom_scan import LayerScanner

            scanner = LayerScanner.for_worker(self.worker)
            try:
                stages = facts.stages if wanted.sbom.scan_stage else ()
                for name, body in sbom_statements(scanner, image, subject_digests=subjects, epoch=self.epoch,
                                                  stages=stages):
                    found.append((f"{name}.spdx.json", Statement(body, SPDX_PREDICATE)))
            finally:
                scanner.close()
        if wanted.provenance is not None:
            from builder.attest.intoto import statement
            from builder.attest.provenance import predicate_type, provenance_predicate

            kind = predicate_type(wanted.provenance)
            body = statement(kind, provenance_predicate(facts.record, wanted.provenance, epoch=self.epoch),
                             [{"name": name, "digest": {d.algorithm: d.hex}} for name, d in subjects])
            found.append((wanted.provenance.filename, Statement(body, kind)))
        return found

    def manifest_for(self, wanted: AttestOptions, facts: PlatformRecord, image: Image,
                     names: Sequence[str]) -> Image | None:
        """The attestation manifest of one platform's image (stored), as an
        Image to push or export beside it; None when nothing is attested."""
        if not wanted.any:
            return None
        from builder.attest.purl import image_purl

        subjects = [(image_purl(name, facts.platform), image.manifest.digest) for name in names]
        statements = [s for _, s in self.statements(wanted, facts, image, subjects)]
        store = self.worker.store
        entry = store_attestation_manifest(store, statements, image.manifest)
        body = store.read_json(entry.digest)
        return Image(entry, Descriptor.from_json(body["config"]),
                     tuple(Descriptor.from_json(layer) for layer in body["layers"]))

    def statement_files(self, wanted: AttestOptions, facts: PlatformRecord, image: Image,
                        subjects: Sequence[tuple[str, Digest]], prefix: str = "") -> list[tuple[str, bytes]]:
        """type=local and type=tar: (file name, bytes) of each statement
        about `subjects`, the exported files (BuildKit: attestation-prefix
        before each name)."""
        if not wanted.any:
            return []
        return [(prefix + os.path.basename(name), indented(item.body))
                for name, item in self.statements(wanted, facts, image, subjects)]


def export_attested_rootfs(session, chain, spec: OutputSpec, attest: BuildAttestations, wanted: AttestOptions,
                           facts: PlatformRecord, image: Image, dest: Path | None = None) -> list[tuple[str, bytes]]:
    """type=local: the root filesystem of `chain` and the attestation files
    beside it in `dest` (default: the output's). type=tar: the filesystem
    to a tar in the build's scratch, whose files are the subjects; returns
    the tar's path and the files for the caller to add to the archive."""
    from builder.export.rootfs import export_rootfs, invoking_owner

    prefix = spec.attrs.get("attestation-prefix", "")
    if spec.type is OutputType.LOCAL:
        dest = Path(spec.dest) if dest is None else dest
        preserve = spec.flag("preserve-special")
        export_rootfs(session.snapshots, chain, dest, as_tar=False, preserve_special=preserve)
        owner = None if preserve else invoking_owner()
        for name, data in attest.statement_files(wanted, facts, image, file_subjects(dest), prefix):
            _write_statement(dest / name, data, attest.epoch, owner)
        return []
    part = dest or session.tmp / "rootfs.tar"
    export_rootfs(session.snapshots, chain, part, as_tar=True)
    return attest.statement_files(wanted, facts, image, tar_subjects(part), prefix)


def _write_statement(path: Path, data: bytes, epoch: int | None, owner) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        if owner is not None:
            os.fchown(out.fileno(), *owner)
    if epoch is not None:
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def add_statement_files(tar, files: Sequence[tuple[str, bytes]], epoch: int | None, top: str = "") -> None:
    """The statements into an open tar being written, under `top`."""
    import io
    import tarfile
    import time

    for name, data in files:
        info = tarfile.TarInfo(top + name)
        info.size, info.mode = len(data), 0o600
        info.mtime = epoch if epoch is not None else int(time.time())
        tar.addfile(info, io.BytesIO(data))


def copy_tar(part: Path, out_tar, top: str = "") -> None:
    """The members of the tar file `part` into the open tar `out_tar`, under `top`."""
    import tarfile

    with tarfile.open(part, mode="r|") as source:
        for member in source:
            member.name = top + member.name
            if member.islnk():
                member.linkname = top + member.linkname
            out_tar.addfile(member, source.extractfile(member) if member.isreg() else None)


def tar_subjects(part: Path) -> list[tuple[str, Digest]]:
    """Every regular file of a tar, as file_subjects names them."""
    import tarfile

    found = []
    with tarfile.open(part, mode="r|") as source:
        for member in source:
            if member.isreg():
                digest = hashlib.sha256()
                data = source.extractfile(member)
                for chunk in iter(lambda: data.read(1 << 20), b""):
                    digest.update(chunk)
                name = member.name.removeprefix("./").lstrip("/")
                found.append((name, Digest.parse("sha256:" + digest.hexdigest())))
    return sorted(found)


def stage_layers(definition, solution, results) -> list[tuple[str, list]]:
    """scan-stage=true: each stage the target reads (not its own), as the
    snapshot chain of that stage's last step the target depends on, in
    the graph's order; `results` is the session's result store."""
    import networkx as nx

    from builder.attest.sbom_scan import LayerRef

    needed = nx.ancestors(definition.graph, definition.target)
    own = getattr(definition.metadata.get(definition.target), "stage", "")
    last: dict[str, str] = {}
    for vertex in nx.topological_sort(definition.graph):
        stage = getattr(definition.metadata.get(vertex), "stage", "")
        if vertex in needed and stage and stage != own:
            last[stage] = vertex
    found = []
    for stage, vertex in last.items():
        chain = results.lookup(solution.keys[vertex]) if vertex in solution.keys else None
        if chain:
            found.append((stage, [LayerRef(snapshot=snapshot) for snapshot in chain]))
    return found


def make_index(store, images: Sequence[Image], *, oci: bool, annotations=(),
               attestations: Sequence[Image] = ()) -> Descriptor:
    """Store the index of `images` (their manifests' descriptors, platform
    included, in the platforms' order), then of their attestation
    manifests, and return its descriptor."""
    manifests = []
    for image in images:
        desc = image.manifest
        if not oci:  # schema 2's manifest list has no annotations
            desc = Descriptor(desc.media_type, desc.digest, desc.size, platform=desc.platform)
        manifests.append(desc)
    if attestations:
        manifests = index_manifests(manifests, [a.manifest for a in attestations])
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX if oci else DOCKER_MANIFEST_LIST,
            "manifests": [desc.to_json() for desc in manifests]}
    if annotations and oci:
        body["annotations"] = dict(annotations)
    data = canonical_json(body)
    return Descriptor(body["mediaType"], store.put_bytes(data), len(data))


def indented(body: bytes) -> bytes:
    """A statement as BuildKit's local exporter writes it (two-space indent)."""
    return json.dumps(json.loads(body), indent=2).encode()


def file_subjects(root: Path) -> list[tuple[str, Digest]]:
    """Every regular file under `root` (symlinks not followed), by its path
    relative to it, in the lexical order of fsutil's walk."""
    found = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(directory) / name
            if not path.is_symlink() and path.is_file():
                digest = hashlib.sha256()
                with open(path, "rb") as data:
                    for chunk in iter(lambda: data.read(1 << 20), b""):
                        digest.update(chunk)
                found.append((path.relative_to(root).as_posix(), Digest.parse("sha256:" + digest.hexdigest())))
    return sorted(found)
