"""Platforms as the registry client matches them: a platform asked for,
read into the `{"os", "architecture"[, "variant"]}` of an OCI index entry,
and the entry of an index that serves it, chosen by containerd's rules
(platforms.Only, which BuildKit's image resolution uses):

- both sides are normalised: arm64/v8 is arm64, arm with no variant is
  arm/v7, amd64/v1 is amd64, `aarch64` is arm64 and so on;
- an older variant serves a newer one: arm/v7 takes v7, then v6, then v5
  entries; amd64/v3 takes v3, v2, then v1; never the other way round, so
  an amd64 (v1) request never gets an amd64/v2 image;
- an architecture runs its 32-bit sibling: amd64 takes 386 and arm64 takes
  arm/v8..v5, after every entry of its own (measured with BuildKit 0.13);
- among acceptable entries the most preferred wins, whatever the index
  order, and the first of equals.
"""

from __future__ import annotations

from dataclasses import replace
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
    (`linux/arm` asks for no variant, `linux/arm64/v8` keeps its v8):
    select_platform normalises what it compares, as containerd does."""
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


def _normalized(platform: Mapping) -> Platform | None:
    """containerd's Normalize of an index entry's (or a request's)
    platform; None for one that names no real platform."""
    if not platform.get("architecture"):
        return None
    parts = [platform.get("os") or "linux", platform["architecture"], *filter(None, [platform.get("variant")])]
    try:
        parsed = parse_platform_text("/".join(parts))
    except ValueError:
        return None
    variant = parsed.variant
    if variant.isdigit():
        variant = f"v{variant}"
    if parsed.architecture == "amd64" and variant == "v1":
        variant = ""
    return replace(parsed, variant=variant)


def _level(variant: str) -> int:
    number = variant.removeprefix("v")
    return int(number) if number.isdigit() else 0


def _accepted(want: Platform) -> list[Platform]:
    """containerd's platformVector: what serves `want`, best first."""
    accepted = [want]
    level = _level(want.variant)
    if want.architecture == "amd64":
        accepted += [replace(want, variant=f"v{n}" if n > 1 else "") for n in range(level - 1, 0, -1)]
        accepted.append(Platform(want.os, "386", ""))
    elif want.architecture == "arm":
        accepted += [replace(want, variant=f"v{n}") for n in range(level - 1, 4, -1)]
    elif want.architecture == "arm64":
        accepted += _accepted(Platform(want.os, "arm", want.variant or "v8"))
    return accepted


def _platform_entries(manifests: Iterable[Mapping]):
    """(entry, its normalised platform) of the image manifests an index
    lists; entries without a platform (attestations' have unknown/unknown)
    never serve one."""
    for entry in manifests:
        if entry.get("mediaType", OCI_MANIFEST) not in MANIFEST_TYPES:
            continue
        have = _normalized(entry.get("platform") or {})
        if have is not None and have.os != "unknown":
            yield entry, have


def select_platform(manifests: Iterable[Mapping], platform) -> Descriptor | None:
    """The entry of an index that serves `platform` best (the module's
    rules), or None."""
    want = _normalized(parse_platform(platform))
    accepted = _accepted(want) if want is not None else []
    best, best_rank = None, len(accepted)
    for entry, have in _platform_entries(manifests):
        rank = accepted.index(have) if have in accepted else best_rank
        if rank < best_rank:
            best, best_rank = entry, rank
    return Descriptor.from_json(best) if best is not None else None


def no_match(manifests: Iterable[Mapping], platform) -> str:
    """Why select_platform found nothing: BuildKit's "no match for
    platform in manifest", naming the platform asked for and those the
    index has."""
    asked = parse_platform(platform)
    want = _normalized(asked) or "/".join(asked.values())
    has = list(dict.fromkeys(str(have) for _, have in _platform_entries(manifests)))
    return f"no match for platform {want} in manifest list; it has {', '.join(has) or 'no platform images'}"
