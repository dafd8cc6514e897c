"""Platform strings ("linux/arm64/v8", "amd64", "aarch64") read into a
Platform: the one platform parser of pybuild, used for `FROM --platform`,
`--platform` on the command line and by the registry client."""

from __future__ import annotations

import re

from frontend.ops import Platform

# containerd's specifierRe: what each of os, arch and variant may hold.
_COMPONENT = re.compile(r"[A-Za-z0-9_-]+")

_KNOWN_OS = frozenset({"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris",
                       "illumos", "aix", "android", "ios", "plan9", "dragonfly"})  # fmt: skip
# Names distributions and uname use for an architecture, as OCI names it.
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
                 "i386": "386", "i686": "386"}  # fmt: skip
# Names that say the variant too: one written after them does not count.
_FIXED_VARIANT = {"armhf": "v7", "armel": "v6", "i386": "", "i686": ""}


def parse_platform(text: str) -> Platform:
    """containerd's platforms.Parse, reduced to what Dockerfiles use:
    `os/arch[/variant]`, a bare `arch` or `os`, and the common aliases.
    Raises ValueError, whose message quotes `text`."""
    parts = text.strip().lower().split("/")
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            raise ValueError(f'"{part}" is an invalid component of "{text}": platform specifier component '
                             f'must match "^[A-Za-z0-9_-]+$": invalid argument')
    if len(parts) > 3:
        raise ValueError(f'"{text}": cannot parse platform specifier: invalid argument')
    if len(parts) == 1 and parts[0] in _KNOWN_OS:
        return Platform(os=parts[0], architecture=Platform().architecture)
    os_name, rest = ("linux", parts) if len(parts) == 1 else (parts[0], parts[1:])
    arch, variant = _normalise_arch(rest[0], rest[1] if len(rest) > 1 else "")
    return Platform(os=os_name, architecture=arch, variant=variant)


def _normalise_arch(name: str, variant: str) -> tuple[str, str]:
    """containerd's normalizeArch: one spelling per platform, so that
    `linux/amd64/v1` and `linux/amd64`, or `arm/6` and `arm/v6`, are one
    platform to build (and one entry of the index), not two."""
    arch = _ARCH_ALIASES.get(name, name)
    if name in _FIXED_VARIANT:
        return arch, _FIXED_VARIANT[name]
    if arch == "amd64" and variant == "v1":
        return arch, ""
    if arch == "arm64":
        return arch, {"8": "", "v8": "", "9": "v9"}.get(variant, variant)
    if arch == "arm":
        return arch, {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(variant, variant)
    return arch, variant
