"""`-o/--output` specifications, parsed as `docker buildx build` does."""

from __future__ import annotations

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
        if text == "-":
            return OutputSpec(OutputType.TAR, {"dest": "-"})
        return OutputSpec(OutputType.LOCAL, {"dest": text})
    attrs: dict[str, str] = {}
    for part in text.split(","):
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
    return OutputSpec(output_type, attrs)
