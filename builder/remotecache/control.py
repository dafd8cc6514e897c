"""The cache options of one build, and the hooks build() calls for them.

--no-cache / --no-cache-filter decide which steps must run again;
--cache-from wraps the solver's result store (builder/remotecache/importer.py);
--cache-to writes the cache after the image is assembled
(builder/remotecache/exporter.py); every build records its step descriptions for
--explain (builder/solver/explain.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import networkx as nx

from builder.solver import explain as explaining
from builder.remotecache.spec import CacheSpec, CacheType, parse_cache_spec
from builder.errors import PybuildError
from builder.solver.keys import CacheKey
from frontend.ops import CopyParts, Exec, FileCopy, WriteFiles

if TYPE_CHECKING:
    from builder.export.assemble import Assembler, ExportOptions
    from builder.image import Image
    from builder.root.worker import Worker
    from builder.solver.session import BuildSession


# BuildKit's frontend marks only RUN, COPY and ADD to ignore the cache;
# WORKDIR's mkdir and the sources stay cached unless something they read
# ran again (dockerfile2llb: llb.IgnoreCache in dispatchRun and dispatchCopy).
_IGNORES_CACHE = (Exec, FileCopy, WriteFiles, CopyParts)


@dataclass
class CacheControl:
    no_cache: bool = False
    no_cache_filter: frozenset[str] = frozenset()
    explain: bool = False
    cache_to: tuple[CacheSpec, ...] = ()
    cache_from: tuple[CacheSpec, ...] = ()
    _forced: dict[str, str] = field(default_factory=dict)  # vertex -> why, decided by prepare()

    @classmethod
    def parse(cls, *, no_cache: bool, no_cache_filter, explain: bool, cache_to: Sequence[str],
              cache_from: Sequence[str]) -> "CacheControl":
        if isinstance(no_cache_filter, str):
            no_cache_filter = [no_cache_filter]
        stages = frozenset(s.strip() for item in (no_cache_filter or ()) for s in item.split(",") if s.strip())
        return cls(no_cache, stages, explain,
                   tuple(parse_cache_spec(s, export=True) for s in cache_to),
                   tuple(parse_cache_spec(s, export=False) for s in cache_from))

    # before solving ----------------------------------------------------------
    def prepare(self, definition, session: BuildSession, worker: Worker, reporter, platform: str):
        """Decide the forced steps; return the solver's ResultStore. The
        remote caches are read into `worker`'s root (session's store)."""
        from builder.remotecache.importer import ImportingResults, load_caches, restore_cache_mounts

        graph = definition.graph
        needed = nx.ancestors(graph, definition.target) | {definition.target}
        if self.no_cache_filter:
            stages = {m.stage for m in definition.metadata.values() if m.stage}
            unknown = sorted(self.no_cache_filter - stages)
            if unknown:
                known = ", ".join(sorted(stages)) or "none with steps"
                raise PybuildError(f"--no-cache-filter: no stage named {unknown[0]!r} in this build "
                                   f"(stages: {known})")
        for vertex in needed:
            meta = definition.metadata.get(vertex)
            if not isinstance(graph.nodes[vertex]["op"], _IGNORES_CACHE):
                continue
            if self.no_cache:
                self._forced[vertex] = "--no-cache was given"
            elif meta is not None and meta.stage in self.no_cache_filter:
                self._forced[vertex] = f"--no-cache-filter names stage {meta.stage}"
        # What reads a re-run step's result runs again too: otherwise the
        # final image would not show the re-run at all.
        for vertex in list(self._forced):
            for later in nx.descendants(graph, vertex) & needed:
                self._forced.setdefault(later, "a step it depends on was forced to run again")
        caches = load_caches(list(self.cache_from), session, reporter, platform) if self.cache_from else []
        if caches:
            restore_cache_mounts(caches, worker, reporter)
        return _ForcingResults(ImportingResults(session.results, caches, worker, reporter), session.index,
                               self._forced)

    def force(self, vertex: str) -> bool:
        return vertex in self._forced

    # after solving -----------------------------------------------------------
    def after_solve(self, definition, session: BuildSession, solution, reporter, build_args, target,
                    platform: str | None = None) -> dict[str, str]:
        """Record the steps for --explain (and explain them when asked);
        `platform`: one of several, each with its own record."""
        contexts = session.contexts
        key = explaining.build_id(contexts.context_dir, contexts.dockerfile_path, target, platform)
        forced = {explaining.step_name(definition.metadata[v]): why
                  for v, why in self._forced.items() if v in definition.metadata}
        return explaining.report(definition, solution, session.index, contexts, reporter, build_args or {},
                                 forced, self.explain, key)

    def wrap_assembler(self, assembler: Assembler, worker: Worker, solution, definition):
        """With --cache-to type=inline, every image gets its cache records."""
        if not any(s.type is CacheType.INLINE for s in self.cache_to):
            return assembler
        return _InlineCacheAssembler(assembler, lambda image: self._exporter(worker, solution, definition, image))

    def export(self, session: BuildSession, worker: Worker, solved, reporter) -> None:
        """Write every --cache-to but inline, reusing the images' layer
        blobs: one cache holding every platform's records, as BuildKit
        exports each platform's result into the one cache manifest.
        `solved`: (solution, definition, image) of each platform."""
        from builder.remotecache.exporter import export_cache

        specs = [s for s in self.cache_to if s.type is not CacheType.INLINE]
        if specs:
            exporters = [self._exporter(worker, solution, definition, image) for solution, definition, image in solved]
            for spec in specs:
                export_cache(spec, exporters, session, reporter)

    @staticmethod
    def _exporter(worker: Worker, solution, definition, image):
        from builder.remotecache.exporter import CacheExporter
        from builder.export.layers import LayerMaker

        return CacheExporter(worker, LayerMaker(worker.store, worker.index, worker.snapshots), definition,
                             solution, image)


class _InlineCacheAssembler:
    """What builder.export.run asks of an Assembler (`defaults`, `image`);
    each image it makes carries its inline cache records."""

    def __init__(self, inner: Assembler, exporter_for):
        self._inner = inner
        self._exporter_for = exporter_for
        self.defaults = inner.defaults
        self._images = {}

    def image(self, options: ExportOptions | None = None) -> Image:
        from builder.remotecache.exporter import with_inline_cache

        plain = self._inner.image(options)
        if plain.manifest.digest not in self._images:
            exporter = self._exporter_for(plain)
            self._images[plain.manifest.digest] = with_inline_cache(exporter.store, plain, exporter)
        return self._images[plain.manifest.digest]


class _ForcingResults:
    """A forced step's new result replaces the old one under its key (the
    index otherwise keeps the first result recorded for a key, and the
    re-run would be thrown away). The old record is kept under a key no
    lookup uses (index.retire_result), for GC to drop as it drops any.

    The solver never looks a forced step up, so a key recorded without a
    lookup belongs to a forced step."""

    def __init__(self, inner, index, forced):
        self._inner = inner
        self._index = index
        self._forced = forced
        self._looked_up: set[CacheKey] = set()

    def lookup(self, key: CacheKey):
        self._looked_up.add(key)
        hit = self._inner.lookup(key)
        if hit is not None:
            self._index.touch_results([key])  # prune --keep-storage drops the least recently used
        return hit

    def record(self, key: CacheKey, result):
        if self._forced and key not in self._looked_up:
            cached = self._index.get_result(key)
            if cached is not None and tuple(cached.chain) != tuple(result):
                self._index.retire_result(key, cached.chain)
        return self._inner.record(key, result)

    def created(self, key: CacheKey) -> float:
        return self._inner.created(key)
