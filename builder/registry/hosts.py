"""Per-registry settings the registry client follows: pull mirrors, plain
HTTP, and the CA bundle to trust for HTTPS.

They come from the `[registry."HOST"]` tables of pybuild's config file
(builder.config, buildkitd.toml's names):

    [registry."docker.io"]
    mirrors = ["mirror.internal:5000"]   # tried in order for pulls, then docker.io
    [registry."mirror.internal:5000"]
    insecure = true                      # plain HTTP
    [registry."registry.corp"]
    ca = "/etc/pybuild/certs/corp-ca.pem"

Mirrors serve pulls only (resolving names and fetching blobs); pushes
always go to the registry named in the reference, as in docker and
BuildKit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class RegistryHosts:
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    insecure: frozenset[str] = frozenset()
    ca: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config) -> "RegistryHosts":
        """From a `builder.config.Config`'s `registries`."""
        registries = getattr(config, "registries", {}) or {}
        return cls(
            mirrors={host: tuple(reg.mirrors) for host, reg in registries.items() if reg.mirrors},
            insecure=frozenset(host for host, reg in registries.items() if reg.insecure),
            ca={host: reg.ca for host, reg in registries.items() if getattr(reg, "ca", None)},
        )

    def mirrors_of(self, registry: str) -> tuple[str, ...]:
        return tuple(self.mirrors.get(registry, ()))

    def verify(self, registry: str) -> str | bool:
        """requests' `verify`: the registry's CA bundle, or the system's."""
        return self.ca.get(registry, True)
