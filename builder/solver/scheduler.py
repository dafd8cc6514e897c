"""The solver: which steps to run, in what order, and in parallel.

It is generic: it sees vertex ids, their inputs, and for each vertex an
`OpImpl` that knows how to key and run that op. RUN, COPY and image pulls
live in builder/ops and are never imported here.

A solve has two phases:
1. plan (single thread, cheap): compute every needed vertex's cache key in
   dependency order, then walk down from the target: a vertex whose key is
   in the index is a hit and its inputs are not needed at all, so a fully
   cached build neither pulls, mounts nor runs anything;
2. run: the vertices that missed, each as soon as its inputs are done, on a
   bounded thread pool. The first failure sets the cancel event: running
   steps kill their processes and unmount, the rest never start.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    from concurrent.futures import Future

    import networkx as nx

    # Only named in annotations: builder.solver.progress, on the no-op memo's
    # replay, imports this module for Reporter and need not load the keys.
    from builder.solver.keys import CacheKey

Result = tuple  # a snapshot chain, bottom to top


class OpImpl(Protocol):
    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
        """The key of this op given its inputs' keys (may hash context files)."""

    def execute(self, inputs: Sequence[Result], cancel: threading.Event) -> Result:
        """Produce the result from the inputs' results."""


class Reporter:
    """No-op progress hooks; builder/solver/progress.py has the real displays."""

    def planned(self, vertex_id: str, cached: bool) -> None: ...
    def started(self, vertex_id: str) -> None: ...
    def output(self, vertex_id: str, data: bytes) -> None: ...
    def finished(self, vertex_id: str, error: BaseException | None, duration: float) -> None: ...


class ResultStore(Protocol):
    def lookup(self, key: CacheKey) -> Result | None: ...
    def record(self, key: CacheKey, result: Result) -> Result: ...


@dataclass(frozen=True)
class Solution:
    result: Result
    keys: Mapping[str, CacheKey]  # vertex id -> cache key
    cached: frozenset[str]  # vertices served from the cache
    executed: frozenset[str]


class Solver:
    def __init__(self, graph: nx.DiGraph, impl_for: Callable[[str], OpImpl], results: ResultStore,
                 reporter: Reporter | None = None, workers: int = 4,
                 on_cancel: Callable[[], None] = lambda: None,
                 on_result: Callable[[str, Result], None] = lambda vertex, result: None):
        self._graph = graph
        self._impl_for = impl_for
        self._results = results
        self._reporter = reporter or Reporter()
        self._workers = workers
        self._on_cancel = on_cancel
        self._on_result = on_result  # an executed (not cached) vertex's result, as recorded

    def inputs_of(self, vertex: str) -> tuple[str, ...]:
        return tuple(self._graph.nodes[vertex]["op"].inputs)

    def solve(self, target: str, *, force: Callable[[str], bool] = lambda v: False) -> Solution:
        import networkx as nx  # not at import time: builder.solver.progress needs Reporter, not the graph

        needed = nx.ancestors(self._graph, target) | {target}
        order = [v for v in nx.topological_sort(self._graph) if v in needed]
        impls = {v: self._impl_for(v) for v in order}
        keys: dict[str, CacheKey] = {}
        for vertex in order:
            try:
                keys[vertex] = impls[vertex].cache_key([keys[i] for i in self.inputs_of(vertex)])
            except Exception as exc:  # e.g. a COPY source that is not in the context
                raise _blame(exc, vertex)

        known: dict[str, Result] = {}
        to_run: set[str] = set()
        pending = [target]
        while pending:
            vertex = pending.pop()
            if vertex in known or vertex in to_run:
                continue
            hit = None if force(vertex) else self._results.lookup(keys[vertex])
            if hit is not None:
                known[vertex] = hit
                continue
            to_run.add(vertex)
            pending.extend(self.inputs_of(vertex))
        # Everything under a hit is as good as cached, and shown so.
        for vertex in order:
            if vertex not in to_run:
                self._reporter.planned(vertex, True)

        self._run(order, to_run, impls, keys, known)
        return Solution(known[target], keys, frozenset(known) - to_run, frozenset(to_run))

    def _run(self, order, to_run, impls, keys, known) -> None:
        if not to_run:
            return
        # Only here: a fully cached build (and the memo's replay, which
        # imports this module for Reporter) starts no pool and need not
        # import concurrent.futures and logging (~6 ms).
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        cancel = threading.Event()
        waiting = [v for v in order if v in to_run]
        running: dict[Future, str] = {}
        failure: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="pybuild-step")
        try:
            while waiting or running:
                if failure is None:
                    for vertex in list(waiting):
                        if all(i in known for i in self.inputs_of(vertex)):
                            waiting.remove(vertex)
                            inputs = [known[i] for i in self.inputs_of(vertex)]
                            future = pool.submit(self._execute, vertex, impls[vertex], keys[vertex], inputs, cancel)
                            running[future] = vertex
                elif not running:
                    break
                if not running:
                    raise RuntimeError("solver stalled: a vertex waits for inputs that never run")
                done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                for future in done:
                    vertex = running.pop(future)
                    error = future.exception()
                    if error is None:
                        known[vertex] = future.result()
                    elif failure is None:
                        failure = _blame(error, vertex)
                        self._cancel(cancel)
        except BaseException:
            # Ctrl-C or an internal error: let every running step clean up.
            self._cancel(cancel)
            wait(list(running))
            raise
        finally:
            pool.shutdown(wait=True)
        if failure is not None:
            raise failure

    def _cancel(self, cancel: threading.Event) -> None:
        cancel.set()
        self._on_cancel()  # e.g. kill the processes of running steps

    def _execute(self, vertex: str, impl: OpImpl, key: CacheKey, inputs, cancel: threading.Event) -> Result:
        if cancel.is_set():
            raise Cancelled()
        self._reporter.started(vertex)
        start = time.monotonic()
        try:
            result = impl.execute(inputs, cancel)
            result = self._results.record(key, result)
            self._on_result(vertex, result)
        except BaseException as exc:
            self._reporter.finished(vertex, exc, time.monotonic() - start)
            raise
        self._reporter.finished(vertex, None, time.monotonic() - start)
        return result




def _blame(error: BaseException, vertex: str) -> BaseException:
    """The error to raise for a step that failed with `error`: a StepFailed
    naming the step, so the build can show where in the Dockerfile it is (as
    BuildKit prints the instruction's lines). A bug (an error no input or
    host can cause) stays as it is, with its own traceback."""
    from builder.errors import StepFailed, expected_errors

    if isinstance(error, StepFailed) or not isinstance(error, expected_errors()):
        return error
    failed = StepFailed(vertex, None, error)
    failed.__cause__ = error  # as `raise ... from error`: the traceback shows both
    return failed


class Cancelled(Exception):
    """A step that did not start, or was stopped, because another failed."""
