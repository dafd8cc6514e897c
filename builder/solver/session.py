"""One build's state: its context, registry access, secrets and op impls."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import PybuildError
from builder.image import Image
from builder.registry.reference import Reference
from cache.digest import Digest
from frontend import ops
from frontend.definition import Definition, NamedContext, ResolvedImage
from runtime.fsutil import remove_tree
from runtime.spec import NetworkMode

if TYPE_CHECKING:
    from builder.registry.client import RegistryClient


class IndexResults:
    """The solver's ResultStore on the sqlite index: a hit only counts when
    every snapshot of its chain is still on disk."""

    def __init__(self, worker):
        self._worker = worker

    def lookup(self, key: str):
        cached = self._worker.index.get_result(key)
        if cached is None:
            return None
        if not all(self._worker.snapshots.exists(s) for s in cached.chain):
            self._worker.index.drop_result(key)
            return None
        return cached.chain

    def record(self, key: str, result):
        stored = self._worker.index.put_result(key, tuple(result))
        if stored.chain != tuple(result) and result:
            # Another process recorded this key first: keep theirs, drop ours.
            if result[-1] not in stored.chain:
                self._worker.snapshots.remove(result[-1])
        return stored.chain

    def created(self, key: str) -> float:
        cached = self._worker.index.get_result(key)
        return cached.created if cached else time.time()


class LazyRegistryClient:
    """A builder.registry.client.RegistryClient made on first use: a fully cached
    build never talks to a registry, and importing requests (which
    builder.registry.client needs) costs ~0.13 s of CPU (docs/benchmarks.md)."""

    def __init__(self, store, *, insecure=(), hosts=None):
        self._store, self._insecure, self._hosts = store, tuple(insecure), hosts
        self._client = None

    def __getattr__(self, name):
        if self._client is None:
            from builder.registry.client import RegistryClient

            self._client = RegistryClient(self._store, insecure=self._insecure, hosts=self._hosts)
        return getattr(self._client, name)


@dataclass
class BuildSession:
    worker: object
    context_dir: Path
    dockerfile_path: Path
    reporter: object
    network: NetworkMode
    secrets: object
    ssh: object  # builder.ops.ssh_agent.SshAgents
    registry: "RegistryClient | LazyRegistryClient"
    pull: bool
    tmp: Path
    definition: Definition | None = None
    context: object = None
    _executor: object = None
    _stats: object = None  # the context's StatCache, closed with the session
    limits: object = None  # runtime.limits.Limits of every RUN (--memory, --pids-limit...)
    size_limits: object = None  # builder.config.SizeLimits of what the build downloads ([limits])
    observer: object = None  # builder.root.memo.Observer, when this build may be memoised
    build_contexts: dict = None  # --build-context: name -> builder.context.inputs.NamedContextInput
    _named_dirs: dict = None  # context name -> BuildContext of a named local directory
    _layouts: dict = None  # context name -> the pinned ref of its oci-layout image, once imported
    _platform: str = "linux/amd64"  # the target platform: what an oci-layout index is read for

    @property
    def executor(self):
        """One executor per build, so that cancel() reaches all its runs."""
        if self._executor is None:
            self._executor = self.worker.executor()
        return self._executor

    def cancel_running(self) -> None:
        if self._executor is not None:
            self._executor.cancel()

    @classmethod
    def start(cls, *, worker, context_dir, dockerfile_path, reporter, network, secrets, ssh,
              insecure_registries, pull, registry_hosts=None, build_contexts=None) -> "BuildSession":
        from builder.ops.ssh_agent import SshAgents

        tmp = Path(tempfile.mkdtemp(prefix="build-", dir=worker.root / "tmp"))
        registry = LazyRegistryClient(worker.store, insecure=insecure_registries, hosts=registry_hosts)
        return cls(worker, Path(context_dir), Path(dockerfile_path), reporter, network, secrets,
                   SshAgents(ssh), registry, pull, tmp, build_contexts=dict(build_contexts or {}))

    def close(self) -> None:
        self.ssh.close()  # stops the ssh-agents this build started
        if self._stats is not None:
            self._stats.close()  # every thread's connection to index.db
        remove_tree(self.tmp, ignore_errors=True)

    @property
    def results(self) -> IndexResults:
        return IndexResults(self.worker)

    # frontend ------------------------------------------------------------
    def convert(self, text: str, *, path: str, build_args, target, platform, explicit_platform: bool,
                extra_hosts=()) -> Definition:
        from builder.context.trees import BuildContext, dockerignore_patterns
        from frontend.convert import convert

        if self.observer is not None:
            self.observer.look_file(self.dockerfile_path.with_name(self.dockerfile_path.name + ".dockerignore"))
            self.observer.look_file(self.context_dir / ".dockerignore")
        excludes = dockerignore_patterns(self.context_dir, self.dockerfile_path)
        self._platform = str(platform)
        self.context = BuildContext(self.context_dir, excludes, self._stat_cache(), observer=self.observer,
                                    remember=True)
        self.definition = convert(
            text, path=path, build_args=build_args, target=target, platform=platform,
            explicit_platform=explicit_platform, resolve_image=self.resolve_image, excludes=excludes,
            named_context=self.named_context, extra_hosts=extra_hosts)
        return self.definition

    def named_context(self, ref: str) -> NamedContext | None:
        """The --build-context that a stage name, FROM or --from means."""
        from builder.context.trees import BuildContext, ignore_file_patterns
        from builder.context.inputs import context_name

        try:
            found = (self.build_contexts or {}).get(context_name(ref))
        except PybuildError:
            return None  # not a reference: not a context name either
        if found is None:
            return None
        if found.layout is not None:
            return NamedContext(found.name, image=self._layout_image(found))
        if found.directory is None:
            return NamedContext(found.name, image=found.image)
        if self._named_dirs is None:
            self._named_dirs = {}
        if found.name not in self._named_dirs:
            # BuildKit (dockerui namedcontext.go, "local"): a named directory
            # is read through its own .dockerignore.
            if self.observer is not None:
                self.observer.look_file(found.directory / ".dockerignore")
            excludes = ignore_file_patterns(found.directory) or ()
            self._named_dirs[found.name] = BuildContext(found.directory, excludes, self._stats,
                                                         observer=self.observer, remember=True)
        return NamedContext(found.name, excludes=self._named_dirs[found.name].excludes)

    def _layout_image(self, found) -> str:
        """An oci-layout:// context as a reference pinned to a manifest now
        in the store: BuildKit's placeholder, the context's name @ digest."""
        from builder.context.inputs import import_oci_layout

        if self.observer is not None:
            self.observer.look_file(found.layout / "index.json")  # a moved tag is a new image
        if self._layouts is None:
            self._layouts = {}
        if found.name not in self._layouts:
            digest = import_oci_layout(found, self.worker.store, self._platform)
            self._layouts[found.name] = f"{Reference.parse(found.name).name}@{digest}"
        return self._layouts[found.name]

    def context_for(self, source: ops.ContextSource | ops.NamedLocalSource):
        """The BuildContext a source op reads: the build context, or a named directory."""
        if isinstance(source, ops.NamedLocalSource):
            return self._named_dirs[source.name]
        return self.context

    def _stat_cache(self):
        from cache.statcache import StatCache

        self._stats = StatCache(self.worker.root / "index.db")
        return self._stats

    def resolve_image(self, text: str, platform: ops.Platform) -> ResolvedImage:
        from builder.image_schema import check_config, check_manifest

        ref = Reference.parse(text)
        platform_key = str(platform)
        manifest_digest = ref.digest
        if manifest_digest is None and not self.pull:
            manifest_digest = self.worker.index.get_resolved(str(ref), platform_key)
        manifest = None
        if manifest_digest is not None and self.worker.store.has(manifest_digest):
            manifest = json.loads(self.worker.store.read_bytes(manifest_digest))
            if "config" not in manifest:  # an index pinned by digest: select below
                manifest = None
        if manifest is None:
            resolved = self.resolve_manifest(ref, platform)
            manifest_digest = resolved.manifest.digest
            manifest = resolved.manifest_json
        _check_stored(ref, "manifest", check_manifest, manifest)
        config_digest = Digest.parse(manifest["config"]["digest"])
        if not self.worker.store.has(config_digest):
            resolved = self.resolve_manifest(ref, platform)
            manifest_digest, config_digest = resolved.manifest.digest, resolved.config.digest
        config = json.loads(self.worker.store.read_bytes(config_digest))
        _check_stored(ref, "image config", check_config, config)
        if self.observer is not None:
            self.observer.used_image(ref, platform_key, manifest_digest, config_digest)
        name = str(ref.with_digest(None)) if ref.digest is not None else str(ref)
        return ResolvedImage(ref=name, digest=str(manifest_digest), config=config)

    def resolve_manifest(self, ref: Reference, platform: ops.Platform):
        from builder.errors import RegistryError
        from builder.root.images import resolve_now

        try:
            resolved = resolve_now(self.worker, self.registry, ref, str(platform))
        except RegistryError as exc:
            if str(ref) in str(exc):
                raise
            # "cannot reach registry HOST" alone does not say which image the
            # build wanted (BuildKit: "failed to resolve source metadata for REF")
            raise RegistryError(f"failed to resolve {ref}: {exc}", status=exc.status, code=exc.code,
                                transient=exc.transient) from exc
        return resolved

    # solver --------------------------------------------------------------
    def impl_for(self, vertex: str):
        from builder.ops.exec import ExecImpl
        from builder.ops.file import CopyImpl, CopyPartsImpl, GitImpl, MakeDirImpl, WriteFilesImpl, HttpImpl
        from builder.ops.source import ContextImpl, ImageImpl, ScratchImpl

        op = self.definition.op(vertex)
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
        impl = kinds.get(type(op))
        if impl is None:
            raise PybuildError(f"{type(op).__name__} is not supported yet")
        return impl(op, vertex, self)

    # outputs -------------------------------------------------------------
    def export(self, assembler, chain, tags, specs, push: bool) -> tuple[Image, dict[str, str]]:
        """Write every output, each from the image its options ask for
        (builder.export.run); returns the build's image and what was pushed."""
        from builder.export.run import run_outputs

        return run_outputs(self, assembler, chain, tags, specs, push)


def _check_stored(ref: Reference, what: str, check, body) -> None:
    """The store holds documents from OCI layouts and older pybuilds too,
    not only what passed the registry client's checks."""
    from builder.errors import RegistryError
    from builder.image_schema import SchemaError

    try:
        check(body)
    except SchemaError as exc:
        raise RegistryError(f"image {ref}: invalid {what}: {exc}") from None
