"""Choosing an executor, and what the builtin and OCI executors share.

Shared: the files bound at /etc/hosts and /etc/resolv.conf, the clean-up of
mount points a step's mounts made in its rootfs, the loop streaming a step's
output, and cancellation of the steps in flight.
"""

from __future__ import annotations

import ipaddress
import os
import selectors
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from runtime.errors import ExecCancelled, RuntimeFailure
from runtime.fsutil import remove_tree
from runtime.lease import Leases, is_token
from runtime.sandbox import DEFAULT_PATH, resolve_in_root
from runtime.spec import BindMount, ExecSpec, NetworkMode, OutputSink
from runtime.supervise import stop_container
from runtime.users import User

__all__ = [
    "DEFAULT_PATH",
    "ExecCancelled",
    "SandboxFailed",
    "UnknownExecutor",
    "available_executors",
    "default_isolation",
    "get_executor",
]

TAIL_LINES = 20
_TAIL_BYTES = 16 * 1024
_HOST_RESOLV_CONF = "/etc/resolv.conf"
# libnetwork's fallback when the host only lists local resolvers
_FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844")


class SandboxFailed(RuntimeFailure):
    """The sandbox or the OCI runtime failed before the step's process ran."""


class UnknownExecutor(RuntimeFailure, ValueError):
    pass


# --- choosing ---------------------------------------------------------------


def available_executors() -> dict[str, Callable[[], object]]:
    """Executor name → factory, for the executors usable on this host."""
    # imported here: both modules import this one for the shared helpers
    from runtime.builtin import BuiltinExecutor
    from runtime.oci import OciExecutor, find_runtime

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


# --- what a run needs besides the process -----------------------------------


def process_env(spec: ExecSpec, user: User) -> list[str]:
    """The step's environment: runc adds HOME from passwd when it is unset."""
    env = list(spec.env)
    if not any(item.startswith("HOME=") for item in env):
        env.append(f"HOME={user.home}")
    return env


def write_etc_files(directory: Path, spec: ExecSpec) -> dict[str, str]:
    """Write the step's hosts and resolv.conf into `directory` (outside the
    rootfs), as BuildKit generates them; returns name → host path."""
    hosts = directory / "hosts"
    # BuildKit (executor/oci/hosts.go) appends --add-host entries after its defaults.
    hosts.write_text(
        f"127.0.0.1\tlocalhost {spec.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        + "".join(f"{ip}\t{host}\n" for host, ip in spec.extra_hosts)
    )
    resolv = directory / "resolv.conf"
    resolv.write_text(resolv_conf(_read_host_resolv_conf(), spec.network))
    return {"hosts": str(hosts), "resolv.conf": str(resolv)}


def _read_host_resolv_conf() -> str:
    try:
        return Path(_HOST_RESOLV_CONF).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def resolv_conf(host: str, network: NetworkMode) -> str:
    """BuildKit's rule: the host network keeps the host's file as is; any
    other network cannot reach resolvers on the host's loopback, so those
    are dropped, and public resolvers stand in when none is left."""
    lines = host.splitlines()
    servers = [line.split()[1] for line in lines if _is_nameserver(line)]
    if network is NetworkMode.HOST and servers:
        return host if host.endswith("\n") else host + "\n"
    kept = [line for line in lines if not (_is_nameserver(line) and _is_loopback(line.split()[1]))]
    if not any(_is_nameserver(line) for line in kept):
        kept += [f"nameserver {server}" for server in _FALLBACK_NAMESERVERS]
    return "\n".join(kept) + "\n"


def _is_nameserver(line: str) -> bool:
    fields = line.split()
    return len(fields) >= 2 and fields[0] == "nameserver"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def make_workdir(rootfs: Path, cwd: str, uid: int, gid: int) -> None:
    """Create a missing working directory as BuildKit's runc executor does,
    MkdirAllAndChown(cwd, 0755, uid, gid): the directories it makes belong
    to the step's user, the existing ones are left as they are. Symlinks
    on the way resolve inside the rootfs."""
    done = ""
    for part in cwd.split("/"):
        if part in ("", "."):
            continue
        done = f"{done}/{part}"
        host = resolve_in_root(rootfs, done)
        if os.path.lexists(host):
            continue
        os.mkdir(host, 0o755)
        os.chown(host, uid, gid, follow_symlinks=False)
        os.chmod(host, 0o755)  # whatever umask pybuild was started with


def mount_targets(spec: ExecSpec) -> list[str]:
    """Every path either executor mounts over inside the rootfs."""
    fixed = ["/proc", "/sys", "/dev", "/etc/hosts", "/etc/resolv.conf"]
    return fixed + [mount.target for mount in spec.mounts]


@dataclass(frozen=True)
class Stubs:
    """Mount points a run will create, and the times of the existing
    directories they are created in (restored when the stubs go, so that an
    untouched /etc is not part of the step's layer, as in BuildKit)."""

    paths: tuple[str, ...]
    parent_times: tuple[tuple[str, int, int], ...]


def missing_paths(rootfs: Path, targets: Iterable[str]) -> Stubs:
    """Host paths, parents first, that mounting `targets` would create.

    Taken before the run, they are the stubs to remove after it (BuildKit's
    MountStubsCleaner): a RUN with a bind on /run/x must not leave an empty
    /run/x in its layer."""
    created: list[str] = []
    parents: dict[str, tuple[int, int]] = {}
    root = os.path.abspath(rootfs)
    for target in targets:
        path = resolve_in_root(root, target)
        chain = []
        while path != root and not os.path.lexists(path):
            chain.append(path)
            path = os.path.dirname(path)
        if chain and path not in parents:
            info = os.lstat(path)
            parents[path] = (info.st_atime_ns, info.st_mtime_ns)
        for item in reversed(chain):
            if item not in created:
                created.append(item)
    return Stubs(tuple(created), tuple((p, a, m) for p, (a, m) in parents.items()))


def remove_stubs(stubs: Stubs) -> None:
    """Remove, deepest first, what `missing_paths` predicted if it is still
    an empty directory or an empty regular file. Anything else was made or
    filled by the step and stays."""
    for path in reversed(stubs.paths):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue  # made inside another mount, or never made
        try:
            if stat.S_ISDIR(info.st_mode):
                os.rmdir(path)
            elif stat.S_ISREG(info.st_mode) and info.st_size == 0:
                os.unlink(path)
        except OSError:
            continue  # not empty, or still in use: it belongs to the step now
    for path, atime_ns, mtime_ns in stubs.parent_times:
        try:
            os.utime(path, ns=(atime_ns, mtime_ns), follow_symlinks=False)
        except OSError:
            continue  # removed by the step: nothing to restore


# A step's config (its environment, secret env values included) is written
# here while it runs: a tmpfs, so a secret never reaches a disk.
_MEMORY_BACKED = Path("/dev/shm")


_SCRATCH_PREFIXES = ("pybuild-exec-", "pybuild-oci-", "pybuild-secret-", "pybuild-ssh-")
# Who made each scratch dir, so that what a pybuild killed by SIGKILL left
# (its name carries the process's token) is told apart: runtime/lease.py.
_SCRATCH_LEASES = Leases(_MEMORY_BACKED, "pybuild-lease-")


def scratch_dir(parent: Path | None, prefix: str) -> Path:
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    elif _MEMORY_BACKED.is_dir() and os.access(_MEMORY_BACKED, os.W_OK):
        parent = _MEMORY_BACKED
        prefix = f"{prefix}{_SCRATCH_LEASES.keep()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def remove_stale_scratch() -> int:
    """Remove the step scratch dirs (configs, hosts files, secrets, OCI
    bundles) whose maker has died, first stopping the container of each
    bundle; returns how many. Only our own directories are considered: a
    bundle planted by another user would have us run the runtime on a
    state of their making."""
    removed = 0
    try:
        names = os.listdir(_MEMORY_BACKED)
    except OSError:
        return 0
    dead: set[str] = set()
    for name in names:
        prefix = next((p for p in _SCRATCH_PREFIXES if name.startswith(p)), None)
        if prefix is None:
            continue
        owner = name[len(prefix):].split("-", 1)[0]
        path = _MEMORY_BACKED / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or not _left_by_dead(owner):
            continue
        dead.add(owner)
        if prefix == "pybuild-oci-":
            _stop_containers(path)
        remove_tree(path)
        removed += 1
    for owner in dead.union(_SCRATCH_LEASES.dead()):
        _SCRATCH_LEASES.drop(owner)
    return removed


def _left_by_dead(owner: str) -> bool:
    if is_token(owner):
        return not _SCRATCH_LEASES.alive(owner)
    # named by a pybuild from before leases, with its pid
    return left_by_dead_process(owner, "-")


def _stop_containers(bundle: Path) -> None:
    """The container of a dead pybuild's step, if its supervisor (which
    stops it when pybuild dies) was killed too."""
    stop_container(str(bundle))


def left_by_dead_process(rest: str, sep: str) -> bool:
    """`rest` of a scratch name begins with the pid of the process that made
    it, up to `sep`: True when that process is gone (and so is its use)."""
    pid = rest.split(sep, 1)[0]
    return pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_spec(spec: ExecSpec) -> None:
    if not spec.args:
        raise SandboxFailed("nothing to run: empty args")
    for mount in spec.mounts:
        if not mount.target.startswith("/"):
            raise SandboxFailed(f"mount target {mount.target!r} is not absolute")
        if isinstance(mount, BindMount) and not os.path.exists(mount.source):
            raise SandboxFailed(f"bind mount source {mount.source} does not exist")


# --- streaming and cancelling ------------------------------------------------


class Tail:
    """The last lines of a step's output, for ExecFailed."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def add(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > 2 * _TAIL_BYTES:
            del self._buffer[:-_TAIL_BYTES]

    def text(self) -> str:
        lines = self._buffer.decode(errors="replace").splitlines()
        return "\n".join(lines[-TAIL_LINES:])


def pump(
    output_fd: int,
    output: OutputSink,
    tail: Tail,
    status_fd: int | None = None,
    on_status: Callable[[bytes], None] | None = None,
) -> None:
    """Forward `output_fd` to `output` until EOF, and each line of
    `status_fd` to `on_status` until its EOF. Exceptions from either
    callback propagate; the caller kills what writes to the pipes."""
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(output_fd, selectors.EVENT_READ)
        if status_fd is not None:
            selector.register(status_fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fd)
                    if key.fd == status_fd and pending and on_status:
                        on_status(pending)
                elif key.fd == output_fd:
                    tail.add(data)
                    output(data)
                else:
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if on_status:
                            on_status(line)


class RunSet:
    """The runs in flight of one executor, so that `cancel()` can kill them
    from any thread; each run registers its kill function."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kills: dict[int, Callable[[], None]] = {}
        self._cancelled: set[int] = set()
        self._next = 0

    def add(self, kill: Callable[[], None]) -> int:
        with self._lock:
            self._next += 1
            self._kills[self._next] = kill
            return self._next

    def remove(self, token: int) -> bool:
        """Forget the run; True if it was cancelled."""
        with self._lock:
            self._kills.pop(token, None)
            if token in self._cancelled:
                self._cancelled.discard(token)
                return True
            return False

    def cancel_all(self) -> None:
        with self._lock:
            kills = list(self._kills.items())
            self._cancelled.update(token for token, _ in kills)
        for _, kill in kills:
            kill()
