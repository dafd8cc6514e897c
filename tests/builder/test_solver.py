"""The solver's algorithm, with counting fake ops (an algorithm test: the
real ops are exercised end to end elsewhere)."""

import time

import pytest

from builder.solver.scheduler import Cancelled, Solver
from frontend.definition import build_graph
from frontend.ops import Exec, Scratch


class MemoryResults:
    def __init__(self):
        self.entries = {}

    def lookup(self, key):
        return self.entries.get(key)

    def record(self, key, result):
        return self.entries.setdefault(key, result)


class CountingImpl:
    def __init__(self, op, log, fail=None, delay=0.0):
        self.op = op
        self.log = log
        self.fail = fail
        self.delay = delay

    def cache_key(self, input_keys):
        return "k:" + "|".join([",".join(self.op.args), *input_keys])

    def execute(self, inputs, cancel):
        self.log.append(self.op.args)
        deadline = time.monotonic() + self.delay
        while time.monotonic() < deadline:
            if cancel.is_set():
                raise Cancelled()
            time.sleep(0.01)
        if self.fail:
            raise RuntimeError(self.fail)
        return tuple(x for chain in inputs for x in chain) + (self.op.args[0],)


def chain_graph():
    root = Scratch()
    a = Exec(inputs=(root.vertex_id,), args=("a",))
    b = Exec(inputs=(a.vertex_id,), args=("b",))
    c = Exec(inputs=(root.vertex_id,), args=("c",))
    d = Exec(inputs=(b.vertex_id, c.vertex_id), args=("d",))
    return build_graph([root, a, b, c, d]), d.vertex_id


def make_solver(graph, results, log, **impl_kwargs):
    def impl_for(vertex):
        op = graph.nodes[vertex]["op"]
        if isinstance(op, Scratch):
            return ScratchImpl()
        kwargs = impl_kwargs.get(op.args[0], {})
        return CountingImpl(op, log, **kwargs)

    return Solver(graph, impl_for, results)


class ScratchImpl:
    def cache_key(self, input_keys):
        return "scratch"

    def execute(self, inputs, cancel):
        return ()


def test_second_solve_executes_nothing():
    graph, target = chain_graph()
    results, log = MemoryResults(), []
    first = make_solver(graph, results, log).solve(target)
    assert sorted(log) == [("a",), ("b",), ("c",), ("d",)]
    log.clear()
    second = make_solver(graph, results, log).solve(target)
    assert log == []
    assert second.result == first.result
    assert target in second.cached and not second.executed


def test_hit_on_target_needs_no_inputs():
    graph, target = chain_graph()
    results, log = MemoryResults(), []
    make_solver(graph, results, log).solve(target)
    # Forget the intermediate results: the target's own hit is enough.
    keep = {k: v for k, v in results.entries.items() if k.startswith("k:d")}
    results.entries = keep
    log.clear()
    make_solver(graph, results, log).solve(target)
    assert log == []


def test_force_reruns_everything():
    graph, target = chain_graph()
    results, log = MemoryResults(), []
    make_solver(graph, results, log).solve(target)
    log.clear()
    make_solver(graph, results, log).solve(target, force=lambda v: True)
    assert len(log) == 4


def test_independent_branches_run_in_parallel():
    graph, target = chain_graph()
    log = []
    solver = make_solver(graph, MemoryResults(), log, b={"delay": 0.4}, c={"delay": 0.4})
    start = time.monotonic()
    solver.solve(target)
    # b waits for a; c runs beside a and b: well under the serial 0.8 s.
    assert time.monotonic() - start < 0.75


def test_first_failure_cancels_the_rest():
    graph, target = chain_graph()
    log = []
    solver = make_solver(graph, MemoryResults(), log, c={"fail": "boom"}, a={"delay": 5.0})
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="boom"):
        solver.solve(target)
    assert time.monotonic() - start < 2.0
    assert ("d",) not in log
