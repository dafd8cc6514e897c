"""One build's session: what its steps use, all given when it opens.

The op implementations (builder/ops) take their op, its inputs' ops and
the session, and use only the typed services it holds: the root's content
store, index and snapshots, the build's executor, registry access, image
resolver and local contexts, its SSH agents, reporter, options and
scratch directory. Nothing is set on a session after it opens.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from builder.errors import PybuildError
from builder.solver.contexts import LocalContexts
from builder.solver.keys import CacheKey
from builder.solver.resolver import ImageResolver, RegistryAccess
from frontend import ops
from frontend.definition import Definition
from runtime.fsutil import remove_tree

if TYPE_CHECKING:
    from builder.config import SizeLimits
    from builder.context.inputs import NamedContextInput
    from builder.image import Image
    from builder.ops.ssh_agent import SshAgents
    from builder.registry.hosts import RegistryHosts
    from builder.root.memo import Observer
    from builder.root.worker import Worker
    from builder.solver.progress import BuildReporter
    from builder.solver.scheduler import OpImpl, Result
    from builder.solver.secrets import Secrets
    from cache.index import Index
    from cache.store import ContentStore
    from runtime.limits import Limits
    from runtime.snapshot import CopySnapshotter, OverlaySnapshotter
    from runtime.spec import ExecSpec, Executor, OutputSink


@dataclass(frozen=True)
class SourceOptions:
    """Where a build reads from: its context and Dockerfile, the
    --build-context names, and how base images are found."""

    context_dir: Path
    dockerfile_path: Path
    platform: ops.Platform  # the target platform
    named_contexts: Mapping[str, NamedContextInput] = field(default_factory=dict)
    pull: bool = False
    insecure_registries: tuple[str, ...] = ()
    registry_hosts: RegistryHosts | None = None  # None: the config file pybuild finds


@dataclass(frozen=True)
class StepOptions:
    """What the command line gives the build's steps."""

    network: ops.NetworkMode  # --network: what a RUN without --network gets (builder.ops.exec)
    secrets: Secrets
    limits: Limits | None = None  # every RUN's (--memory, --pids-limit...)
    size_limits: SizeLimits | None = None  # of what the build downloads ([limits])


class BuildExecutor:
    """The build's one executor, made on its first RUN (a cached build needs
    none, and the oci one needs runc or crun), so that `cancel` reaches every
    run in flight."""

    def __init__(self, make: Callable[[], Executor]):
        self._make = make
        self._executor: Executor | None = None
        self._lock = threading.Lock()

    def run(self, spec: ExecSpec, rootfs: Path, output: OutputSink) -> None:
        with self._lock:
            if self._executor is None:
                self._executor = self._make()
            executor = self._executor
        executor.run(spec, rootfs, output)

    def cancel(self) -> None:
        with self._lock:
            executor = self._executor
        if executor is not None:
            executor.cancel()


class IndexResults:
    """The solver's ResultStore on the sqlite index: a hit only counts when
    every snapshot of its chain is still on disk."""

    def __init__(self, index: Index, snapshots: OverlaySnapshotter | CopySnapshotter):
        self._index = index
        self._snapshots = snapshots

    def lookup(self, key: CacheKey):
        cached = self._index.get_result(key)
        if cached is None:
            return None
        if not all(self._snapshots.exists(s) for s in cached.chain):
            self._index.drop_result(key)
            return None
        return cached.chain

    def record(self, key: CacheKey, result):
        stored = self._index.put_result(key, tuple(result))
        if stored.chain != tuple(result) and result:
            # Another process recorded this key first: keep theirs, drop ours.
            if result[-1] not in stored.chain:
                self._snapshots.remove(result[-1])
        return stored.chain

    def created(self, key: CacheKey) -> float:
        cached = self._index.get_result(key)
        return cached.created if cached else time.time()


@dataclass(frozen=True)
class BuildSession:
    """Made by `open`, ended by `close`; the services it holds keep their
    own state (caches, the executor made on first use), the record never
    changes."""

    store: ContentStore
    index: Index
    snapshots: OverlaySnapshotter | CopySnapshotter
    cache_mounts: Path  # RUN --mount=type=cache directories (builder.ops.cachemount)
    executor: BuildExecutor
    registry: RegistryAccess
    images: ImageResolver
    contexts: LocalContexts
    ssh: SshAgents
    reporter: BuildReporter
    options: StepOptions
    tmp: Path  # the build's scratch under ROOT/tmp, removed by close()
    # builder.attest.record.BuildRecord when the build attests: the steps
    # that learn a remote source's digest report it there.
    record: object = None

    @classmethod
    def open(cls, worker: Worker, reporter: BuildReporter, sources: SourceOptions, options: StepOptions,
             ssh: Mapping[str, Sequence[str]], observer: Observer | None = None, record=None) -> BuildSession:
        """`ssh`: builder.solver.secrets.parse_ssh's IDs and what each names.
        `observer` is told what the build read, when it may be memoised
        (builder.root.memo); `record` what its provenance says."""
        from builder.ops.ssh_agent import SshAgents

        registry = RegistryAccess(worker.store, insecure=sources.insecure_registries, hosts=sources.registry_hosts)
        contexts = LocalContexts(sources.context_dir, sources.dockerfile_path, sources.platform,
                                 sources.named_contexts, store=worker.store, stats_path=worker.root / "index.db",
                                 observer=observer)
        try:
            tmp = Path(tempfile.mkdtemp(prefix="build-", dir=worker.root / "tmp"))
        except BaseException:
            contexts.close()
            raise
        return cls(store=worker.store, index=worker.index, snapshots=worker.snapshots,
                   cache_mounts=worker.cache_mounts, executor=BuildExecutor(worker.executor), registry=registry,
                   images=ImageResolver(worker, registry, pull=sources.pull, observer=observer, record=record),
                   contexts=contexts, ssh=SshAgents(ssh), reporter=reporter, options=options, tmp=tmp,
                   record=record)

    def close(self) -> None:
        self.ssh.close()  # stops the ssh-agents this build started
        self.contexts.close()
        remove_tree(self.tmp, ignore_errors=True)

    @property
    def results(self) -> IndexResults:
        return IndexResults(self.index, self.snapshots)

    # frontend ------------------------------------------------------------
    def convert(self, text: str, *, path: str, build_args, target, explicit_platform: bool,
                extra_hosts=()) -> Definition:
        """The Dockerfile as a Definition for this session's platform, its
        images resolved and its named contexts looked up through the session."""
        from frontend.convert import convert

        return convert(
            text, path=path, build_args=build_args, target=target, platform=self.contexts.platform,
            explicit_platform=explicit_platform, resolve_image=self.images.resolve_image,
            excludes=self.contexts.main.excludes, named_context=self.contexts.named_context,
            extra_hosts=extra_hosts)

    # solver --------------------------------------------------------------
    def op_impls(self, definition: Definition) -> Callable[[str], OpImpl]:
        """The solver's `impl_for`: each vertex's op implementation, given its
        op, the ops of its inputs and this session."""
        from builder.ops.exec import ExecImpl
        from builder.ops.file import CopyImpl, CopyPartsImpl, MakeDirImpl, WriteFilesImpl
        from builder.ops.source.git import GitImpl
        from builder.ops.source.http import HttpImpl
        from builder.ops.source.image import ImageImpl
        from builder.ops.source.local import ContextImpl, ScratchImpl

        kinds = {
            ops.Scratch: ScratchImpl,
            ops.ContextSource: ContextImpl,
            ops.NamedLocalSource: ContextImpl,
            ops.ImageSource: ImageImpl,
            ops.HttpSource: HttpImpl,
            ops.GitSource: GitImpl,
            ops.Exec: ExecImpl,
            ops.FileCopy: CopyImpl,
            ops.WriteFiles: WriteFilesImpl,
            ops.CopyParts: CopyPartsImpl,
            ops.MakeDir: MakeDirImpl,
        }

        def impl_for(vertex: str) -> OpImpl:
            op = definition.op(vertex)
            impl = kinds.get(type(op))
            if impl is None:
                raise PybuildError(f"{type(op).__name__} is not supported yet")
            return impl(op, vertex, tuple(definition.op(i) for i in op.inputs), self)

        return impl_for

    # outputs -------------------------------------------------------------
    def export(self, assembler, chain: Result, tags, specs, push: bool, attest=None, facts=None):
        """Write every output, each from the image its options ask for
        (builder.export.run); returns the build's image, what was pushed
        and the index attestations made, if any."""
        from builder.export.run import run_outputs

        return run_outputs(self, assembler, chain, tags, specs, push, attest, facts)
