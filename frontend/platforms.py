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
# Names distributions use for an architecture, and the (arch, variant) OCI uses.
_ARCH_ALIASES = {"x86_64": ("amd64", ""), "x86-64": ("amd64", ""), "aarch64": ("arm64", ""),
                 "armhf": ("arm", "v7"), "armel": ("arm", "v6"), "i386": ("386", ""),
                 "i686": ("386", "")}  # fmt: skip


def parse_platform(text: str) -> Platform:
    """containerd's platforms.Parse, reduced to what Dockerfiles use:
    `os/arch[/variant]`, a bare `arch` or `os`, and the common aliases.
    Raises ValueError, whose message quotes `text`."""
    parts = text.strip().lower().split("/")
    if not all(parts) or len(parts) > 3:
        raise ValueError(f'"{text}": unknown operating system or architecture: invalid argument')
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            raise ValueError(f'"{part}" is an invalid component of "{text}": platform specifier component '
                             f'must match "^[A-Za-z0-9_-]+$": invalid argument')
    if len(parts) == 1 and parts[0] in _KNOWN_OS:
        return Platform(os=parts[0], architecture=Platform().architecture)
    os_name, rest = ("linux", parts) if len(parts) == 1 else (parts[0], parts[1:])
    arch, variant = _ARCH_ALIASES.get(rest[0], (rest[0], ""))
    if len(rest) > 1:
        variant = rest[1]
    if arch == "arm64" and variant in ("v8", "8"):
        variant = ""  # containerd normalises arm64/v8 to arm64
    if arch == "arm" and variant in ("", "7"):
        variant = "v7"
    return Platform(os=os_name, architecture=arch, variant=variant)
