"""`-o/--output` specifications, parsed as `docker buildx build` does."""

from __future__ import annotations

import csv
import enum
from dataclasses import dataclass, field
from typing import Mapping

from builder.errors import PybuildError


class OutputType(enum.Enum):
    IMAGE = "image"
    REGISTRY = "registry"
    OCI = "oci"
    DOCKER = "docker"
    LOCAL = "local"
    TAR = "tar"


class OutputError(PybuildError):
    pass


@dataclass(frozen=True)
class OutputSpec:
    type: OutputType
    attrs: Mapping[str, str] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """`name=a:1,a:2` (quoted in CSV) or `name=a:1;a:2`."""
        raw = self.attrs.get("name", "")
        return tuple(n.strip() for n in raw.replace(";", ",").split(",") if n.strip())

    @property
    def dest(self) -> str | None:
        return self.attrs.get("dest")

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.attrs.get(name)
        if value is None:
            return default
        if value.lower() in ("true", "1", "yes", ""):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise OutputError(f"output option {name}={value}: expected true or false")


def parse_output(text: str) -> OutputSpec:
    """`type=oci,dest=out.tar`; a bare path means `type=local,dest=PATH`,
    and `-` a tar on stdout, as in buildx."""
    if "=" not in text.split(",")[0]:
        _check_owner()
        if text == "-":
            return OutputSpec(OutputType.TAR, {"dest": "-"})
        return OutputSpec(OutputType.LOCAL, {"dest": text})
    attrs: dict[str, str] = {}
    # CSV, as buildx reads it: `type=image,"name=a:1,a:2"` quotes a comma.
    try:
        parts = next(csv.reader([text]))
    except (csv.Error, StopIteration) as exc:
        raise OutputError(f"invalid output {text!r}: {exc}") from None
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            raise OutputError(f"invalid output option {part!r} in {text!r}: expected key=value")
        attrs[key.strip()] = value
    kind = attrs.pop("type", None)
    if kind is None:
        raise OutputError(f"output {text!r}: type is required (image, registry, oci, docker, local, tar)")
    try:
        output_type = OutputType(kind)
    except ValueError:
        raise OutputError(f"output {text!r}: unknown type {kind!r}") from None
    if output_type in (OutputType.OCI, OutputType.DOCKER, OutputType.LOCAL, OutputType.TAR) and not attrs.get("dest"):
        if output_type is not OutputType.DOCKER:
            raise OutputError(f"output type={kind} needs dest=PATH")
    if output_type in (OutputType.LOCAL, OutputType.TAR):
        _check_owner()
    return OutputSpec(output_type, attrs)


def _check_owner() -> None:
    """Refuse a SUDO_UID/SUDO_GID the export could not chown to now,
    before the build, rather than partway through writing the output."""
    from builder.export.rootfs import invoking_owner

    invoking_owner()


# Attributes each output type understands besides its export options.
_OWN_ATTRS = {
    # sign: a cosign key file, what is pushed is signed (builder/export/sign.py).
    OutputType.IMAGE: {"name", "push", "registry.insecure", "store", "unpack", "sign"},
    OutputType.REGISTRY: {"name", "push", "registry.insecure", "sign"},
    OutputType.OCI: {"name", "dest", "tar"},
    OutputType.DOCKER: {"name", "dest", "tar"},
    # preserve-special: a local export writes the image's owners, setuid and
    # setgid bits, device nodes and xattrs (builder/export/rootfs.py).
    OutputType.LOCAL: {"dest", "preserve-special", "attestation-prefix"},
    OutputType.TAR: {"dest", "attestation-prefix"},
}
_IMAGE_ATTRS = {"compression", "compression-level", "force-compression", "oci-mediatypes", "rewrite-timestamp"}
_ANNOTATION_KINDS = {
    "annotation": "annotations",
    "annotation-manifest": "annotations",
    "annotation-manifest-descriptor": "descriptor_annotations",
    "annotation-index": "index_annotations",
}


def export_options(spec: OutputSpec, defaults):
    """The `ExportOptions` an output asks for: `defaults` (the build's
    labels, annotations, SOURCE_DATE_EPOCH, squash) with this output's
    `compression=`, `compression-level=`, `force-compression=`,
    `oci-mediatypes=`, `rewrite-timestamp=` and `annotation*.KEY=` applied.

    As in BuildKit, `type=docker` defaults to Docker media types and the
    other image outputs to OCI ones; zstd asked without an explicit
    `oci-mediatypes=false` turns OCI media types on.
    """
    from dataclasses import replace

    from builder.export.compression import Compression

    attrs = dict(spec.attrs)
    changes: dict[str, object] = {}
    annotations = {name: dict(getattr(defaults, name)) for name in set(_ANNOTATION_KINDS.values())}
    for key in list(attrs):
        kind, dot, name = key.partition(".")
        if dot and kind in _ANNOTATION_KINDS:
            if not name:
                raise OutputError(f"output option {key}: annotation needs a key")
            if spec.type in (OutputType.LOCAL, OutputType.TAR):
                raise OutputError(f"output type={spec.type.value} does not take {key}")
            annotations[_ANNOTATION_KINDS[kind]][name] = attrs.pop(key)
        elif key not in _OWN_ATTRS[spec.type] and key not in _IMAGE_ATTRS:
            raise OutputError(f"output type={spec.type.value}: unknown option {key!r}")
    if spec.type in (OutputType.LOCAL, OutputType.TAR):
        unused = _IMAGE_ATTRS & set(attrs)
        if unused:
            raise OutputError(f"output type={spec.type.value} does not take {', '.join(sorted(unused))}")
    for name, values in annotations.items():
        changes[name] = tuple(sorted(values.items()))
    if "compression" in attrs:
        try:
            changes["compression"] = Compression(attrs["compression"])
        except ValueError:
            raise OutputError(f"output option compression={attrs['compression']}: expected gzip, zstd "
                              "or uncompressed") from None
    if "compression-level" in attrs:
        try:
            changes["compression_level"] = int(attrs["compression-level"])
        except ValueError:
            raise OutputError(f"output option compression-level={attrs['compression-level']}: "
                              "expected a number") from None
    if "force-compression" in attrs:
        changes["force_compression"] = spec.flag("force-compression")
    if "rewrite-timestamp" in attrs:
        changes["rewrite_timestamp"] = spec.flag("rewrite-timestamp")
    if spec.type is OutputType.IMAGE and "compression" not in attrs and not spec.flag("push"):
        # The local store keeps new layers uncompressed, as docker's store
        # does: gzip (one core, ~50 MB/s here) is paid only by outputs that
        # ship bytes elsewhere (push, OCI and docker archives).
        changes["compression"] = Compression.UNCOMPRESSED
    compression = changes.get("compression", defaults.compression)
    if "oci-mediatypes" in attrs:
        changes["oci_mediatypes"] = spec.flag("oci-mediatypes")
    elif spec.type is OutputType.DOCKER:
        changes["oci_mediatypes"] = compression is Compression.ZSTD
    elif compression is Compression.ZSTD:
        changes["oci_mediatypes"] = True
    if not changes.get("oci_mediatypes", defaults.oci_mediatypes):
        asked = [key for key in spec.attrs if key.startswith(("annotation.", "annotation-manifest."))]
        if asked:
            raise OutputError(f"output option {asked[0]}: manifest annotations need OCI media types "
                              "(Docker's schema 2 has none)")
    return replace(defaults, **changes)
