"""What an executor is asked to run: a plain record, as BuildKit's `Meta`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from runtime.limits import Limits


class NetworkMode(enum.Enum):
    NONE = "none"  # a new network namespace with only lo
    HOST = "host"  # the host's network namespace


@dataclass(frozen=True)
class BindMount:
    """`source` is a host path (a snapshot view, a cache dir, a secret file)."""

    source: Path
    target: str
    readonly: bool = True
    # nosuid, nodev and noexec: what BuildKit puts on the files it makes
    # for a step (secrets, /etc/hosts, /etc/resolv.conf)
    sealed: bool = False


@dataclass(frozen=True)
class TmpfsMount:
    target: str
    size: int | None = None  # bytes


Mount = BindMount | TmpfsMount


@dataclass(frozen=True)
class ExecSpec:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()  # "KEY=value"
    cwd: str = "/"
    user: str = ""  # resolved against the rootfs's /etc/passwd and /etc/group
    hostname: str = "buildkitsandbox"
    network: NetworkMode = NetworkMode.HOST
    mounts: tuple[Mount, ...] = ()
    limits: Limits | None = None  # memory, cpu, pids (cgroups) and rlimits
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (host, ip) lines added to /etc/hosts


OutputSink = Callable[[bytes], None]


class Executor(Protocol):
    name: str

    def run(self, spec: ExecSpec, rootfs: Path, output: OutputSink) -> None:
        """Run spec.args inside `rootfs` (a mounted, writable directory) and
        wait for it. Every byte the process writes to stdout/stderr is passed
        to `output` as it arrives. Raises ExecFailed on a non-zero exit or a
        signal. On return or on any exception (KeyboardInterrupt included) no
        process of the step survives and nothing stays mounted."""


    def cancel(self) -> None:
        """Kill every run in flight (from any thread); each raises ExecCancelled."""


class Snapshotter(Protocol):
    def create(self) -> str:
        """A new, empty snapshot; returns its id (its directory under root)."""

    def fs_path(self, snapshot_id: str) -> Path:
        """The snapshot's diff directory (overlay upperdir form)."""

    def mount(self, lowers: Sequence[str], upper: str | None = None):
        """Context manager yielding the merged view of `lowers` (bottom to
        top) with `upper` as the writable layer, or read-only when upper is
        None. Unmounts on exit, whatever happened."""

    def remove(self, snapshot_id: str) -> None:
        ...
