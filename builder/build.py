"""The Python API: one call builds an image (the CLI is a thin layer on it).

    from builder import build
    result = build("testdata/hello", tags=["app"], root="/tmp/pb")
    print(result.image_id)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from builder.export.assemble import Assembler, ExportOptions
from builder.remotecache.control import CacheControl
from builder.context.trees import read_dockerfile_at
from builder.errors import PybuildError
from builder.root.gc import RootLock, auto_gc
from builder.image import Image
from builder.export.layers import EarlyLayers, LayerMaker
from builder.export.outputs import OutputSpec, parse_output
from builder.solver.progress import BuildReporter
from builder.registry.reference import Reference
from builder.solver.secrets import parse_secrets, parse_ssh
from builder.solver.session import BuildSession, SourceOptions, StepOptions
from builder.solver.scheduler import Solver
from builder.root.worker import Worker
from frontend.ops import NetworkMode, Platform
from runtime.limits import Limits


@dataclass(frozen=True)
class BuildResult:
    image: Image
    tags: tuple[str, ...]
    cached_steps: int
    executed_steps: int
    duration: float
    pushed: Mapping[str, str] = field(default_factory=dict)  # tag -> manifest digest

    @property
    def image_id(self) -> str:
        return str(self.image.config.digest)

    @property
    def manifest_digest(self) -> str:
        return str(self.image.manifest.digest)


def parse_platform(text: str | None) -> Platform:
    """`--platform`, read as the Dockerfile frontend reads `FROM --platform`."""
    from frontend.platforms import parse_platform as parse

    if not text:
        return Platform()
    try:
        return parse(text)
    except ValueError as exc:
        raise PybuildError(f"invalid platform: {exc}") from None  # the message quotes the value


def build(
    context: str | os.PathLike,
    *,
    dockerfile: str | os.PathLike | None = None,
    dockerfile_text: str | None = None,
    tags: Sequence[str] = (),
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    platform: str | None = None,
    outputs: Sequence[str | OutputSpec] = (),
    push: bool = False,
    root: str | os.PathLike | None = None,
    isolation: str | None = None,
    network: str = "host",
    no_cache: bool = False,
    no_cache_filter: str | Sequence[str] = (),
    explain: bool = False,
    cache_to: Sequence[str] = (),
    cache_from: Sequence[str] = (),
    pull: bool = False,
    secrets: Sequence[str] = (),
    ssh: Sequence[str] = (),
    memory: str | int | None = None,
    cpus: float | str | None = None,
    cpu_quota: int | None = None,
    cpu_period: int | None = None,
    pids_limit: int | None = None,
    ulimits: Sequence[str] = (),
    insecure_registries: Sequence[str] = (),
    registry_hosts=None,  # builder.registry.hosts.RegistryHosts; None: the config file pybuild finds
    gc_policy: Sequence = (),  # the config file's [[gc.policy]] (builder.root.gc.gc_rules)
    size_limits=None,  # builder.config.SizeLimits, the config file's [limits]; None: no cap
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    squash: bool = False,
    build_contexts: Sequence[str] = (),
    add_hosts: Sequence[str] = (),
    reporter: BuildReporter | None = None,
    observer=None,
) -> BuildResult:
    """`observer` (a builder.root.memo.Observer) is told what the build read.
    `build_contexts`: `NAME=DIR`, `NAME=docker-image://REF` or
    `NAME=oci-layout://PATH[:TAG][@DIGEST]` (--build-context);
    `add_hosts`: `HOST:IP` (--add-host)."""
    from builder.context.inputs import parse_build_contexts

    started = time.monotonic()
    reporter = reporter or BuildReporter()
    context_dir = Path(context)
    if not context_dir.is_dir():
        raise PybuildError(f"build context {context} is not a directory")
    dockerfile_path = Path(dockerfile) if dockerfile else context_dir / "Dockerfile"
    if dockerfile_text is None:
        dockerfile_text = read_dockerfile_at(dockerfile_path)
    specs = [o if isinstance(o, OutputSpec) else parse_output(o) for o in outputs]
    tags = tuple(str(Reference.parse(t)) for t in tags)
    if network not in ("host", "none", "default"):
        raise PybuildError(f"invalid --network {network!r}: expected default, host or none")
    limits = _limits(memory, cpus, cpu_quota, cpu_period, pids_limit, ulimits)
    named_contexts = parse_build_contexts(build_contexts)
    extra_hosts = parse_add_hosts(add_hosts)
    target_platform = parse_platform(platform)
    cache_control = CacheControl.parse(no_cache=no_cache, no_cache_filter=no_cache_filter, explain=explain,
                                       cache_to=cache_to, cache_from=cache_from)
    # absolute from here on, as the CLI's (builder.config.resolve)
    worker = Worker.open(Path(os.path.abspath(root)) if root else None, isolation)
    lease = RootLock(worker.root, exclusive=False)  # prune waits for running builds
    try:
        session = BuildSession.open(
            worker, reporter,
            SourceOptions(context_dir, dockerfile_path, target_platform, named_contexts, pull=pull,
                          insecure_registries=tuple(insecure_registries), registry_hosts=registry_hosts),
            StepOptions(NetworkMode(network), parse_secrets(secrets), limits=limits, size_limits=size_limits),
            parse_ssh(ssh), observer)
        early = None
        try:
            definition = session.convert(
                dockerfile_text,
                path=dockerfile_path.name if dockerfile is None else str(dockerfile),
                build_args=dict(build_args or {}),
                target=target,
                explicit_platform=bool(platform),
                extra_hosts=extra_hosts,
            )
            reporter.set_names(definition.metadata)
            for warning in definition.warnings:
                reporter.warning(str(warning))
            for name in definition.unused_build_args:
                reporter.warning(f"[UnusedBuildArg] build argument {name!r} was not consumed by any stage")
            results = cache_control.prepare(definition, session, worker, reporter, str(target_platform))
            layers = LayerMaker(worker.store, worker.index, worker.snapshots)
            # The default output is the local store: its layers are known
            # (uncompressed, mtimes as they are) before the last step ends.
            early = EarlyLayers(layers, _lineage(definition)) if not specs else None
            solver = Solver(definition.graph, session.op_impls(definition), results, reporter,
                            on_cancel=session.executor.cancel,
                            on_result=early.step_done if early else lambda vertex, result: None)
            try:
                solution = solver.solve(definition.target, force=cache_control.force)
            except Exception as exc:
                meta = definition.metadata.get(getattr(exc, "vertex", None))
                if meta is not None and meta.location is not None:
                    exc.location = meta.location  # the CLI shows those Dockerfile lines
                raise
            cache_control.after_solve(definition, session, solution, reporter, build_args, target)
            if observer is not None:
                _observe_solution(observer, definition, solution, reporter)
            created = session.results.created(solution.keys[definition.target])
            # One image per output's export options (builder.export.run).
            assembler = Assembler(worker.store, layers,
                                  definition.image, solution.result, created,
                                  ExportOptions(labels=tuple((labels or {}).items()),
                                                annotations=tuple((annotations or {}).items()),
                                                source_date_epoch=_epoch(build_args), squash=squash),
                                  snapshots=worker.snapshots, tmp=session.tmp)
            assembler = cache_control.wrap_assembler(assembler, worker, solution, definition)
            image, pushed = session.export(assembler, solution.result, tags, specs, push)
            cache_control.export(session, worker, solution, definition, image, reporter)
        finally:
            if early is not None:
                early.close()  # on failure: stops a layer still being made
            session.close()
        lease.release()
        auto_gc(worker, reporter, gc_policy)
    finally:
        lease.release()
        worker.close()
    return BuildResult(image, tags, len(solution.cached), len(solution.executed), time.monotonic() - started, pushed)


def _lineage(definition) -> set[str]:
    """The target's own steps: each op's inputs[0] is the filesystem it
    builds on, down to the stage's source."""
    chain, vertex = set(), definition.target
    while True:
        chain.add(vertex)
        inputs = definition.op(vertex).inputs
        if not inputs:
            return chain
        vertex = inputs[0]


def _observe_solution(observer, definition, solution, reporter) -> None:
    from frontend import ops

    observer.target_key = solution.keys[definition.target]
    observer.steps = [[vertex, reporter.name_of(vertex)] for vertex in solution.keys]
    if any(isinstance(definition.op(v), (ops.HttpSource, ops.GitSource)) for v in solution.keys):
        observer.refuse()  # BuildKit asks the remote again on every build


def parse_add_hosts(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--add-host HOST:IP` (or HOST=IP, as docker also takes it; an IPv6
    address may be bracketed) as (host, ip) pairs, in the order given."""
    import ipaddress

    hosts = []
    for value in values:
        host, sep, ip = value.partition("=")
        if not sep:
            host, sep, ip = value.partition(":")
        ip = ip.removeprefix("[").removesuffix("]")
        if not sep or not host or not ip or any(c.isspace() for c in host):
            raise PybuildError(f"invalid --add-host {value!r}: expected HOST:IP")
        if ip == "host-gateway":
            raise PybuildError(f"invalid --add-host {value!r}: host-gateway is the docker daemon's own "
                               "address and pybuild has no daemon; give the IP address")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise PybuildError(f"invalid --add-host {value!r}: {ip!r} is not an IP address") from None
        hosts.append((host, ip))
    return tuple(hosts)


def _limits(memory, cpus, cpu_quota, cpu_period, pids_limit, ulimits) -> Limits | None:
    """RUN's resource limits (docker build's --memory, --cpus...), or None."""
    from runtime.limits import LimitError, cpus_to_quota, parse_memory, parse_ulimit

    try:
        if cpus is not None:
            if cpu_quota is not None:
                raise LimitError("--cpus and --cpu-quota cannot be used together")
            cpu_quota, cpu_period = cpus_to_quota(cpus)
        limits = Limits(memory=parse_memory(memory) if memory is not None else None, cpu_quota=cpu_quota,
                        cpu_period=cpu_period, pids=pids_limit,
                        ulimits=tuple(parse_ulimit(u) for u in ulimits))
    except LimitError as exc:
        raise PybuildError(str(exc)) from None
    return limits or None


def _epoch(build_args) -> int | None:
    value = (build_args or {}).get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise PybuildError(f"invalid SOURCE_DATE_EPOCH {value!r}: expected seconds since 1970") from None
