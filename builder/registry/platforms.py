"""Platforms as the registry client matches them: a platform asked for,
read into the `{"os", "architecture"[, "variant"]}` of an OCI index entry,
and the entry of an index that serves it."""

from __future__ import annotations

from typing import Iterable, Mapping

from builder.errors import RegistryError
from builder.image import MANIFEST_TYPES, OCI_MANIFEST, Descriptor
from frontend.ops import Platform
from frontend.platforms import parse_platform as parse_platform_text


def parse_platform(platform) -> dict:
    """The platform asked for, as the `{"os", "architecture"[, "variant"]}`
    an index entry carries. A mapping (an entry's own `platform`) is taken
    as it is, a frontend.ops.Platform field by field. A string
    `os/arch[/variant]` is read by frontend.platforms.parse_platform, the one
    platform parser (case, and aliases: `linux/aarch64` is linux/arm64,
    `linux/armhf` linux/arm/v7), with two rules of the registry's own: both
    os and architecture must be named (a bare `arm64` is refused), and the
    variant is the one spelled or an alias's, never containerd's default
    (`linux/arm` asks for no variant, `linux/arm64/v8` keeps its v8): a
    build applies those defaults itself (builder.build.parse_platform), and
    select_platform takes arm64's v8 and none alike and, with no variant
    asked for, the index's first entry of the architecture."""
    if isinstance(platform, Mapping):
        body = {"os": platform.get("os", "linux"), "architecture": platform["architecture"]}
        if platform.get("variant"):
            body["variant"] = platform["variant"]
        return body
    if isinstance(platform, Platform):
        os_name, architecture, variant = platform.os, platform.architecture, platform.variant
    else:
        parts = str(platform).split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise RegistryError(f"invalid platform {platform!r}: expected os/arch[/variant]")
        try:
            parsed = parse_platform_text(str(platform))
        except ValueError as exc:
            raise RegistryError(f"invalid platform {platform!r}: {exc}") from None
        os_name, architecture = parsed.os, parsed.architecture
        aliased = parts[1].strip().lower() != architecture
        variant = parts[2].strip().lower() if len(parts) == 3 else parsed.variant if aliased else ""
    body = {"os": os_name, "architecture": architecture}
    if variant:
        body["variant"] = variant
    return body


def _variant(platform: Mapping) -> str:
    # arm64 images rarely say v8, and asking for linux/arm64/v8 must find them.
    variant = platform.get("variant") or ""
    return variant or ("v8" if platform.get("architecture") == "arm64" else "")


def select_platform(manifests: Iterable[Mapping], platform) -> Descriptor | None:
    """The first entry of an index matching os, architecture and (when asked
    for) variant; entries without a platform (attestations) never match."""
    want = parse_platform(platform)
    fallback = None
    for entry in manifests:
        have = entry.get("platform") or {}
        if have.get("os") != want["os"] or have.get("architecture") != want["architecture"]:
            continue
        if entry.get("mediaType", OCI_MANIFEST) not in MANIFEST_TYPES:
            continue
        if _variant(have) == _variant(want):
            return Descriptor.from_json(entry)
        if "variant" not in want and fallback is None:
            fallback = Descriptor.from_json(entry)
    return fallback
