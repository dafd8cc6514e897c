"""What one build records for its provenance, as BuildKit's Capture does.

Most of it is read from the solved graph after the build (`observe_graph`,
BuildKit's WalkProvenance): the base images pinned in ImageSource ops,
secret and ssh mount ids (never their values: ops hold ids only), whether a
RUN had the network, which local directories were read. What the graph does
not hold is reported by the code that learns it, through the `add_*` calls:
an unpinned ADD URL's content digest, a branch's commit, the git or URL
context. A remote source the graph holds but nobody reported is left out of
the materials and makes them incomplete rather than unverified.

`add_*` may be called from the solver's threads.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

from cache.digest import Digest

if TYPE_CHECKING:
    from frontend.definition import Definition

FRONTEND = "dockerfile.v0"
_COMMIT = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, order=True)
class ImageMaterial:
    ref: str  # name[:tag] as the Dockerfile meant it, normalised, without the digest
    digest: Digest = field(compare=False)
    platform: str = ""  # os/arch[/variant] the image was resolved for


@dataclass(frozen=True, order=True)
class GitMaterial:
    url: str  # remote#ref[:subdir], credentials redacted
    commit: str = field(compare=False)


@dataclass(frozen=True, order=True)
class HttpMaterial:
    url: str  # credentials redacted
    digest: Digest = field(compare=False)


@dataclass(frozen=True, order=True)
class MountUse:
    """A secret or ssh forward a RUN mounted: its id only."""

    id: str
    optional: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class ConfigSource:
    """Where the build definition came from: a remote context's URL and its
    immutable digest (git: {"sha1": commit}; a URL: the download's digest),
    or nothing for a local context. `entry_point` is the Dockerfile's name."""

    entry_point: str = "Dockerfile"
    uri: str = ""
    digest: Mapping[str, str] = field(default_factory=dict)


def frontend_args(*, build_args: Mapping[str, str] = {}, target: str | None = None,
                  labels: Mapping[str, str] = {}, network: str | None = None, no_cache: bool = False,
                  add_hosts: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """The frontend options as buildx sends them to BuildKit, which lists
    them in `invocation.parameters.args`. buildx also turns the client's
    SOURCE_DATE_EPOCH into `build-arg:SOURCE_DATE_EPOCH` (measured): the
    caller passes it among `build_args` then. The platform, the Dockerfile's
    name and the context are kept elsewhere in the predicate (BuildKit
    filters them out of the args)."""
    args = {f"build-arg:{name}": value for name, value in build_args.items()}
    args.update((f"label:{name}", value) for name, value in labels.items())
    if target:
        args["target"] = target
    if network and network != "default":
        args["force-network-mode"] = network
    if no_cache:
        args["no-cache"] = ""
    hosts = ",".join(f"{host}={ip}" for host, ip in add_hosts)
    if hosts:
        args["add-hosts"] = hosts
    return args


class BuildRecord:
    """One build's provenance facts. Times are nanoseconds since the epoch,
    as Go's time keeps them (the predicate shows every digit there is)."""

    def __init__(self, *, dockerfile: bytes, dockerfile_name: str = "Dockerfile",
                 args: Mapping[str, str] | None = None, builder_platform: str = "linux/amd64",
                 started_ns: int | None = None, invocation_id: str | None = None):
        """A local context until set_git_context or set_url_context says
        otherwise: BuildKit then lists the locals "context" and
        "dockerfile" (measured: even when no step reads the context, as its
        frontend reads .dockerignore from it), which leaves materials
        incomplete."""
        self.dockerfile = dockerfile
        self.dockerfile_digest = Digest.of_bytes(dockerfile)
        self.config_source = ConfigSource(entry_point=dockerfile_name)
        self.frontend = FRONTEND
        self.args = dict(args or {})
        self.builder_platform = builder_platform
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        self.finished_ns: int | None = None
        self.invocation_id = invocation_id or _new_id()
        self.vcs: dict[str, str] = {}
        self.images: set[ImageMaterial] = set()
        self.git: dict[str, GitMaterial] = {}
        self.http: dict[str, HttpMaterial] = {}
        self.secrets: dict[str, MountUse] = {}
        self.ssh: dict[str, MountUse] = {}
        self.locals: set[str] = {"context", "dockerfile"}
        self.network_access = False
        self.incomplete = False
        # (vertex id, op, Dockerfile location or None) of the target's graph,
        # inputs first: max mode's buildConfig and source map.
        self.steps: list = []
        self._lock = threading.Lock()

    # -- what the build reports -----------------------------------------------------
    def add_image(self, ref: str, digest: Digest | str | None, platform: str = "") -> None:
        """A base image `ref` resolved to `digest` for `platform`. The first
        report of a name and platform wins: the resolver's (an index's
        digest for a multi-platform base, as BuildKit names it) is made
        before the graph's pin of the platform's manifest is observed. With
        no digest, the one pinned in `ref`."""
        from builder.registry.reference import Reference

        parsed = Reference.parse(ref)
        name = str(parsed.with_digest(None)) if parsed.tag else parsed.name
        digest = parsed.digest if digest is None and parsed.digest else digest
        material = ImageMaterial(name, _digest(digest), platform)
        with self._lock:
            if not any(m.ref == material.ref and m.platform == platform for m in self.images):
                self.images.add(material)

    def add_git(self, url: str, commit: str) -> None:
        if not _COMMIT.match(commit):
            raise ValueError(f"not a full commit id: {commit!r}")
        url = _redact(url)
        with self._lock:
            self.git.setdefault(url, GitMaterial(url, commit))

    def add_http(self, url: str, digest: Digest | str) -> None:
        url = _redact(url)
        with self._lock:
            self.http.setdefault(url, HttpMaterial(url, _digest(digest)))

    def add_secret(self, secret_id: str, optional: bool) -> None:
        with self._lock:
            _merge_use(self.secrets, secret_id, optional)

    def add_ssh(self, ssh_id: str, optional: bool) -> None:
        with self._lock:
            _merge_use(self.ssh, ssh_id or "default", optional)

    def set_git_context(self, url: str, commit: str) -> None:
        """A git URL context (`url#ref:subdir` as given): BuildKit's
        configSource and one of the materials."""
        self.add_git(url, commit)
        self.locals -= {"context", "dockerfile"}
        self.config_source = ConfigSource(self.config_source.entry_point, _redact(url), {"sha1": commit})

    def set_url_context(self, url: str, digest: Digest | str) -> None:
        """A tarball or Dockerfile fetched from a URL as the context."""
        digest = _digest(digest)
        self.add_http(url, digest)
        self.locals -= {"context", "dockerfile"}
        self.config_source = ConfigSource(self.config_source.entry_point, _redact(url), {digest.algorithm: digest.hex})

    def set_vcs(self, vcs: Mapping[str, str]) -> None:
        """The local checkout's hints (builder.attest.vcs.local_vcs)."""
        self.vcs = {key: value for key, value in vcs.items() if value}

    def finish(self, at_ns: int | None = None) -> None:
        self.finished_ns = time.time_ns() if at_ns is None else at_ns

    # -- what the graph tells -------------------------------------------------------
    def observe_graph(self, definition: Definition) -> None:
        """Walk the ops the target depends on, inputs first."""
        from frontend import ops

        order = _inputs_first(definition, definition.target)
        metadata = definition.metadata
        self.steps = [(vertex, definition.op(vertex), getattr(metadata.get(vertex), "location", None))
                      for vertex in order]
        for _, op, _ in self.steps:
            if isinstance(op, ops.ImageSource):
                self.add_image(op.ref, None, platform_text(op.platform))
            elif isinstance(op, ops.NamedLocalSource):  # the context is the constructor's
                with self._lock:
                    self.locals.add(op.name)
            elif isinstance(op, ops.HttpSource):
                self._observe_http(op)
            elif isinstance(op, ops.GitSource):
                self._observe_git(op)
            elif isinstance(op, ops.Exec):
                self._observe_exec(op)

    def _observe_http(self, op) -> None:
        if op.checksum:
            self.add_http(op.url, op.checksum)
        elif _redact(op.url) not in self.http:
            self.incomplete = True

    def _observe_git(self, op) -> None:
        url = git_material_url(op.remote, op.ref)
        if _COMMIT.match(op.ref):
            self.add_git(url, op.ref)
        elif _redact(url) not in self.git:
            self.incomplete = True

    def _observe_exec(self, op) -> None:
        from frontend.ops import MountType, NetworkMode

        if op.network is not NetworkMode.NONE:
            self.network_access = True
        for mount in op.mounts:
            if mount.type is MountType.SECRET:
                self.add_secret(mount.secret_id, not mount.required)
            elif mount.type is MountType.SSH:
                self.add_ssh(mount.secret_id, not mount.required)

    # -- read back -------------------------------------------------------------------
    @property
    def materials_complete(self) -> bool:
        """BuildKit: a local directory read cannot be pinned by digest."""
        return not self.incomplete and not self.locals

    def sorted_images(self) -> list[ImageMaterial]:
        return sorted(self.images, key=lambda m: (m.ref, m.platform))

    def sorted_git(self) -> list[GitMaterial]:
        return [self.git[url] for url in sorted(self.git)]

    def sorted_http(self) -> list[HttpMaterial]:
        return [self.http[url] for url in sorted(self.http)]


def git_material_url(remote: str, ref: str = "", subdir: str = "") -> str:
    """BuildKit's git identifier as a URL: remote#ref[:subdir]."""
    url = remote
    if ref or subdir:
        url += f"#{ref}"
    if subdir:
        url += f":{subdir}"
    return url


def _merge_use(uses: dict[str, MountUse], use_id: str, optional: bool) -> None:
    # One required use makes the id required, as BuildKit's AddSecret does.
    known = uses.get(use_id)
    uses[use_id] = MountUse(use_id, optional and (known is None or known.optional))


def _inputs_first(definition: Definition, target: str) -> list[str]:
    """Depth first from the target, each vertex after its inputs (BuildKit's
    walkDigests order), without recursion: a long Dockerfile is a long chain."""
    order: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(target, False)]
    while stack:
        vertex, expanded = stack.pop()
        if expanded:
            order.append(vertex)
            continue
        if vertex in seen:
            continue
        seen.add(vertex)
        stack.append((vertex, True))
        for source in reversed(definition.op(vertex).inputs):
            if source not in seen:
                stack.append((source, False))
    return order


def platform_text(platform) -> str:
    """A platform as BuildKit's materials show it: containerd's Normalize
    drops arm64's v8."""
    text = str(platform)
    return text[:-3] if text.endswith("arm64/v8") else text


def _digest(value: Digest | str) -> Digest:
    return value if isinstance(value, Digest) else Digest.parse(str(value))


def _redact(url: str) -> str:
    from builder.ops.source.http import redact

    return redact(url)


def _new_id() -> str:
    """BuildKit's identity.NewID: 25 base-36 characters."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(25))
