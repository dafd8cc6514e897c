"""What the builtin and OCI executors share (runtime.executors chooses one).

Shared: the files bound at /etc/hosts and /etc/resolv.conf, the clean-up of
mount points a step's mounts made in its rootfs, the loop streaming a step's
output, and cancellation of the steps in flight.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import selectors
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from runtime.binfmt import unrunnable_reason
from runtime.confine import Refused, Tree
from runtime.errors import ExecCancelled, RuntimeFailure
from runtime.fsutil import remove_tree
from runtime.lease import Leases, is_token
from runtime.sandbox_mounts import KERNEL_MOUNTS, not_ordinary_directory
from runtime.sandbox import DEFAULT_PATH
from runtime.spec import BindMount, ExecSpec, NetworkMode, OutputSink
from runtime.supervise import stop_container
from runtime.users import User

__all__ = ["DEFAULT_PATH", "ExecCancelled", "SandboxFailed"]

TAIL_LINES = 20
_TAIL_BYTES = 16 * 1024
_HOST_RESOLV_CONF = "/etc/resolv.conf"
# libnetwork's fallback when the host only lists local resolvers
_FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844")


class SandboxFailed(RuntimeFailure):
    """The sandbox or the OCI runtime failed before the step's process ran."""


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
    with Tree(rootfs) as tree:
        try:
            os.close(tree.make_dirs(cwd, mode=0o755, owner=(uid, gid)))
        except OSError as exc:
            reason = str(exc) if isinstance(exc, Refused) else exc.strerror
            raise SandboxFailed(f"failed to create working directory {cwd}: {reason}") from None


def mount_targets(spec: ExecSpec) -> list[tuple[str, str]]:
    """Every path either executor mounts over inside the rootfs, with what
    goes there: "kernel" (proc, sysfs, the /dev tmpfs: a real directory
    only), "tmpfs", or a bind's "dir" or "file". The kernel's come last:
    missing_paths keeps what it makes for them, but for what a mount of
    the step made first, as BuildKit removes a /dev it made for a heredoc
    run from /dev/pipes/ (testdata/compat/run-heredoc-minimal-dev)."""
    targets = []
    for mount in spec.mounts:
        if isinstance(mount, BindMount):
            targets.append((mount.target, "dir" if os.path.isdir(mount.source) else "file"))
        else:
            targets.append((mount.target, "tmpfs"))
    targets += [("/etc/hosts", "file"), ("/etc/resolv.conf", "file")]
    return targets + [("/" + name, "kernel") for name, _, _ in KERNEL_MOUNTS]


@dataclass(frozen=True)
class Stubs:
    """The mount points made in a rootfs for a run that go after it,
    parents first, each by image path and inode."""

    rootfs: str
    made: tuple[tuple[str, int, int], ...]  # (image path, st_dev, st_ino)


def missing_paths(rootfs: Path, targets: Iterable[tuple[str, str]]) -> Stubs:
    """Make the mount points `targets` (from mount_targets) lack, before the
    run, as the runtime would: directories, an empty file for the bind of a
    file, a tmpfs's directory 1777 (runc gives a tmpfs the mode of the
    directory it covers, and a fresh tmpfs is 1777). remove_stubs removes
    them after the run (BuildKit's MountStubsCleaner): a RUN with a bind on
    /run/x must not leave an empty /run/x in its layer. The directories
    they were made in keep the time of that change, as in BuildKit 0.13:
    its differ, as runtime.prune, leaves out a directory whose mtime is all
    that changed, but one with a change below it (RUN echo >> /etc/passwd
    in an image without /etc/hosts) is in the layer with that time.

    /proc, /sys and /dev are made when missing and stay, as runc leaves
    them: BuildKit 0.13's RUN on a rootfs without them adds the three empty
    directories to its layer (testdata/compat/run-rootfs-dirs-missing).

    Targets resolve inside the rootfs (a dangling symlink to what it points
    at). /proc, /sys or /dev that is not a real directory fails the run, as
    runc fails it for the first two. A target that cannot be made is left
    to the runtime, which says why.

    First of all, an image this host cannot run (its /bin/sh is for a
    foreign machine no binfmt_misc emulator serves) fails the run with the
    command that registers one, rather than exec's "exec format error"."""
    unrunnable = unrunnable_reason(rootfs)
    if unrunnable:
        raise SandboxFailed(unrunnable)
    made: list[tuple[str, int, int]] = []
    with Tree(rootfs) as tree:
        try:
            for target, kind in targets:
                if kind == "kernel":
                    _check_kernel_dir(tree, target)
                try:
                    _make_stub(tree, tree.join(target), kind, [] if kind == "kernel" else made)
                except OSError:
                    continue
        except BaseException:
            _remove_made(tree, made)
            raise
    return Stubs(str(rootfs), tuple(made))


def _check_kernel_dir(tree: Tree, target: str) -> None:
    found = tree.lstat(target)
    if found is not None and not stat.S_ISDIR(found.st_mode):
        name = target.strip("/")
        _, source, fstype = next(mount for mount in KERNEL_MOUNTS if mount[0] == name)
        raise SandboxFailed(not_ordinary_directory(name, source, fstype))


def _make_stub(tree: Tree, path: str, kind: str, made: list) -> None:
    """mkdir -p of `path` (already resolved: no symlink on the way), its
    last component as `kind` needs; each thing made is recorded in `made`."""
    parts = [part for part in path.split("/") if part]
    for depth in range(1, len(parts) + 1):
        here = "/" + "/".join(parts[:depth])
        if tree.lstat(here) is not None:
            continue
        parent_fd, name = tree.parent(here)
        try:
            last = depth == len(parts)
            if last and kind == "file":
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o755,
                             dir_fd=parent_fd)
            else:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
            try:
                # through the umask pybuild was started with otherwise
                os.fchmod(fd, 0o1777 if last and kind == "tmpfs" else 0o755)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            made.append((here, st.st_dev, st.st_ino))
        finally:
            os.close(parent_fd)


def remove_stubs(stubs: Stubs) -> None:
    """Remove, deepest first, the stubs `missing_paths` made, each only if
    it is still that inode, at its path with no symlink on the way (a step
    may have moved its parent and planted a symlink to a host directory
    there), and an empty directory or an empty regular file. Anything else
    was made, moved or filled by the step and stays."""
    try:
        tree = Tree(stubs.rootfs)
    except OSError:
        return  # the rootfs is gone: so are its stubs
    with tree:
        _remove_made(tree, stubs.made)


def _remove_made(tree: Tree, made: Iterable[tuple[str, int, int]]) -> None:
    for path, dev, ino in reversed(list(made)):
        above, name = posixpath.split(path)
        try:
            parent_fd = tree.open_exact(above, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            continue  # moved away, or a symlink now
        try:
            st = os.lstat(name, dir_fd=parent_fd)
            if (st.st_dev, st.st_ino) != (dev, ino):
                continue
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=parent_fd)
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(name, dir_fd=parent_fd)
        except OSError:
            continue  # gone, not empty, or still in use: it belongs to the step now
        finally:
            os.close(parent_fd)


# A step's config (its environment, secret env values included) is written
# here while it runs: a tmpfs, so a secret never reaches a disk.
_MEMORY_BACKED = Path("/dev/shm")


_SCRATCH_PREFIXES = ("pybuild-exec-", "pybuild-oci-", "pybuild-secret-", "pybuild-ssh-", "pybuild-git-")
_LEASE_PREFIX = "pybuild-lease-"


def _scratch_leases(directory: Path) -> Leases:
    """Who made each scratch dir in `directory`, so that what a pybuild
    killed by SIGKILL left (its name carries the process's token) is told
    apart: runtime/lease.py. The leases live beside the scratch."""
    return Leases(directory, _LEASE_PREFIX)


def _scratch_parents() -> list[Path]:
    """Where step scratch goes: /dev/shm, else (a container without one, or
    a read-only one) the system's temp dir; both are swept."""
    usable = _MEMORY_BACKED.is_dir() and os.access(_MEMORY_BACKED, os.W_OK)
    return ([_MEMORY_BACKED] if usable else []) + [Path(tempfile.gettempdir())]


def scratch_dir(parent: Path | None, prefix: str) -> Path:
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    else:
        parent = _scratch_parents()[0]
        prefix = f"{prefix}{_scratch_leases(parent).keep()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def remove_stale_scratch() -> int:
    """Remove the step scratch dirs (configs, hosts files, secrets, OCI
    bundles) whose maker has died, first stopping the container of each
    bundle; returns how many. Only our own directories are considered: a
    bundle planted by another user would have us run the runtime on a
    state of their making."""
    return sum(_remove_stale_in(directory) for directory in _scratch_parents())


def _remove_stale_in(directory: Path) -> int:
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    leases = _scratch_leases(directory)
    dead: set[str] = set()
    for name in names:
        if not name.startswith(_SCRATCH_PREFIXES):
            continue  # most of a temp dir: one test, not one a prefix
        prefix = next(p for p in _SCRATCH_PREFIXES if name.startswith(p))
        owner = name[len(prefix):].split("-", 1)[0]
        path = directory / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or not _left_by_dead(leases, owner):
            continue
        # The container of a dead pybuild's OCI step, if its supervisor
        # (which stops it when pybuild dies) was killed too; the cgroups of
        # a builtin step with limits (its processes died with pybuild, they
        # did not).
        if not stop_container(str(path)):
            continue  # a cgroup is still there: its record stays, for the next one to try again
        dead.add(owner)
        remove_tree(path)
        removed += 1
    for owner in dead.union(leases.dead()):
        leases.drop(owner)
    return removed


def _left_by_dead(leases: Leases, owner: str) -> bool:
    if is_token(owner):
        return not leases.alive(owner)
    # named by a pybuild from before leases, with its pid
    return owner.isdigit() and not _alive(int(owner))


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
