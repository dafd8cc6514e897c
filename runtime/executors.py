"""Choosing an executor: the names usable on this host, and the factory.

Its own module so that the executors (runtime.builtin, runtime.oci) import
what they share from runtime.executor without that module importing them
back.
"""

from __future__ import annotations

from typing import Callable

from runtime.builtin import BuiltinExecutor
from runtime.errors import RuntimeFailure
from runtime.oci import OciExecutor, find_runtime

__all__ = ["UnknownExecutor", "available_executors", "default_isolation", "get_executor"]


class UnknownExecutor(RuntimeFailure, ValueError):
    pass


def available_executors() -> dict[str, Callable[[], object]]:
    """Executor name → factory, for the executors usable on this host."""
    found: dict[str, Callable[[], object]] = {"builtin": BuiltinExecutor}
    runtime = find_runtime()
    if runtime is not None:
        found["oci"] = lambda: OciExecutor(runtime)
    return found


def default_isolation() -> str:
    return "oci" if "oci" in available_executors() else "builtin"


def get_executor(name: str):
    factories = available_executors()
    if name not in factories:
        if name == "oci":
            raise UnknownExecutor("executor oci needs runc or crun on PATH")
        raise UnknownExecutor(f"unknown executor {name!r}: choose builtin or oci")
    return factories[name]()
