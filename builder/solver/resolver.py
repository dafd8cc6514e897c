"""Base images for one build: which manifest a reference names, and the
registry client that asks, made only when a build first needs it."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterable

from builder.errors import RegistryError
from builder.registry.reference import Reference
from cache.digest import Digest
from frontend import ops
from frontend.definition import ResolvedImage

if TYPE_CHECKING:
    from builder.image import Descriptor, Image
    from builder.registry.client import Progress, RegistryClient
    from builder.registry.manifests import ResolvedManifest
    from builder.registry.hosts import RegistryHosts
    from builder.root.memo import Observer
    from builder.root.worker import Worker
    from cache.store import ContentStore


class RegistryAccess:
    """The registry calls a build makes, on a RegistryClient made on the
    first call: a fully cached build never talks to a registry, and
    importing requests (which builder.registry.client needs) costs ~0.13 s
    of CPU (docs/benchmarks.md). Thread-safe: parallel steps pull at once."""

    def __init__(self, store: ContentStore, *, insecure: Iterable[str] = (), hosts: RegistryHosts | None = None):
        self._store, self._insecure, self._hosts = store, tuple(insecure), hosts
        self._client: RegistryClient | None = None
        self._lock = threading.Lock()

    def _made(self) -> RegistryClient:
        with self._lock:
            if self._client is None:
                from builder.registry.client import RegistryClient

                self._client = RegistryClient(self._store, insecure=self._insecure, hosts=self._hosts)
            return self._client

    def resolve(self, ref: Reference, platform: str = "linux/amd64") -> ResolvedManifest:
        return self._made().resolve(ref, platform)

    def fetch_blob(self, ref: Reference, desc: Descriptor, progress: Progress | None = None) -> None:
        self._made().fetch_blob(ref, desc, progress=progress)

    def push(self, ref: Reference, image: Image, extra_blobs: Iterable[Descriptor] = ()) -> Digest:
        return self._made().push(ref, image, extra_blobs)

    def push_index(self, ref: Reference, images: Iterable[Image], index: Descriptor) -> Digest:
        return self._made().push_index(ref, images, index)

    def allow_insecure(self, registry: str) -> None:
        self._made().allow_insecure(registry)


class ImageResolver:
    """FROM's and COPY --from's images as the frontend and the image steps
    see them: a tag is read from this root's record of what it last named
    (unless --pull), else asked of the registry; documents already in the
    store are used as they are, after the same checks as fetched ones."""

    def __init__(self, worker: Worker, registry: RegistryAccess, *, pull: bool, observer: Observer | None = None,
                 record=None):
        self._worker = worker
        self._registry = registry
        self._pull = pull
        self._observer = observer  # told which image each reference meant, for the build memo
        self._record = record  # the provenance's BuildRecord, told each base image's digest

    def resolve_image(self, text: str, platform: ops.Platform) -> ResolvedImage:
        """The frontend's ImageResolver: the pinned reference and config."""
        from builder.image_schema import check_config, check_manifest

        store = self._worker.store
        ref = Reference.parse(text)
        platform_key = str(platform)
        manifest_digest = ref.digest
        if manifest_digest is None and not self._pull:
            manifest_digest = self._worker.index.get_resolved(str(ref), platform_key)
        manifest = None
        if manifest_digest is not None and store.has(manifest_digest):
            manifest = store.read_json(manifest_digest)
            if "config" not in manifest:  # an index pinned by digest: select below
                manifest = None
        if manifest is None:
            resolved = self.resolve_manifest(ref, platform)
            manifest_digest = resolved.manifest.digest
            manifest = resolved.manifest_json
        _check_stored(ref, "manifest", check_manifest, manifest)
        config_digest = Digest.parse(manifest["config"]["digest"])
        if not store.has(config_digest):
            resolved = self.resolve_manifest(ref, platform)
            manifest_digest, config_digest = resolved.manifest.digest, resolved.config.digest
        config = store.read_json(config_digest)
        _check_stored(ref, "image config", check_config, config)
        if self._observer is not None:
            self._observer.used_image(ref, platform_key, manifest_digest, config_digest)
        if self._record is not None:
            self._report(ref, platform, manifest_digest)
        name = str(ref.with_digest(None)) if ref.digest is not None else str(ref)
        return ResolvedImage(ref=name, digest=str(manifest_digest), config=config)

    def _report(self, ref: Reference, platform: ops.Platform, manifest_digest: Digest) -> None:
        """The provenance names a base by what its name pointed to: an
        index's digest for a multi-platform one, as BuildKit does (this
        root's record of the name's answer, builder.root.images.resolve_now)."""
        from builder.attest.record import platform_text

        digest = ref.digest
        if digest is None and not self._pull:
            digest = self._worker.index.get_resolved_name(str(ref))
        self._record.add_image(str(ref), digest or manifest_digest, platform_text(platform))

    def resolve_manifest(self, ref: Reference, platform: ops.Platform) -> ResolvedManifest:
        """Ask the registry, and record a tag's answer for this root."""
        from builder.root.images import resolve_now

        try:
            resolved = resolve_now(self._worker, self._registry, ref, str(platform))
        except RegistryError as exc:
            if str(ref) in str(exc):
                raise
            # "cannot reach registry HOST" alone does not say which image the
            # build wanted (BuildKit: "failed to resolve source metadata for REF")
            raise RegistryError(f"failed to resolve {ref}: {exc}", status=exc.status, code=exc.code,
                                transient=exc.transient) from exc
        return resolved


def _check_stored(ref: Reference, what: str, check, body) -> None:
    """The store holds documents from OCI layouts and older pybuilds too,
    not only what passed the registry client's checks."""
    from builder.image_schema import SchemaError

    try:
        check(body)
    except SchemaError as exc:
        raise RegistryError(f"image {ref}: invalid {what}: {exc}") from None
