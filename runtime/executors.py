"""Choosing an executor: the names usable on this host, and the factory.

Its own module so that the executors (runtime.builtin, runtime.oci,
runtime.chroot) import what they share from runtime.executor without that
module importing them back.

`chroot` is never the default, as in buildah (whose default is oci, and
whose container image asks for chroot with BUILDAH_ISOLATION): it is
weaker (docs/isolation.md), and a host that cannot run the others is
better told so than quietly given less. When builtin or oci fails a step
on a host that refuses the namespaces they need, the error says so and
names `--isolation chroot`.
"""

from __future__ import annotations

from typing import Callable

from runtime.builtin import BuiltinExecutor
from runtime.chroot import ChrootExecutor, permitted_namespaces
from runtime.errors import ExecFailed, RuntimeFailure
from runtime.executor import SandboxFailed
from runtime.oci import OciExecutor, find_runtime

__all__ = ["NamespacesRefused", "UnknownExecutor", "available_executors", "default_isolation", "get_executor"]


class UnknownExecutor(RuntimeFailure, ValueError):
    pass


class NamespacesRefused(SandboxFailed):
    """builtin or oci on a host where they cannot work: no mount namespace."""


def available_executors() -> dict[str, Callable[[], object]]:
    """Executor name → factory, for the executors usable on this host."""
    found: dict[str, Callable[[], object]] = {"builtin": _Builtin}
    runtime = find_runtime()
    if runtime is not None:
        found["oci"] = lambda: _Oci(runtime)
    found["chroot"] = ChrootExecutor
    return found


def default_isolation() -> str:
    return "oci" if "oci" in available_executors() else "builtin"


def get_executor(name: str):
    factories = available_executors()
    if name not in factories:
        if name == "oci":
            raise UnknownExecutor("executor oci needs runc or crun on PATH")
        raise UnknownExecutor(f"unknown executor {name!r}: choose builtin, oci or chroot")
    return factories[name]()


class _NamesChroot:
    """A mixin for builtin and oci: their failures are checked against the
    host when they could come from a refused namespace. The probe (~20 ms)
    runs only then, so a working host pays nothing for it."""

    name: str

    def run(self, spec, rootfs, output) -> None:
        try:
            super().run(spec, rootfs, output)
        except (SandboxFailed, ExecFailed) as exc:
            permitted = permitted_namespaces()
            if "mount" in permitted and "pid" in permitted:
                raise
            raise NamespacesRefused(
                f"isolation {self.name} needs mount and pid namespaces, which this process may not create "
                f"(no CAP_SYS_ADMIN, or a seccomp profile refusing unshare: an unprivileged container?): "
                f"use --isolation chroot, which is weaker (docs/isolation.md)") from exc


class _Builtin(_NamesChroot, BuiltinExecutor):
    pass


class _Oci(_NamesChroot, OciExecutor):
    pass
