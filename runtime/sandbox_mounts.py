"""The rootfs of a step in the builtin executor's sandbox, and runc's rules
for the mount points in it that both executors follow.

`prepare_root` runs in the sandbox's init (runtime/sandbox.py), which
loads this file as a sibling of its own: it imports the standard library
only, and gets `linux.py` and the `confine` package from its caller.

The rootfs is untrusted: its image and earlier steps may have planted any
symlink in it. Every mount point is resolved inside it by `confine`,
opened O_PATH|O_NOFOLLOW once checked, and mounted on through its
/proc/self/fd link, which names that very inode whatever the path says
meanwhile (as runc does). /proc, /sys and /dev must be real directories,
as runc insists for the first two; no mount point may lead inside /proc,
but for runc's few exceptions; the masks bind the host's /dev/null, never
a file the image could name.

Imported as `runtime.sandbox_mounts`, this module offers docker's masked and
read-only paths, which the OCI executor writes into its config.json, and
the kernel mounts both executors check.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import stat
import struct

# The kernel's filesystems and /dev, mounted at these top-level directories
# of the rootfs: (name, source, filesystem type).
KERNEL_MOUNTS = (("proc", "proc", "proc"), ("sys", "sysfs", "sysfs"), ("dev", "tmpfs", "tmpfs"))


def not_ordinary_directory(name: str, source: str, fstype: str) -> str:
    """runc's refusal of a /proc or /sys that is a symlink or a file
    (libcontainer/rootfs_linux.go), which pybuild extends to /dev."""
    return mount_error(source, f"/{name}", f'filesystem "{fstype}" must be mounted on ordinary directory')


def mount_error(source: str, target: str, reason: str) -> str:
    """runc's words for a mount it could not make: the mount as the config
    asked for it, then why."""
    return f'error mounting "{source}" to rootfs at "{target}": {reason}'


# The files under /proc runc lets a mount cover (checkProcMount in
# libcontainer/rootfs_linux.go): those lxcfs emulates, so that free, top or
# uptime in a container show its own figures.
PROC_MOUNTABLE = frozenset((
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
    "/proc/sys/crypto/fips_enabled",
))


def proc_refusal(resolved: str) -> str | None:
    """Why runc refuses a mount point at `resolved` (where the target leads
    inside the rootfs, symlinks followed), or None. Inside /proc a mount
    could cover what confines the step (/proc/self/attr for the LSMs, the
    read-only /proc/sys): runc allows only a fresh procfs on /proc itself,
    which no step mount is, and PROC_MOUNTABLE below it. /sys is allowed."""
    if resolved == "/proc":
        return f'"{resolved}" cannot be mounted because it is not of type proc'
    if resolved.startswith("/proc/") and resolved not in PROC_MOUNTABLE:
        return f'"{resolved}" cannot be mounted because it is inside /proc'
    return None

# docker's masked and read-only paths (moby oci/defaults.go)
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# runtime-spec's "default devices" (ptmx aside), bound from the host's /dev
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


# An fd that names one inode and nothing else: never a symlink followed.
_O_POINT = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class _Refused(OSError):
    """A rootfs or mount the sandbox will not mount into; said as one line."""


def _fd_path(fd: int) -> str:
    """The magic link of `fd`: mount(2) on it reaches exactly that inode."""
    return f"/proc/self/fd/{fd}"


def _open_point(parent_fd: int, name) -> int:
    """An O_PATH fd of `name` in `parent_fd`. Opened after a mount on that
    name, it is the root of the topmost mount there: the lookup of a name
    crosses mount points, where the magic link of an older fd would not."""
    return os.open(name, _O_POINT, dir_fd=parent_fd)


def _remount(linux, parent_fd: int, name, flags: int) -> None:
    """Give the mount just made on `name` its per-mount flags. A remount
    replaces them all: the source's ro/nosuid/noexec are kept."""
    fd = _open_point(parent_fd, name)
    try:
        path = _fd_path(fd)
        linux.mount("", path, None, linux.MS_BIND | linux.MS_REMOUNT | flags | _mount_flags(path))
    finally:
        os.close(fd)


def _mount_flags(path: str) -> int:
    """The MS_* flags a remount must keep, from statvfs's ST_* bits (equal
    for these three). The kernel keeps the atime flags by itself."""
    return os.statvfs(path).f_flag & (os.ST_RDONLY | os.ST_NOSUID | os.ST_NOEXEC)


def _kernel_point(root_fd: int, name: str, source: str, fstype: str) -> int:
    """The O_PATH fd of /proc, /sys or /dev at the rootfs's top, made when
    missing. Anything but a real directory is refused, as runc does: a
    symlink followed would put the kernel's files (or the devices) where
    the image chose, out of the masks' reach or out of the rootfs."""
    try:
        st = os.lstat(name, dir_fd=root_fd)
    except FileNotFoundError:
        os.mkdir(name, 0o755, dir_fd=root_fd)
    else:
        if not stat.S_ISDIR(st.st_mode):
            raise _Refused(not_ordinary_directory(name, source, fstype))
    return os.open(name, _O_POINT | os.O_DIRECTORY, dir_fd=root_fd)


def _target(tree, target: str, what: str) -> tuple[int, bytes]:
    """(parent fd, name) of the mount point for `target`, resolved inside
    the rootfs as runc resolves it (symlinks followed inside, a dangling one
    to what it points at), made when missing: a directory, or an empty file
    for a bind of a file (`what` is "file"). Refused, as runc refuses it,
    inside /proc; and where the image has a directory for a file or the
    other way round, which mount(2) would only answer with ENOTDIR."""
    resolved = tree.join(target)
    refusal = proc_refusal(resolved)
    if refusal is not None:
        raise _Refused(refusal)
    is_dir = what != "file"
    parent_fd, name = tree.make_parent(resolved)
    try:
        try:
            if is_dir:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                os.close(os.open(name, flags, 0o755, dir_fd=parent_fd))
        except FileExistsError:
            pass
        mode = os.lstat(name, dir_fd=parent_fd).st_mode
        if stat.S_ISLNK(mode):
            raise _Refused(f"mount target {target} is a symlink")  # planted after it was resolved
        if stat.S_ISDIR(mode) != is_dir:
            found = "a directory" if stat.S_ISDIR(mode) else "not a directory"
            raise _Refused(f'"{resolved}" is {found} in the image: a {what} cannot be mounted on it')
    except BaseException:
        os.close(parent_fd)
        raise
    return parent_fd, name


# What a container's confinement refuses, and the relaxations rootless
# BuildKit documents for it (docs/ci.md).
MASKED_PROC_HINT = ("a fresh /proc cannot be mounted where the container's /proc has masked paths: run it with "
                "--security-opt systempaths=unconfined (docker), --security-opt unmask=ALL (podman) or "
                "procMount: Unmasked (Kubernetes)")
SECCOMP_HINT = ("a seccomp profile refuses it (a container's default): run it with --security-opt "
                    "seccomp=unconfined, as rootless BuildKit documents")


def _mount_proc(linux, root_fd: int) -> int:
    """procfs on /proc; returns an fd of its root."""
    point = _kernel_point(root_fd, "proc", "proc", "proc")
    try:
        linux.mount("proc", _fd_path(point), "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    except PermissionError as exc:
        raise PermissionError(exc.errno, f"mounting /proc: {exc.strerror}; {MASKED_PROC_HINT}") from None
    finally:
        os.close(point)
    return _open_point(root_fd, "proc")


def bind_outer_proc(linux, root_fd: int) -> int:
    """The /proc this process sees, bound on the rootfs's /proc (masks and
    all): where a fresh one is refused, as BuildKit's
    --oci-worker-no-process-sandbox does. Returns an fd of its root."""
    point = _kernel_point(root_fd, "proc", "proc", "proc")
    try:
        linux.mount("/proc", _fd_path(point), None, linux.MS_BIND | linux.MS_REC)
    finally:
        os.close(point)
    return _open_point(root_fd, "proc")


def set_hostname(linux, name: str) -> None:
    try:
        linux.sethostname(name)
    except PermissionError as exc:
        raise PermissionError(exc.errno, f"sethostname: {exc.strerror}; {SECCOMP_HINT}") from None


def _mount_sys(linux, root_fd: int) -> int:
    """sysfs on /sys, read-only; returns an fd of its root."""
    point = _kernel_point(root_fd, "sys", "sysfs", "sysfs")
    flags = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    try:
        try:
            linux.mount("sysfs", _fd_path(point), "sysfs", flags)
        except PermissionError:
            # a fresh sysfs needs a network namespace we own; fall back to
            # the host's tree, read-only, as runc does in that case
            linux.mount("/sys", _fd_path(point), None, linux.MS_BIND | linux.MS_REC)
            _remount(linux, root_fd, "sys", flags)
    finally:
        os.close(point)
    return _open_point(root_fd, "sys")


def _mount_dev(linux, root_fd: int) -> None:
    # nodev everywhere a step can write, since there is no devices cgroup:
    # with CAP_MKNOD the step may still make device nodes (images can hold
    # them) but not open them. The few devices it gets are binds of the
    # host's nodes, which keep the host /dev's flags.
    point = _kernel_point(root_fd, "dev", "tmpfs", "tmpfs")
    try:
        linux.mount("tmpfs", _fd_path(point), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_STRICTATIME,
                    "mode=755,size=65536k")
    finally:
        os.close(point)
    # The fresh tmpfs: nothing of the image is in it, only this process
    # writes to it.
    dev = os.open("dev", _O_POINT | os.O_DIRECTORY, dir_fd=root_fd)
    try:
        inside = _fd_path(dev)
        for name in _DEVICES:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=dev))
            linux.mount("/dev/" + name, f"{inside}/{name}", None, linux.MS_BIND)
        links = list(_DEV_LINKS)
        if os.path.exists("/proc/kcore"):
            # runc links /dev/core only when the kernel has a /proc/kcore
            links.append(("core", "/proc/kcore"))
        for name, target in links:
            os.symlink(target, name, dir_fd=dev)
        for name, mode in (("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o1777)):
            os.mkdir(name, mode, dir_fd=dev)
        linux.mount(
            "devpts",
            f"{inside}/pts",
            "devpts",
            linux.MS_NOSUID | linux.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        )
        secure = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        linux.mount("shm", f"{inside}/shm", "tmpfs", secure, "mode=1777,size=65536k")
        linux.mount("mqueue", f"{inside}/mqueue", "mqueue", secure)
    finally:
        os.close(dev)


def _bind(linux, tree, source: str, target: str, readonly: bool, sealed: bool = False) -> None:
    """A recursive bind of pybuild's `source` on `target` in the rootfs,
    made nodev (see _mount_dev), maybe read-only, and nosuid+noexec when
    `sealed`."""
    # Sources are pybuild's (scratch files, cache dirs, views of snapshots
    # resolved before the run, symlinks and all): one that is a symlink now
    # was swapped in since, and is not followed.
    src = os.open(source, _O_POINT)
    try:
        st = os.fstat(src)
        if stat.S_ISLNK(st.st_mode):
            raise _Refused(f"bind mount source {source} is a symlink")
        parent_fd, name = _target(tree, target, "directory" if stat.S_ISDIR(st.st_mode) else "file")
        try:
            flags = linux.MS_NODEV
            if readonly:
                flags |= linux.MS_RDONLY
            if sealed:
                flags |= linux.MS_NOSUID | linux.MS_NOEXEC
            _bind_on(linux, parent_fd, name, flags, _fd_path(src))
        finally:
            os.close(parent_fd)
    finally:
        os.close(src)


def _bind_on(linux, parent_fd: int, name, flags: int, source: str | None = None) -> None:
    """A recursive bind of `source` (None: the mount point itself, to give
    it flags of its own) on `name` in `parent_fd`, then `flags` for it."""
    point = _open_point(parent_fd, name)
    try:
        linux.mount(_fd_path(point) if source is None else source, _fd_path(point), None,
                    linux.MS_BIND | linux.MS_REC)
    finally:
        os.close(point)
    _remount(linux, parent_fd, name, flags)


def _mount_spec(linux, confine, tree, mount: dict) -> None:
    """One mount of the config; whatever fails it is said as runc says it,
    naming the mount and its target in the image."""
    try:
        _mount_one(linux, tree, mount)
    except OSError as exc:
        if isinstance(exc, (_Refused, confine.Refused)):
            reason = str(exc)
        else:  # the call's own words; the fd link it was made on means nothing to the user
            reason = exc.strerror or str(exc)
        raise _Refused(mount_error(mount.get("source", "tmpfs"), mount["target"], reason)) from None


def _mount_one(linux, tree, mount: dict) -> None:
    if mount["type"] != "tmpfs":
        _bind(linux, tree, mount["source"], mount["target"], mount["readonly"], mount.get("sealed", False))
        return
    parent_fd, name = _target(tree, mount["target"], "tmpfs")
    try:
        point = _open_point(parent_fd, name)
        try:
            data = f"size={mount['size']}" if mount.get("size") else None
            linux.mount("tmpfs", _fd_path(point), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, data)
        finally:
            os.close(point)
    finally:
        os.close(parent_fd)


def _locate(bases: dict, path: str) -> tuple[int, str] | None:
    """(parent fd, name) of a masked or read-only path under the fresh
    procfs or sysfs whose fds `bases` holds; None where the kernel lacks it."""
    top, *rest = path.strip("/").split("/")
    parent = os.dup(bases[top])
    try:
        for name in rest[:-1]:
            fd = os.open(name, _O_POINT | os.O_DIRECTORY, dir_fd=parent)
            os.close(parent)
            parent = fd
        os.lstat(rest[-1], dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        os.close(parent)
        return None
    except BaseException:
        os.close(parent)
        raise
    return parent, rest[-1]


def _mask_paths(linux, proc_fd: int, sys_fd: int) -> None:
    bases = {"proc": proc_fd, "sys": sys_fd}
    for path in MASKED_PATHS:
        found = _locate(bases, path)
        if found is None:
            continue
        parent_fd, name = found
        try:
            point = _open_point(parent_fd, name)
            try:
                if stat.S_ISDIR(os.fstat(point).st_mode):
                    linux.mount("tmpfs", _fd_path(point), "tmpfs", linux.MS_RDONLY, "size=0")
                else:
                    # the host's /dev/null: not one the image (or a mount
                    # target it redirected) could have put at the rootfs's
                    linux.mount("/dev/null", _fd_path(point), None, linux.MS_BIND)
            finally:
                os.close(point)
        finally:
            os.close(parent_fd)
    flags = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    for path in READONLY_PATHS:
        found = _locate(bases, path)
        if found is None:
            continue
        parent_fd, name = found
        try:
            _bind_on(linux, parent_fd, name, flags)
        finally:
            os.close(parent_fd)


def _loopback_up() -> None:
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
    finally:
        sock.close()


def prepare_root(linux, confine, config: dict) -> None:
    root = config["rootfs"]
    set_hostname(linux, config["hostname"])
    if config["network_none"]:
        _loopback_up()
    # pivot_root wants the new root to be a mount point of its own; `root`
    # is pybuild's own path, what is under it is the image's
    linux.mount(root, root, None, linux.MS_BIND | linux.MS_REC)
    linux.mount("", root, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_NODEV | _mount_flags(root))
    # opened after the bind: its fd is the new mount's root, where the
    # mounts below must go to be seen after pivot_root
    with confine.Tree(root) as tree:
        proc = _mount_proc(linux, tree.fd)
        try:
            sys_fd = _mount_sys(linux, tree.fd)
            try:
                _mount_dev(linux, tree.fd)
                # bind the generated files before the step's own mounts, as
                # BuildKit's spec does, so that a step mounting over
                # /etc/hosts wins; BuildKit's options for these two
                # (executor/oci/spec_linux.go withROBind): nosuid, noexec,
                # nodev, rbind, ro
                for name in ("hosts", "resolv.conf"):
                    _mount_spec(linux, confine, tree, {"type": "bind", "source": config["etc"][name],
                                                       "target": "/etc/" + name, "readonly": True, "sealed": True})
                for mount in config["mounts"]:
                    _mount_spec(linux, confine, tree, mount)
                # last: no mount of the step's may hide a mask
                _mask_paths(linux, proc, sys_fd)
            finally:
                os.close(sys_fd)
        finally:
            os.close(proc)
        os.fchdir(tree.fd)
    # after pivot_root(".", ".") the old root is stacked on the new one;
    # detaching it leaves nothing of the host reachable
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
    # made for the step's user before the sandbox started (make_workdir);
    # here only when a mount hid it, as runc makes a missing cwd
    _mkdirs(config["cwd"])
