"""One error base: what frontend/, cache/, runtime/ and the host raise
becomes a PybuildError where the builder meets it, keeping the message and
the original; what a step raises becomes a StepFailed naming the step."""

from __future__ import annotations

import threading

import pytest

from builder.errors import (DefinitionError, HostError, PybuildError, RegistryError, StepFailed, StoreError,
                            translated_errors)
from builder.solver.scheduler import Solver
from cache.errors import BlobNotFound
from frontend.definition import build_graph
from frontend.errors import ContextError, DockerfileError, Location
from frontend.ops import Exec, Scratch
from runtime.errors import ExecFailed, MountFailed


@pytest.mark.parametrize("raised, kind", [
    (DockerfileError("unknown instruction: RUNN", Location("Dockerfile", 2, 2)), DefinitionError),
    (ContextError("failed to read dockerfile"), DefinitionError),
    (BlobNotFound("sha256:" + "0" * 64), StoreError),
    (MountFailed("mount overlay: invalid argument"), HostError),
    (FileNotFoundError(2, "No such file or directory"), HostError),
])
def test_foreign_errors_become_pybuild_errors_with_the_same_message(raised, kind):
    with pytest.raises(kind) as caught:
        with translated_errors():
            raise raised
    assert str(caught.value) == str(raised)
    assert caught.value.cause is raised and caught.value.__cause__ is raised


def test_a_dockerfile_errors_location_is_the_translated_errors():
    with pytest.raises(DefinitionError) as caught:
        with translated_errors():
            raise DockerfileError("unknown instruction: RUNN", Location("Dockerfile", 2, 3))
    assert caught.value.location == Location("Dockerfile", 2, 3)
    assert str(caught.value).startswith("Dockerfile:2: ")
    with pytest.raises(DefinitionError) as caught:
        with translated_errors():
            raise ContextError("no place")
    assert caught.value.location is None


@pytest.mark.parametrize("raised", [RegistryError("unauthorized"), ValueError("a bug"), KeyboardInterrupt()])
def test_pybuild_errors_bugs_and_interrupts_pass_unchanged(raised):
    with pytest.raises(type(raised)) as caught:
        with translated_errors():
            raise raised
    assert caught.value is raised


class _Failing:
    """A step that fails with `error` (when it runs, or when it is keyed)."""

    def __init__(self, error, when="execute"):
        self.error, self.when = error, when

    def cache_key(self, input_keys):
        if self.when == "key":
            raise self.error
        return "k:" + "|".join(input_keys)

    def execute(self, inputs, cancel: threading.Event):
        raise self.error


class _Scratch:
    def cache_key(self, input_keys):
        return "scratch"

    def execute(self, inputs, cancel):
        return ()


class _NoResults:
    def lookup(self, key):
        return None

    def record(self, key, result):
        return result


def _solve(error, when="execute"):
    root = Scratch()
    step = Exec(inputs=(root.vertex_id,), args=("a",))
    graph = build_graph([root, step])
    impls = {root.vertex_id: _Scratch(), step.vertex_id: _Failing(error, when)}
    Solver(graph, impls.__getitem__, _NoResults()).solve(step.vertex_id)
    return step.vertex_id


@pytest.mark.parametrize("when", ["execute", "key"])
@pytest.mark.parametrize("error", [ExecFailed(["false"], 1), ContextError("COPY failed: file not found"),
                                   OSError(28, "No space left on device"), RegistryError("denied")])
def test_what_a_step_raises_is_a_step_failed_naming_the_step(error, when):
    with pytest.raises(StepFailed) as caught:
        _solve(error, when)
    failed = caught.value
    assert isinstance(failed, PybuildError)
    assert failed.cause is error and failed.__cause__ is error and str(failed) == str(error)
    assert failed.vertex.startswith("sha256:") and failed.location is None  # placed by builder.build
    assert failed.at(Location("Dockerfile", 3, 3)).location == Location("Dockerfile", 3, 3)


def test_a_bug_in_a_step_is_not_wrapped():
    with pytest.raises(TypeError, match="a bug"):
        _solve(TypeError("a bug"))
