"""Image references, parsed and normalised the way docker does.

`busybox` means `docker.io/library/busybox:latest`; the first path component
is a registry only when it looks like a host (has a `.` or a `:`, or is
`localhost`), which is why `localhost:5000/x` and `127.0.0.1:5000/a/b` name
registries and `library/busybox` does not.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from builder.errors import InvalidReference
from cache.digest import Digest
from cache.errors import InvalidDigest

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_REGISTRIES = ("index.docker.io", "registry-1.docker.io")
# Docker Hub's API lives on another host than the name users write.
_DOCKER_HUB_API = "registry-1.docker.io"
_NAME_MAX = 255

# The grammar of distribution/reference, written out piece by piece.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE_RE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = first, rest
    else:
        registry, path = DEFAULT_REGISTRY, name
    if registry in _LEGACY_REGISTRIES:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    return registry, path


def _usable_domain(registry: str) -> bool:
    """The grammar takes any digits as a port and any hex and colons as an
    IPv6 address; a registry URL cannot be made of either (urllib refuses
    it), so the name is refused here as a reference docker cannot use."""
    host, port = registry, ""
    if registry.startswith("["):
        host, _, port = registry[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        port = port.removeprefix(":")
    elif ":" in registry:
        host, _, port = registry.partition(":")
    return not port or 1 <= int(port) <= 65535


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> "Reference":
        """Parse and normalise; a reference with neither tag nor digest gets `latest`."""
        if not text:
            raise InvalidReference("invalid reference format: empty reference")
        if _HEX64_RE.match(text):
            raise InvalidReference(
                f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
            )
        match = _REFERENCE_RE.match(text)
        if match is None:
            # Docker's most common complaint gets its own message.
            lowered = _REFERENCE_RE.match(text.lower())
            if lowered is not None:
                raise InvalidReference("invalid reference format: repository name must be lowercase")
            raise InvalidReference(f"invalid reference format: {text!r}")
        name = match.group("name")
        if len(name) > _NAME_MAX:
            raise InvalidReference(
                f"invalid reference format: repository name must not be more than {_NAME_MAX} characters"
            )
        registry, repository = _split_domain(name)
        if not _usable_domain(registry):
            raise InvalidReference(f"invalid reference format: {text!r}")
        if repository != repository.lower() or not re.fullmatch(_PATH, repository):
            raise InvalidReference("invalid reference format: repository name must be lowercase")
        digest = None
        if match.group("digest"):
            try:
                digest = Digest.parse(match.group("digest"))
            except InvalidDigest as exc:
                raise InvalidReference(f"invalid reference format: {exc}") from exc
        tag = match.group("tag")
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """The repository's full name, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def object(self) -> str:
        """What goes after `/manifests/` in the API: the digest wins over the tag."""
        return str(self.digest) if self.digest else self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def familiar(self) -> str:
        """Docker's short form: `busybox:latest`, `user/app:1`, `localhost:5000/x:t`."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository.removeprefix("library/")
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name

    def with_digest(self, digest: Digest) -> "Reference":
        return replace(self, digest=digest)

    def with_tag(self, tag: str | None) -> "Reference":
        return replace(self, tag=tag)

    @property
    def api_host(self) -> str:
        """The host:port the registry API answers on."""
        return _DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def hostname(self) -> str:
        """The registry's host without port or IPv6 brackets."""
        host = self.registry
        if host.startswith("["):
            return host[1:host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def is_loopback(self) -> bool:
        """Loopback registries speak plain HTTP, as docker allows by default."""
        host = self.hostname
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
