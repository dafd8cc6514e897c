"""A build's graphs: one per target platform (`--platform linux/amd64,linux/arm64`).

As in BuildKit, each platform is its own graph: the Dockerfile converted
with that platform's TARGET* arguments (BUILD* stay the host's), solved
against the one root. A build for one platform is the case of one graph
(builder/build.py runs both through here). With several, the steps every
graph has (the same vertex: a `FROM --platform=$BUILDPLATFORM` stage) are
solved first, once; then the platforms' graphs are solved at once, each on
its own thread, and find those steps in the root's cache. Their images then
form one image index (builder/export/multi.py), and their steps are named
with the platform, as BuildKit names them: `[linux/arm64 build 2/5] RUN make`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from builder.errors import StepFailed
from builder.export.assemble import Assembler
from builder.remotecache.control import CacheControl
from builder.solver.scheduler import Solver
from builder.solver.session import BuildSession
from frontend.ops import Platform


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


class Plan:
    """One platform's graph, converted and ready to solve, with its own
    cache options (they keep the graph's forced steps)."""

    def __init__(self, platform: Platform, session: BuildSession, definition, control: CacheControl):
        self.platform = platform
        self.session = session
        self.definition = definition
        self.control = control
        self.solver: Solver | None = None
        self.solution = None

    @property
    def needed(self) -> set[str]:
        import networkx as nx

        return nx.ancestors(self.definition.graph, self.definition.target) | {self.definition.target}

    def solver_for(self, worker, reporter, on_result=None) -> Solver:
        """`reporter`: one build's, or a ShownOnce for several platforms."""
        results = self.control.prepare(self.definition, self.session, worker, reporter, str(self.platform))
        self.solver = Solver(self.definition.graph, self.session.op_impls(self.definition), results, reporter,
                             on_cancel=self.session.executor.cancel,
                             on_result=on_result or (lambda vertex, result: None))
        return self.solver


class ShownOnce:
    """A build's reporter as several platforms' graphs see it: a step they
    share, once solved (or found cached), is not shown again as each graph
    finds it cached, as BuildKit shows a vertex once; nor a warning each
    graph gives (a --cache-from that cannot be read, read for each)."""

    def __init__(self, inner):
        self._inner = inner
        self._shown: set[str] = set()
        self._lock = threading.Lock()  # the graphs are solved on threads at once

    def _first(self, what: str) -> bool:
        with self._lock:
            first = what not in self._shown
            self._shown.add(what)
            return first

    def warning(self, text: str) -> None:
        if self._first("warning:" + text):
            self._inner.warning(text)

    def planned(self, vertex: str, cached: bool) -> None:
        if self._first(vertex):
            self._inner.planned(vertex, cached)

    def started(self, vertex: str) -> None:
        self._first(vertex)
        self._inner.started(vertex)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def convert(session: BuildSession, platform: Platform, control: CacheControl, dockerfile_text: str, *,
            path: str, build_args, target, explicit_platform: bool, extra_hosts, named: bool) -> Plan:
    """Convert the Dockerfile for `platform`; `named`: its steps' names
    carry the platform (a build for several)."""
    definition = session.convert(dockerfile_text, path=path, build_args=build_args, target=target,
                                 explicit_platform=explicit_platform, extra_hosts=extra_hosts)
    if named:
        definition = replace(definition, metadata={vertex: _on(platform, meta)
                                                   for vertex, meta in definition.metadata.items()})
    return Plan(platform, session, definition, control)


def name_shared(planned: list[Plan]) -> None:
    """A step several platforms' graphs have (the same vertex) runs once and
    is shown once: every graph names it as the first platform's does."""
    first = planned[0].definition.metadata
    for plan in planned[1:]:
        own = plan.definition.metadata
        if any(vertex in first for vertex in own):
            plan.definition = replace(plan.definition, metadata={
                vertex: first.get(vertex, meta) for vertex, meta in own.items()})


def show_warnings(planned: list[Plan], reporter) -> None:
    """Each graph's warnings, once though several platforms' graphs find it."""
    shown: set[str] = set()
    for plan in planned:
        texts = [str(w) for w in plan.definition.warnings]
        texts += [f"[UnusedBuildArg] build argument {name!r} was not consumed by any stage"
                  for name in plan.definition.unused_build_args]
        for text in texts:
            if text not in shown:
                reporter.warning(text)
        shown.update(texts)


def solve(planned: list[Plan]) -> None:
    """Solve every plan, setting each one's `solution`. The steps solved
    once for all platforms count as the first platform's: they ran there
    (its --explain says why), the others found them cached."""
    if len(planned) == 1:
        plan = planned[0]
        plan.solution = _solved(plan, plan.definition.target, plan.control.force)
        return
    shared = _solve_shared(planned)
    for plan, solution in zip(planned, _solve_all(planned, shared)):
        plan.solution = solution
    first = planned[0].solution
    planned[0].solution = replace(first, cached=first.cached - shared, executed=first.executed | shared)


def _solve_shared(planned: list[Plan]) -> set[str]:
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


def _solve_all(planned: list[Plan], shared: set[str]):
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


def _solved(plan: Plan, target: str, force):
    try:
        return plan.solver.solve(target, force=force)
    except StepFailed as failed:
        meta = plan.definition.metadata.get(failed.vertex)
        if meta is None or meta.location is None:
            raise
        raise failed.at(meta.location) from failed.cause  # the CLI shows those Dockerfile lines


def assembled(plan: Plan, worker, layers, defaults) -> PlatformBuild:
    """The plan's images (one per output's options), with its inline cache
    records when --cache-to type=inline asks for them."""
    solution, definition = plan.solution, plan.definition
    created = plan.session.results.created(solution.keys[definition.target])
    assembler = Assembler(worker.store, layers, definition.image, solution.result, created, defaults,
                          snapshots=worker.snapshots, tmp=plan.session.tmp)
    assembler = plan.control.wrap_assembler(assembler, worker, solution, definition)
    return PlatformBuild(plan.platform, plan.session, solution.result, assembler, len(solution.cached),
                         len(solution.executed))


def _on(platform: Platform, meta):
    """A step's name as BuildKit shows it in a build for several platforms:
    `[linux/arm64 build 2/5] RUN make`."""
    if meta.name.startswith("["):
        return replace(meta, name=f"[{platform} {meta.name[1:]}")
    return replace(meta, name=f"[{platform}] {meta.name}")
