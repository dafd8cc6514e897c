"""The packages of a root filesystem, from its layers' facts: each layer is
read once (builder/attest/layerfacts.py, cached by diff_id), then the facts
are merged bottom-up as the layers stack, whiteouts and opaque directories
applied.

A database a layer writes replaces the lower layers' copy of that path
whole (an `apt-get install` rewrites dpkg's status). A package is
attributed to the lowest layer from which the same package (kind, name,
version, architecture) is present in every layer's merged view up to the
top: BuildKit's "the layer which introduced it"."""

from __future__ import annotations

import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

from builder.attest.layerfacts import (FactsCache, LayerFacts, ScanBudget, facts_of_snapshot, facts_of_tar,
                                       parse_charged)
from builder.attest.linked import deleted, final_target, read_merged, snapshot_reader, tar_reader
from builder.attest.pkgdb import DbKind, Package, db_kind, parse_os_release
from builder.errors import PybuildError
from builder.export.compression import Compression, decompressing_reader
from builder.image import Descriptor, Image
from builder.root.lock import RootLock
from cache.digest import Digest
from cache.keys import chain_id


class LayerUnreadable(PybuildError):
    """A layer to scan that the root no longer holds in any form."""


@dataclass(frozen=True)
class LayerRef:
    """One layer to read. `diff_id` when the layer has one (an image's
    layers; also the cache key of its facts), `blob` to read it from the
    store, `snapshot` when the root holds it unpacked (a build stage's
    snapshots may have only that)."""

    diff_id: Digest | None = None
    blob: Descriptor | None = None
    snapshot: str | None = None


@dataclass(frozen=True)
class FoundPackage:
    package: Package
    layer: Digest | None   # the diff_id of the layer that introduced it


@dataclass(frozen=True)
class RootfsPackages:
    packages: tuple[FoundPackage, ...]
    os_release: dict

    @property
    def distro(self) -> tuple[str, str]:
        """(ID, VERSION_ID) of os-release, "" when unknown."""
        return self.os_release.get("ID", ""), self.os_release.get("VERSION_ID", "")


def _identity(package: Package) -> tuple:
    return package.kind, package.name, package.version, package.arch


def merge(layers: Sequence[tuple[Digest | None, LayerFacts]],
          read: Callable[[str], bytes | None] | None = None, budget: ScanBudget | None = None) -> RootfsPackages:
    """The packages of the filesystem the layers (bottom first) make.
    `read(path)` reads a file of that filesystem (a database a link names;
    without it, databases behind links are left out); what it reads is
    charged to `budget`."""
    dbs: dict[str, list[Package]] = {}
    os_release: dict[str, dict] = {}
    links: dict[str, tuple[str, int]] = {}   # path -> (target, the layer that wrote the link)
    since: dict[tuple, int] = {}
    for position, (_, facts) in enumerate(layers):
        whiteouts, opaque = set(facts.whiteouts), set(facts.opaque)
        if whiteouts or opaque:
            dbs = {path: found for path, found in dbs.items() if not deleted(path, whiteouts, opaque)}
            os_release = {path: f for path, f in os_release.items() if not deleted(path, whiteouts, opaque)}
            links = {path: link for path, link in links.items() if not deleted(path, whiteouts, opaque)}
        # Whatever a layer writes at a database path replaces the lower entry there.
        for path in (*facts.replaced, *facts.links, *facts.dbs, *facts.os_release):
            dbs.pop(path, None)
            os_release.pop(path, None)
            links.pop(path, None)
        dbs.update(facts.dbs)
        os_release.update(facts.os_release)
        links.update((path, (target, position)) for path, target in facts.links.items())
        present = {_identity(p) for found in dbs.values() for p in found}
        since = {ident: since.get(ident, position) for ident in present}
    found = [FoundPackage(p, layers[since[_identity(p)]][0]) for path in sorted(dbs) for p in dbs[path]]
    if read is not None:
        found += _behind_links(links, dbs, os_release, layers, read, budget)
    release = os_release.get("etc/os-release") or os_release.get("usr/lib/os-release") or {}
    return RootfsPackages(tuple(found), release)


def _behind_links(links, dbs, os_release, layers, read, budget) -> list[FoundPackage]:
    """The packages of the databases the image's links at database paths
    name (os-release's fields too, into `os_release`), each attributed to
    the layer that wrote the link."""
    targets = {path: target for path, (target, _) in links.items()}
    found = []
    for path in sorted(links):
        target = final_target(path, targets)
        kind = db_kind(path)
        if target is None or target in dbs or db_kind(target) == kind and kind != DbKind.OS_RELEASE:
            continue   # a loop, or a database already listed under its own name
        data = os_release.get(target) if kind == DbKind.OS_RELEASE else None
        if data is not None:
            os_release[path] = data
            continue
        data = read(target)
        if data is None:
            continue
        if kind == DbKind.OS_RELEASE:
            os_release[path] = parse_os_release(data)
            continue
        layer = layers[links[path][1]][0]
        found += [FoundPackage(p, layer) for p in parse_charged(kind, path, data, budget)]
    return found


class LayerScanner:
    """Reads layers' facts for one root: from the facts cache, else from
    the layer's snapshot, else from its blob; and records what it read."""

    def __init__(self, root, store, index, snapshots):
        self._root, self._store, self._index, self._snapshots = root, store, index, snapshots
        self.cache = FactsCache(index.path)
        self._by_diff_id: dict[Digest, str] | None = None
        self.read_layers = 0   # layers read from disk, not from the cache (for tests and timings)

    @classmethod
    def for_worker(cls, worker) -> "LayerScanner":
        return cls(worker.root, worker.store, worker.index, worker.snapshots)

    def close(self) -> None:
        self.cache.close()

    def refs_of_image(self, image: Image) -> list[LayerRef]:
        """The image's layers, bottom first, with the snapshot the root
        holds for each (base layers by chain ID, built ones by their
        layer records), when it does."""
        config = self._store.read_json(image.config.digest)
        diff_ids = [Digest.parse(d) for d in config.get("rootfs", {}).get("diff_ids", [])]
        refs = []
        for position, (diff_id, blob) in enumerate(zip(diff_ids, image.layers)):
            snapshot = self._index.get_base(Digest.parse(chain_id([str(d) for d in diff_ids[:position + 1]])))
            refs.append(LayerRef(diff_id, blob, snapshot or self._built_snapshot(diff_id)))
        return refs

    def _built_snapshot(self, diff_id: Digest) -> str | None:
        recipe = self._store.recipe(diff_id) if self._store.is_lazy(diff_id) else None
        if recipe and recipe.get("kind") == "snapshot-tar":
            return recipe["snapshot"]
        if self._by_diff_id is None:
            self._by_diff_id = {r.diff_id: r.snapshot for r in self._index.all_layers()}
        return self._by_diff_id.get(diff_id)

    def scan(self, refs: Sequence[LayerRef]) -> RootfsPackages:
        # A shared lease, as a build holds: prune must not remove a
        # snapshot while it is read.
        budget = ScanBudget()
        with RootLock(self._root, exclusive=False, reentrant=True):
            layers = [(ref, self.facts(ref, budget)) for ref in refs]

            def read(path: str) -> bytes | None:
                try:
                    return read_merged(path, [(facts, self._reader(ref)) for ref, facts in reversed(layers)])
                except (tarfile.TarError, OSError) as exc:
                    raise LayerUnreadable(f"sbom: reading /{path} in the image's layers: {exc}") from exc

            return merge([(ref.diff_id, facts) for ref, facts in layers], read, budget)

    def facts(self, ref: LayerRef, budget: ScanBudget | None = None) -> LayerFacts:
        if ref.diff_id is not None:
            cached = self.cache.get(ref.diff_id)
            if cached is not None:
                if budget is not None:
                    budget.charge_packages(f"layer {ref.diff_id}", cached.package_count())
                return cached
        facts = self._read(ref, budget)
        self.read_layers += 1
        if ref.diff_id is not None:
            self.cache.put(ref.diff_id, facts)
        return facts

    def _read(self, ref: LayerRef, budget: ScanBudget | None) -> LayerFacts:
        if ref.snapshot is not None and self._snapshots.exists(ref.snapshot):
            try:
                return facts_of_snapshot(self._snapshots.fs_path(ref.snapshot), budget)
            except OSError as exc:
                raise LayerUnreadable(f"sbom: snapshot {ref.snapshot} of layer {ref.diff_id}: {exc}") from exc
        try:
            with self._blob_stream(ref) as stream:
                return facts_of_tar(stream, budget)
        except (tarfile.TarError, OSError) as exc:  # a damaged stream is DecompressionError already
            raise LayerUnreadable(f"sbom: layer {ref.blob.digest} is not a readable layer tar: {exc}") from exc

    def _reader(self, ref: LayerRef):
        """A reader of single paths of the layer (builder.attest.linked)."""
        if ref.snapshot is not None and self._snapshots.exists(ref.snapshot):
            return snapshot_reader(self._snapshots.fs_path(ref.snapshot))
        return tar_reader(lambda: self._blob_stream(ref))

    @contextmanager
    def _blob_stream(self, ref: LayerRef):
        if ref.blob is None:
            raise LayerUnreadable(f"sbom: layer {ref.diff_id or ref.snapshot}: "
                                  "neither its snapshot nor its blob is in the root")
        if self._store.is_lazy(ref.blob.digest):
            raise LayerUnreadable(f"sbom: layer {ref.blob.digest}: its snapshot is gone")
        with self._store.open(ref.blob.digest) as raw:
            yield decompressing_reader(raw, Compression.of_media_type(ref.blob.media_type))
