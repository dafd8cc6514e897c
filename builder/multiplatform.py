"""Several target platforms in one build (`--platform linux/amd64,linux/arm64`).

As in BuildKit, each platform is its own graph: the Dockerfile converted
with that platform's TARGET* arguments (BUILD* stay the host's), solved
against the one root. The steps every graph has (the same vertex: a
`FROM --platform=$BUILDPLATFORM` stage) are solved first, once; then the
platforms' graphs are solved at once, each on its own thread, and find
those steps in the root's cache. The images then form one image index
(builder/export/multi.py).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from builder.errors import PybuildError, StepFailed
from builder.export.assemble import Assembler, ExportOptions
from builder.export.layers import LayerMaker
from builder.export.outputs import OutputSpec, OutputType, parse_output
from builder.registry.reference import Reference
from builder.remotecache.control import CacheControl
from builder.root.gc import auto_gc
from builder.root.lock import RootLock
from builder.root.worker import Worker
from builder.solver.scheduler import Solver
from builder.solver.secrets import parse_secrets, parse_ssh
from builder.solver.session import BuildSession, SourceOptions, StepOptions
from frontend.ops import NetworkMode, Platform


@dataclass
class PlatformBuild:
    """One platform's solved graph: its session (open until the outputs are
    written), its snapshot chain and the assembler of its images."""

    platform: Platform
    session: BuildSession
    chain: object
    assembler: Assembler
    cached: int
    executed: int


def build_platforms(request, platforms: list[Platform], reporter, observer, dockerfile_path: Path,
                    dockerfile_text: str, *, limits, extra_hosts, epoch: int | None):
    """`_build` for several platforms (`limits`, `extra_hosts` and `epoch`
    are the request's, as builder.build reads them): returns the first
    platform's image, the image index's descriptor, what was pushed (tag ->
    index digest) and the steps served from the cache and executed."""
    from builder.context.inputs import parse_build_contexts
    from builder.export.multi import run_platform_outputs

    if observer is not None:
        observer.refuse()  # the memo keeps one image, not an index
    context_dir = Path(request.context)
    specs = [o if isinstance(o, OutputSpec) else parse_output(o) for o in request.outputs]
    tags = tuple(str(Reference.parse(t)) for t in request.tags)
    if request.network not in ("host", "none", "default"):
        raise PybuildError(f"invalid --network {request.network!r}: expected default, host or none")
    if request.cache_to or request.cache_from or request.explain:
        raise PybuildError("--cache-to, --cache-from and --explain take one --platform for now")
    if any(spec.type is OutputType.DOCKER for spec in specs):
        from builder.export.multi import DOCKER_REFUSAL

        raise PybuildError(DOCKER_REFUSAL)
    if request.squash:
        raise PybuildError("--squash takes one --platform for now")
    named_contexts = parse_build_contexts(request.build_contexts)

    def cache_control() -> CacheControl:  # each graph its own: it keeps the graph's forced steps
        return CacheControl.parse(no_cache=request.no_cache, no_cache_filter=request.no_cache_filter,
                                  explain=False, cache_to=(), cache_from=())

    build_args = dict(request.build_args or {})
    defaults = ExportOptions(labels=tuple((request.labels or {}).items()),
                             annotations=tuple((request.annotations or {}).items()),
                             source_date_epoch=epoch)
    worker = Worker.open(Path(os.path.abspath(request.root)) if request.root else None, request.isolation)
    lease = RootLock(worker.root, exclusive=False)  # prune waits for running builds
    try:
        with ExitStack() as sessions:
            layers = LayerMaker(worker.store, worker.index, worker.snapshots)
            planned = []
            warned: set[str] = set()

            def warn(text: str) -> None:  # once, though each platform's graph finds it
                if text not in warned:
                    warned.add(text)
                    reporter.warning(text)

            for platform in platforms:
                session = BuildSession.open(
                    worker, reporter,
                    SourceOptions(context_dir, dockerfile_path, platform, named_contexts, pull=request.pull,
                                  insecure_registries=tuple(request.insecure_registries),
                                  registry_hosts=request.registry_hosts),
                    StepOptions(NetworkMode(request.network), parse_secrets(request.secrets), limits=limits,
                                size_limits=request.size_limits),
                    parse_ssh(request.ssh), None)
                sessions.callback(session.close)
                planned.append(_plan(request, session, worker, reporter, cache_control(), platform, build_args,
                                     dockerfile_path, dockerfile_text, extra_hosts, warn))
            reporter.set_names({vertex: meta for plan in reversed(planned) for vertex, meta in plan.names.items()})
            shared_executed = _solve_shared(planned)
            solutions = _solve_all(planned, shared_executed)
            built = [_assembled(plan, solution, worker, layers, defaults)
                     for plan, solution in zip(planned, solutions)]
            built[0].executed += len(shared_executed)
            index, image, pushed = run_platform_outputs(built, tags, specs, request.push)
        lease.release()
        auto_gc(worker, reporter, request.gc_policy)
    finally:
        lease.release()
        worker.close()
    return image, index, pushed, sum(b.cached for b in built), sum(b.executed for b in built)


class _Plan:
    """One platform's graph, converted and ready to solve."""

    def __init__(self, platform: Platform, session: BuildSession, definition, solver: Solver, control):
        self.platform = platform
        self.control = control
        self.session = session
        self.definition = definition
        self.solver = solver
        self.names = {vertex: _on(platform, meta) for vertex, meta in definition.metadata.items()}

    @property
    def needed(self) -> set[str]:
        import networkx as nx

        return nx.ancestors(self.definition.graph, self.definition.target) | {self.definition.target}


def _plan(request, session: BuildSession, worker, reporter, cache_control, platform: Platform, build_args,
          dockerfile_path: Path, dockerfile_text: str, extra_hosts, warn) -> _Plan:
    definition = session.convert(
        dockerfile_text,
        path=dockerfile_path.name if request.dockerfile is None else str(request.dockerfile),
        build_args=build_args, target=request.target, explicit_platform=True, extra_hosts=extra_hosts)
    for warning in definition.warnings:
        warn(str(warning))
    for name in definition.unused_build_args:
        warn(f"[UnusedBuildArg] build argument {name!r} was not consumed by any stage")
    results = cache_control.prepare(definition, session, worker, reporter, str(platform))
    solver = Solver(definition.graph, session.op_impls(definition), results, reporter,
                    on_cancel=session.executor.cancel)
    return _Plan(platform, session, definition, solver, cache_control)


def _solve_shared(planned: list[_Plan]) -> set[str]:
    """Solve first, once, the steps every platform's graph has (the same
    vertex: the same op on the same inputs, as a `FROM --platform=$BUILDPLATFORM`
    stage is): the platforms' solves then find them in the cache. Returns
    the steps that ran."""
    first = planned[0]
    shared = set.intersection(*(plan.needed for plan in planned))
    graph = first.definition.graph
    tops = [v for v in graph if v in shared and not any(s in shared for s in graph.successors(v))]
    executed: set[str] = set()
    for vertex in tops:  # a step two of them read is solved by the first, then found in the cache
        solution = _solved(first, vertex, lambda v: v not in executed and first.control.force(v))
        executed |= solution.executed
    return executed


def _solve_all(planned: list[_Plan], shared: set[str]):
    """Each platform's graph solved on its own thread, at once (RUN steps
    of different platforms run side by side, as BuildKit's); a failure or
    an interrupt stops the others' steps."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=len(planned), thread_name_prefix="pybuild-platform") as pool:
        futures = [pool.submit(_solved, plan, plan.definition.target,
                               lambda v, plan=plan: v not in shared and plan.control.force(v)) for plan in planned]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f.done() and f.exception() is not None), None)
            if failed is not None:
                raise failed.exception()
            return [future.result() for future in futures]
        except BaseException:
            for plan in planned:
                plan.session.executor.cancel()
            raise


def _solved(plan: _Plan, target: str, force):
    try:
        return plan.solver.solve(target, force=force)
    except StepFailed as failed:
        meta = plan.definition.metadata.get(failed.vertex)
        if meta is None or meta.location is None:
            raise
        raise failed.at(meta.location) from failed.cause


def _assembled(plan: _Plan, solution, worker, layers, defaults) -> PlatformBuild:
    created = plan.session.results.created(solution.keys[plan.definition.target])
    assembler = Assembler(worker.store, layers, plan.definition.image, solution.result, created, defaults,
                          snapshots=worker.snapshots, tmp=plan.session.tmp)
    return PlatformBuild(plan.platform, plan.session, solution.result, assembler, len(solution.cached),
                         len(solution.executed))


def _on(platform: Platform, meta):
    """A step's name as BuildKit shows it in a build for several platforms:
    `[linux/arm64 build 2/5] RUN make`."""
    from dataclasses import replace

    if meta.name.startswith("["):
        return replace(meta, name=f"[{platform} {meta.name[1:]}")
    return replace(meta, name=f"[{platform}] {meta.name}")
