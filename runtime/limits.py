"""Resource limits of a RUN step: memory, CPU, pids (cgroups) and rlimits.

`Limits` is the plain record an `ExecSpec` carries. The two executors apply
it in their own way:
- builtin: `StepCgroup` makes one cgroup per step below pybuild's own
  cgroup, writes the limits, and the sandbox helper moves itself into it
  before it makes any process (so nothing of the step escapes the limits);
  the rlimits are set by the helper before exec;
- oci: `oci_resources` / `oci_rlimits` fill config.json's
  `linux.resources` and `process.rlimits`; runc or crun make the cgroup.

Both cgroup versions are handled, per controller: a controller enabled in
a cgroup2 mount is used there, else its cgroup v1 hierarchy (hosts in
"hybrid" mode mount v1 controllers at /sys/fs/cgroup/{memory,pids,cpu} and
an empty cgroup2 at /sys/fs/cgroup/unified).
"""

from __future__ import annotations

import errno
import marshal
import math
import os
import re
import resource
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runtime.errors import ExecFailed, RuntimeFailure
from runtime.supervise import write_record
from runtime.userns import in_user_namespace

__all__ = ["Limits", "Ulimit", "LimitError", "OutOfMemory", "parse_memory", "parse_ulimit", "cpus_to_quota",
           "oci_resources", "oci_rlimits", "require_cgroups", "require_raisable", "run_limited", "StepCgroup"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_MIN_MEMORY = 6 << 20  # docker's minimum: below it even the shell cannot start
DEFAULT_CPU_PERIOD = 100_000  # microseconds, the kernel's and docker's default
_RLIMITS = {
    "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA", "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK", "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS",
    "rtprio": "RLIMIT_RTPRIO", "rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING",
    "stack": "RLIMIT_STACK", "as": "RLIMIT_AS",
}
_REMOVE_TIMEOUT = 10.0


class LimitError(RuntimeFailure, ValueError):
    """An invalid limit, or limits this host cannot enforce."""


class OutOfMemory(ExecFailed):
    """A RUN killed by the kernel's OOM killer at its memory limit."""

    def __init__(self, args, exit_code, signal_number, tail: str, limit: int, certain: bool):
        super().__init__(args, exit_code, signal_number, tail)
        self.limit = limit
        why = "it ran out of memory" if certain else "most likely out of memory (killed by SIGKILL)"
        self.args = (f"process {_quote(self.argv)} did not complete successfully: {why}: "
                     f"memory limit {_human(limit)} (--memory)",)


@dataclass(frozen=True)
class Ulimit:
    name: str  # "nofile", "nproc"... as docker's --ulimit
    soft: int  # -1: unlimited
    hard: int

    @property
    def resource(self) -> int:
        return getattr(resource, _RLIMITS[self.name])


@dataclass(frozen=True)
class Limits:
    memory: int | None = None  # bytes; swap is limited to the same (no swap)
    cpu_quota: int | None = None  # microseconds of CPU per period
    cpu_period: int | None = None  # microseconds
    pids: int | None = None
    ulimits: tuple[Ulimit, ...] = ()

    def __post_init__(self):
        if self.memory is not None and self.memory < _MIN_MEMORY:
            raise LimitError(f"invalid --memory {self.memory}: the minimum is {_human(_MIN_MEMORY)}")
        if self.cpu_quota is not None and self.cpu_quota < 1000:
            raise LimitError(f"invalid --cpu-quota {self.cpu_quota}: the minimum is 1000 (1ms)")
        if self.cpu_period is not None and not 1000 <= self.cpu_period <= 1_000_000:
            raise LimitError(f"invalid --cpu-period {self.cpu_period}: between 1000 and 1000000")
        if self.pids is not None and self.pids < 1:
            raise LimitError(f"invalid --pids-limit {self.pids}: must be positive")

    @property
    def needs_cgroup(self) -> bool:
        return self.memory is not None or self.cpu_quota is not None or self.pids is not None

    def __bool__(self) -> bool:
        return self.needs_cgroup or bool(self.ulimits)


def parse_memory(text: str | int) -> int:
    """docker's sizes: `512m`, `1g`, `1048576` (bytes), case-insensitive."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", text.lower())
    if not match:
        raise LimitError(f"invalid size {text!r}: expected a number with an optional unit b, k, m, g")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def cpus_to_quota(cpus: float | str) -> tuple[int, int]:
    """`--cpus 1.5` as docker turns it into (quota, period)."""
    try:
        value = float(cpus)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # docker reads an exact rational: no nan, no inf, no 1e400
        raise LimitError(f"invalid --cpus {cpus!r}: failed to parse {cpus} as a rational number")
    if value <= 0:
        raise LimitError(f"invalid --cpus {cpus!r}: must be positive")
    return max(1000, int(value * DEFAULT_CPU_PERIOD)), DEFAULT_CPU_PERIOD


def parse_ulimit(text: str) -> Ulimit:
    """docker's `--ulimit name=soft[:hard]`, -1 meaning unlimited."""
    name, sep, values = text.partition("=")
    name = name.strip().lower()
    if not sep or name not in _RLIMITS:
        raise LimitError(f"invalid --ulimit {text!r}: expected NAME=SOFT[:HARD] with NAME one of "
                         f"{', '.join(sorted(_RLIMITS))}")
    soft_text, _, hard_text = values.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        raise LimitError(f"invalid --ulimit {text!r}: limits must be integers") from None
    if soft < -1 or hard < -1 or (hard != -1 and (soft == -1 or soft > hard)):
        raise LimitError(f"invalid --ulimit {text!r}: the soft limit must not exceed the hard one")
    return Ulimit(name, soft, hard)


# --- OCI -----------------------------------------------------------------------


def oci_resources(limits: Limits | None) -> dict:
    """The `linux.resources` entries besides devices."""
    if not limits:
        return {}
    resources: dict = {}
    if limits.memory is not None:
        resources["memory"] = {"limit": limits.memory, "swap": limits.memory}
    if limits.cpu_quota is not None or limits.cpu_period is not None:
        resources["cpu"] = {"period": limits.cpu_period or DEFAULT_CPU_PERIOD}
        if limits.cpu_quota is not None:
            resources["cpu"]["quota"] = limits.cpu_quota
    if limits.pids is not None:
        resources["pids"] = {"limit": limits.pids}
    return resources


def oci_rlimits(limits: Limits | None) -> list[dict]:
    return [{"type": _RLIMITS[u.name], "soft": _rlim(u.soft), "hard": _rlim(u.hard)}
            for u in (limits.ulimits if limits else ())]


def sandbox_rlimits(limits: Limits | None) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) for the builtin sandbox helper."""
    return [(u.resource, _rlim_py(u.soft), _rlim_py(u.hard)) for u in (limits.ulimits if limits else ())]


def _rlim(value: int) -> int:
    return 2 ** 64 - 1 if value == -1 else value


def _rlim_py(value: int) -> int:
    return resource.RLIM_INFINITY if value == -1 else value


# --- cgroups for the builtin executor ------------------------------------------------


def _mounts() -> tuple[Path | None, dict[str, Path]]:
    """The cgroup2 mount (if any) and controller -> v1 hierarchy mount."""
    unified = None
    v1: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            point = fields[4]
            tail = line.split(" - ", 1)[1].split()
            fstype, options = tail[0], tail[2] if len(tail) > 2 else ""
            if fstype == "cgroup2" and unified is None:
                unified = Path(point)
            elif fstype == "cgroup":
                for option in options.split(","):
                    if option in ("memory", "pids", "cpu"):
                        v1.setdefault(option, Path(point))
    return unified, v1


def _own_paths() -> tuple[str, dict[str, str]]:
    """This process's cgroup: its v2 path and its v1 path per controller."""
    unified = "/"
    v1: dict[str, str] = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "":
                unified = path
            for name in controllers.split(","):
                v1[name] = path
    return unified, v1


def _rootless_hint() -> str:
    from runtime.userns import rootless

    if not rootless():
        return ""
    return ("; a rootless pybuild can limit RUN only inside a cgroup v2 subtree delegated to the user "
            "(e.g. systemd-run --user --scope -p Delegate=yes pybuild ...)")


def run_limited(limits: Limits | None, work: Path, config: dict, supervise: Callable[[Path], None]) -> None:
    """What the builtin and chroot executors share: the helper's `config`
    written to `work`, with the cgroups of a step whose limits need them
    (recorded in `work` so that a pybuild killed meanwhile has its reclaim
    remove them), then `supervise(config_path)`; a step the cgroup's OOM
    killer ended is OutOfMemory."""
    require_raisable(limits)
    cgroup = None
    try:
        if limits and limits.needs_cgroup:
            cgroup = StepCgroup(limits)
            config["cgroups"] = cgroup.procs_files
            write_record(str(work), "-", "-", [os.path.dirname(path) for path in cgroup.procs_files])
        config_path = work / "config"
        config_path.write_bytes(marshal.dumps(config))
        try:
            supervise(config_path)
        except ExecFailed as exc:
            if cgroup is not None and limits.memory is not None and cgroup.oom_killed():
                raise OutOfMemory(exc.argv, exc.exit_code, exc.signal, exc.tail, limits.memory,
                                  certain=True) from None
            raise
    finally:
        if cgroup is not None:
            cgroup.close()


def require_raisable(limits: Limits | None) -> None:
    """In a user namespace, fail before the step on a hard rlimit above the
    one the user has (CAP_SYS_RESOURCE of a user namespace raises none):
    the sandbox helper and runc fail less clearly. Every executor's."""
    if limits is None or not in_user_namespace():
        return
    for ulimit in limits.ulimits:
        _, hard = resource.getrlimit(ulimit.resource)
        wanted = _rlim_py(ulimit.hard)
        if hard != resource.RLIM_INFINITY and (wanted == resource.RLIM_INFINITY or wanted > hard):
            raise LimitError(f"--ulimit {ulimit.name}: a hard limit of {'unlimited' if ulimit.hard == -1 else wanted} "
                             f"is above this user's own ({hard}), which a rootless pybuild cannot raise")


def require_cgroups(limits: Limits | None) -> None:
    """For runc, which makes the step's cgroups itself: fail now, with
    StepCgroup's error (which says what a rootless pybuild needs), where
    this process could not make them."""
    if limits is not None and limits.needs_cgroup:
        StepCgroup(limits).close()


class StepCgroup:
    """One step's cgroup(s), created below pybuild's own, limits written.

    `procs_files` are the cgroup.procs files the sandbox helper writes its
    pid into. `close()` kills what is left in them and removes the cgroups.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self._dirs: dict[str, Path] = {}  # controller -> its cgroup directory
        self._made: list[Path] = []
        name = f"pybuild-{uuid.uuid4().hex[:16]}"
        wanted = [c for c, on in (("memory", limits.memory is not None),
                                  ("cpu", limits.cpu_quota is not None or limits.cpu_period is not None),
                                  ("pids", limits.pids is not None)) if on]
        unified, v1 = _mounts()
        own_v2, own_v1 = _own_paths()
        v2_controllers: set[str] = set()
        if unified is not None:
            try:
                v2_dir = unified / own_v2.lstrip("/")
                v2_controllers = set((v2_dir / "cgroup.subtree_control").read_text().split()) or set()
            except OSError:
                v2_controllers = set()
        try:
            for controller in wanted:
                if controller in v2_controllers:
                    directory = unified / own_v2.lstrip("/") / name
                elif controller in v1:
                    directory = v1[controller] / own_v1.get(controller, "/").lstrip("/") / name
                else:
                    raise LimitError(f"cannot enforce the {controller} limit: no {controller} cgroup "
                                     "controller on this host")
                if directory not in self._made:
                    try:
                        directory.mkdir()
                    except OSError as exc:
                        raise LimitError(f"cannot create cgroup {directory}: {exc.strerror}{_rootless_hint()}") from exc
                    self._made.append(directory)
                self._dirs[controller] = directory
            self._write_limits()
        except BaseException:
            self.close()
            raise

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self._made]

    def _write(self, controller: str, v1_file: str, v2_file: str, value) -> None:
        directory = self._dirs[controller]
        v2 = (directory / "cgroup.controllers").exists()
        path = directory / (v2_file if v2 else v1_file)
        try:
            path.write_text(str(value))
        except OSError as exc:
            raise LimitError(f"cannot set {path.name} to {value}: {exc.strerror}") from exc

    def _write_limits(self) -> None:
        limits = self.limits
        if limits.memory is not None:
            self._write("memory", "memory.limit_in_bytes", "memory.max", limits.memory)
            directory = self._dirs["memory"]
            if (directory / "cgroup.controllers").exists():
                if (directory / "memory.swap.max").exists():
                    self._write("memory", "", "memory.swap.max", 0)
            elif (directory / "memory.memsw.limit_in_bytes").exists():
                self._write("memory", "memory.memsw.limit_in_bytes", "", limits.memory)
        if "cpu" in self._dirs:
            period = limits.cpu_period or DEFAULT_CPU_PERIOD
            if (self._dirs["cpu"] / "cgroup.controllers").exists():
                quota = limits.cpu_quota if limits.cpu_quota is not None else "max"
                self._write("cpu", "", "cpu.max", f"{quota} {period}")
            else:
                self._write("cpu", "cpu.cfs_period_us", "", period)
                if limits.cpu_quota is not None:
                    self._write("cpu", "cpu.cfs_quota_us", "", limits.cpu_quota)
        if limits.pids is not None:
            self._write("pids", "pids.max", "pids.max", limits.pids)

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of the step."""
        directory = self._dirs.get("memory")
        if directory is None:
            return False
        for name in ("memory.events", "memory.oom_control"):
            try:
                text = (directory / name).read_text()
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def close(self) -> None:
        """Kill every process left in the cgroups, then remove them."""
        deadline = time.monotonic() + _REMOVE_TIMEOUT
        for directory in reversed(self._made):
            while True:
                pids = _pids(directory)
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise LimitError(f"cannot remove cgroup {directory}: {exc.strerror}") from exc
                    time.sleep(0.02)
        self._made.clear()


def _pids(directory: Path) -> list[int]:
    try:
        return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def _human(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def _quote(argv) -> str:
    text = " ".join(argv)
    return '"' + text.replace('"', '\\"') + '"'
