"""`--cache-to` / `--cache-from` values, parsed once into typed specs.

The syntax is BuildKit's (buildx `--cache-to type=registry,ref=R,mode=max`):
comma-separated key=value pairs. A bare `--cache-from IMAGE` means
`type=registry,ref=IMAGE`, as in buildx.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from builder.errors import PybuildError
from builder.registry.reference import Reference


class CacheSpecError(PybuildError):
    """A --cache-to/--cache-from value pybuild cannot use."""


class CacheType(enum.Enum):
    REGISTRY = "registry"
    LOCAL = "local"
    INLINE = "inline"


class CacheMode(enum.Enum):
    MIN = "min"  # the final image's steps only
    MAX = "max"  # every step's result, intermediate stages included


@dataclass(frozen=True)
class CacheSpec:
    type: CacheType
    ref: str = ""  # registry: where the cache manifest lives
    path: str = ""  # local: dest (export) or src (import), an OCI layout directory
    tag: str = "latest"  # local: the layout's ref name
    mode: CacheMode = CacheMode.MIN
    cache_mounts: bool = False  # also carry RUN --mount=type=cache contents

    def __str__(self) -> str:
        return f"type={self.type.value}," + (f"ref={self.ref}" if self.ref else f"path={self.path}")


_BOOL = {"true": True, "1": True, "false": False, "0": False}


def parse_cache_spec(text: str, *, export: bool) -> CacheSpec:
    option = "--cache-to" if export else "--cache-from"
    if "=" not in text:
        if export:
            raise CacheSpecError(f"invalid {option} {text!r}: expected type=registry|local|inline,...")
        text = f"type=registry,ref={text}"
    attrs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CacheSpecError(f"invalid {option} {text!r}: {part!r} is not key=value")
        attrs[key] = value.strip()
    try:
        kind = CacheType(attrs.pop("type", "registry"))
    except ValueError:
        raise CacheSpecError(f"invalid {option} {text!r}: type must be registry, local or inline") from None
    mode_text = attrs.pop("mode", "min")
    try:
        mode = CacheMode(mode_text)
    except ValueError:
        raise CacheSpecError(f"invalid {option} {text!r}: mode must be min or max") from None
    mounts_text = attrs.pop("cache-mounts", "false").lower()
    if mounts_text not in _BOOL:
        raise CacheSpecError(f"invalid {option} {text!r}: cache-mounts must be true or false")
    ref = attrs.pop("ref", "")
    path = attrs.pop("dest" if export else "src", "")
    tag = attrs.pop("tag", "latest")
    attrs.pop("ignore-error", None)  # accepted for buildx compatibility; errors are reported anyway
    attrs.pop("oci-mediatypes", None)
    attrs.pop("image-manifest", None)  # pybuild always writes an image manifest
    if kind is CacheType.REGISTRY:
        if not ref:
            raise CacheSpecError(f"invalid {option} {text!r}: type=registry needs ref=REGISTRY/REPO:TAG")
        ref = str(Reference.parse(ref))
    elif kind is CacheType.LOCAL:
        if not path:
            need = "dest=DIR" if export else "src=DIR"
            raise CacheSpecError(f"invalid {option} {text!r}: type=local needs {need}")
    elif kind is CacheType.INLINE:
        if not export:
            raise CacheSpecError(f"invalid {option} {text!r}: import inline cache with --cache-from IMAGE")
        if mode is CacheMode.MAX:
            raise CacheSpecError(f"invalid {option} {text!r}: inline cache supports mode=min only")
    if attrs:
        raise CacheSpecError(f"invalid {option} {text!r}: unknown attribute {sorted(attrs)[0]!r}")
    return CacheSpec(kind, ref=ref, path=path, tag=tag, mode=mode, cache_mounts=_BOOL[mounts_text])
