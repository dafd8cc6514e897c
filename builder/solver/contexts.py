"""The local inputs of one build: its context directory and the
--build-context names, as the frontend looks them up and the steps read them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from builder.errors import PybuildError
from builder.registry.reference import Reference
from frontend import ops
from frontend.definition import NamedContext

if TYPE_CHECKING:
    from builder.context.inputs import NamedContextInput
    from builder.context.trees import BuildContext
    from builder.root.memo import Observer
    from cache.store import ContentStore


class LocalContexts:
    """The build context (read through its .dockerignore and one stat cache
    of the root's index) and, once the frontend has asked for them, one
    BuildContext per named directory and the pinned reference of each
    oci-layout context. `platform` is the build's target: the manifest an
    oci-layout index is read for. `close` ends the stat cache's connections."""

    def __init__(self, context_dir: Path, dockerfile_path: Path, platform: ops.Platform,
                 named: Mapping[str, NamedContextInput], *, store: ContentStore, stats_path: Path,
                 observer: Observer | None = None):
        from builder.context.dockerfile import dockerignore_patterns
        from builder.context.trees import BuildContext
        from cache.statcache import StatCache

        self.context_dir = Path(context_dir)
        self.dockerfile_path = Path(dockerfile_path)
        self.platform = platform
        self._named = dict(named)
        self._store = store
        self._observer = observer  # told which files decided what the build read, for the memo
        if observer is not None:
            observer.look_file(self.dockerfile_path.with_name(self.dockerfile_path.name + ".dockerignore"))
            observer.look_file(self.context_dir / ".dockerignore")
        excludes = dockerignore_patterns(self.context_dir, self.dockerfile_path)
        self._stats = StatCache(stats_path)
        try:
            self.main: BuildContext = BuildContext(self.context_dir, excludes, self._stats, observer=observer,
                                                   remember=True)
        except BaseException:
            self._stats.close()
            raise
        self._named_dirs: dict[str, BuildContext] = {}  # context name -> its directory, once looked up
        self._layouts: dict[str, str] = {}  # context name -> its oci-layout image's pinned ref, once imported

    def close(self) -> None:
        self._stats.close()  # every thread's connection to index.db

    def named_context(self, ref: str) -> NamedContext | None:
        """The frontend's NamedContextLookup: the --build-context that a
        stage name, FROM or --from means."""
        from builder.context.inputs import context_name
        from builder.context.dockerfile import ignore_file_patterns
        from builder.context.trees import BuildContext

        try:
            found = self._named.get(context_name(ref))
        except PybuildError:
            return None  # not a reference: not a context name either
        if found is None:
            return None
        if found.layout is not None:
            return NamedContext(found.name, image=self._layout_image(found))
        if found.directory is None:
            return NamedContext(found.name, image=found.image)
        if found.name not in self._named_dirs:
            # BuildKit (dockerui namedcontext.go, "local"): a named directory
            # is read through its own .dockerignore.
            if self._observer is not None:
                self._observer.look_file(found.directory / ".dockerignore")
            excludes = ignore_file_patterns(found.directory) or ()
            self._named_dirs[found.name] = BuildContext(found.directory, excludes, self._stats,
                                                         observer=self._observer, remember=True)
        return NamedContext(found.name, excludes=self._named_dirs[found.name].excludes)

    def _layout_image(self, found: NamedContextInput) -> str:
        """An oci-layout:// context as a reference pinned to a manifest now
        in the store: BuildKit's placeholder, the context's name @ digest."""
        from builder.context.inputs import import_oci_layout

        if self._observer is not None:
            self._observer.look_file(found.layout / "index.json")  # a moved tag is a new image
        if found.name not in self._layouts:
            digest = import_oci_layout(found, self._store, str(self.platform))
            self._layouts[found.name] = f"{Reference.parse(found.name).name}@{digest}"
        return self._layouts[found.name]

    def context_for(self, source: ops.ContextSource | ops.NamedLocalSource) -> BuildContext:
        """The BuildContext a source op reads: the build context, or a named
        directory (which the frontend looked up while converting)."""
        if isinstance(source, ops.NamedLocalSource):
            return self._named_dirs[source.name]
        return self.main
