"""The helper process of the builtin executor, and path resolution in a rootfs.

Run as `python -S -E sandbox.py CONFIG STATUS_FD` by `runtime.builtin`:
it imports the standard library and `linux.py` only, so that it starts in a
few milliseconds and never runs pybuild code in a forked multi-threaded
interpreter. The process tree it makes:

    helper (outside)  unshare(mount, uts, ipc, pid[, net]); waits for pid 1
      └─ init (pid 1) mounts the rootfs, pivots into it, reaps zombies
           └─ command  drops capabilities, switches user, execs args

CONFIG is a `marshal`led dict (see `runtime.builtin`). The helper reports
on STATUS_FD one line per event: "pid1 <host pid>", "exit <code> <signal or
0>" or "error <message>". When init dies, the kernel kills every process of
the pid namespace, and when the last one is gone the mount namespace and
all its mounts go with it: nothing the helper mounts is ever visible on
the host.

Every module the helper uses is imported at the top: after pivot_root the
host's standard library is out of reach. Start-up time matters (it is paid
by every RUN), so the helper avoids what imports `re` or `enum`: no json,
and the C modules `_signal` and `_socket` stand in for `signal`/`socket`.

Imported as `runtime.sandbox`, this module offers `resolve_in_root` and the
docker defaults (capabilities, masked and read-only paths, PATH) that the
OCI executor writes into its config.json.
"""

from __future__ import annotations

import _signal
import _socket
import errno
import fcntl
import marshal
import os
import resource
import select
import stat
import struct
import sys

_MAX_SYMLINKS = 40


def resolve_in_root(root: str | os.PathLike, path: str) -> str:
    """The host path of `path` as seen by a process chrooted at `root`.

    Symlinks are followed as that process would follow them: absolute
    targets and `..` stop at `root`, so the result is always inside it.
    Components that do not exist are taken literally. The rootfs must not
    change while the result is used (true while no step process runs)."""
    root = os.path.abspath(root)
    pending = [part for part in path.split("/") if part not in ("", ".")]
    done: list[str] = []
    followed = 0
    while pending:
        name = pending.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, name)
        try:
            mode = os.lstat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            done.append(name)
            continue
        if not stat.S_ISLNK(mode):
            done.append(name)
            continue
        followed += 1
        if followed > _MAX_SYMLINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        target = os.readlink(candidate)
        if target.startswith("/"):
            done = []
        pending[:0] = [part for part in target.split("/") if part not in ("", ".")]
    return os.path.join(root, *done)


# --- everything below runs in the helper process only ----------------------

# docker's default capability set (moby oci/defaults.go), as bit numbers
DEFAULT_CAPS = (
    0,  # CHOWN
    1,  # DAC_OVERRIDE
    3,  # FOWNER
    4,  # FSETID
    5,  # KILL
    6,  # SETGID
    7,  # SETUID
    8,  # SETPCAP
    10,  # NET_BIND_SERVICE
    13,  # NET_RAW
    18,  # SYS_CHROOT
    27,  # MKNOD
    29,  # AUDIT_WRITE
    31,  # SETFCAP
)
DEFAULT_CAP_MASK = sum(1 << cap for cap in DEFAULT_CAPS)

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

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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


def _report(fd: int, *fields) -> None:
    line = " ".join(str(field) for field in fields).replace("\n", " ")
    os.write(fd, (line + "\n").encode(errors="replace"))


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _ensure_target(root: str, target: str, is_dir: bool) -> str:
    """Resolve `target` inside root and make it exist (a dir or an empty file)."""
    host = resolve_in_root(root, target)
    if is_dir:
        _mkdirs(host)
    elif not os.path.lexists(host):
        _mkdirs(os.path.dirname(host))
        os.close(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    return host


def _mount_dev(linux, root: str) -> None:
    # nodev everywhere a step can write, since there is no devices cgroup:
    # with CAP_MKNOD the step may still make device nodes (images can hold
    # them) but not open them. The few devices it gets are binds of the
    # host's nodes, which keep the host /dev's flags.
    dev = _ensure_target(root, "/dev", True)
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_STRICTATIME, "mode=755,size=65536k")
    for name in _DEVICES:
        target = os.path.join(dev, name)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
        linux.mount("/dev/" + name, target, None, linux.MS_BIND)
    links = list(_DEV_LINKS)
    if os.path.exists("/proc/kcore"):
        # runc links /dev/core only when the kernel has a /proc/kcore
        links.append(("core", "/proc/kcore"))
    for name, target in links:
        os.symlink(target, os.path.join(dev, name))
    for name, mode in (("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o1777)):
        os.mkdir(os.path.join(dev, name), mode)
    linux.mount(
        "devpts",
        os.path.join(dev, "pts"),
        "devpts",
        linux.MS_NOSUID | linux.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )
    secure = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    linux.mount("shm", os.path.join(dev, "shm"), "tmpfs", secure, "mode=1777,size=65536k")
    linux.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue", secure)


def _mount_sys(linux, root: str) -> None:
    target = _ensure_target(root, "/sys", True)
    flags = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    try:
        linux.mount("sysfs", target, "sysfs", flags)
    except PermissionError:
        # a fresh sysfs needs a network namespace we own; fall back to the
        # host's tree, read-only, as runc does in that case
        linux.mount("/sys", target, None, linux.MS_BIND | linux.MS_REC)
        linux.mount("", target, None, linux.MS_BIND | linux.MS_REMOUNT | flags)


def _bind(linux, source: str, target: str, readonly: bool, sealed: bool = False) -> None:
    """A recursive bind, made nodev (see _mount_dev), maybe read-only, and
    nosuid+noexec when `sealed`. The remount replaces the per-mount flags:
    keep the source's others."""
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    flags = linux.MS_BIND | linux.MS_REMOUNT | linux.MS_NODEV | _mount_flags(target)
    if readonly:
        flags |= linux.MS_RDONLY
    if sealed:
        flags |= linux.MS_NOSUID | linux.MS_NOEXEC
    linux.mount("", target, None, flags)


def _mount_flags(path: str) -> int:
    """The MS_* flags a remount must keep, from statvfs's ST_* bits (equal
    for these three). The kernel keeps the atime flags by itself."""
    return os.statvfs(path).f_flag & (os.ST_RDONLY | os.ST_NOSUID | os.ST_NOEXEC)


def _mount_spec(linux, root: str, mount: dict) -> None:
    if mount["type"] == "tmpfs":
        target = _ensure_target(root, mount["target"], True)
        data = f"size={mount['size']}" if mount.get("size") else None
        linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, data)
        return
    source = mount["source"]
    target = _ensure_target(root, mount["target"], os.path.isdir(source))
    _bind(linux, source, target, mount["readonly"], mount.get("sealed", False))


def _mask_paths(linux, root: str) -> None:
    null = os.path.join(root, "dev/null")
    for path in MASKED_PATHS:
        host = root + path  # under /proc and /sys: no symlink of the image involved
        if not os.path.exists(host):
            continue
        if os.path.isdir(host):
            linux.mount("tmpfs", host, "tmpfs", linux.MS_RDONLY, "size=0")
        else:
            linux.mount(null, host, None, linux.MS_BIND)
    for path in READONLY_PATHS:
        host = root + path
        if not os.path.exists(host):
            continue
        linux.mount(host, host, None, linux.MS_BIND | linux.MS_REC)
        flags = linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        linux.mount("", host, None, flags)


def _loopback_up() -> None:
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
    finally:
        sock.close()


def _prepare_root(linux, config: dict) -> None:
    root = config["rootfs"]
    linux.sethostname(config["hostname"])
    if config["network_none"]:
        _loopback_up()
    # pivot_root wants the new root to be a mount point of its own
    _bind(linux, root, root, False)
    proc = _ensure_target(root, "/proc", True)
    linux.mount("proc", proc, "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    _mount_sys(linux, root)
    _mount_dev(linux, root)
    # bind the generated files before the step's own mounts, as BuildKit's
    # spec does, so that a step mounting over /etc/hosts wins
    for name in ("hosts", "resolv.conf"):
        target = _ensure_target(root, "/etc/" + name, False)
        # BuildKit's options for these two (executor/oci/spec_linux.go
        # withROBind): nosuid, noexec, nodev, rbind, ro
        _bind(linux, config["etc"][name], target, True, sealed=True)
    for mount in config["mounts"]:
        _mount_spec(linux, root, mount)
    _mask_paths(linux, root)
    # after pivot_root(".", ".") the old root is stacked on the new one;
    # detaching it leaves nothing of the host reachable
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
    # made for the step's user before the sandbox started (make_workdir);
    # here only when a mount hid it, as runc makes a missing cwd
    _mkdirs(config["cwd"])


def _lookup_candidates(argv0: str, env: list[str]) -> list[str]:
    if "/" in argv0:
        return [argv0]
    search = DEFAULT_PATH
    for item in env:
        if item.startswith("PATH="):
            search = item[5:]
    return [os.path.join(directory or ".", argv0) for directory in search.split(":")]


def _exec(config: dict) -> None:
    """Become the step's process; never returns."""
    args = config["args"]
    # os.execve takes a mapping: for a repeated name the last value wins, as
    # BuildKit's own de-duplication does; an entry without "=" is dropped
    env = dict(item.split("=", 1) for item in config["env"] if "=" in item and not item.startswith("="))
    denied = None
    for candidate in _lookup_candidates(args[0], config["env"]):
        try:
            os.execve(candidate, args, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError as exc:
            denied = exc  # execvp keeps looking, and reports EACCES at the end
            continue
    if denied is not None:
        message, code = f'exec: "{args[0]}": permission denied', 126
    elif "/" in args[0]:
        message, code = f'exec: "{args[0]}": stat {args[0]}: no such file or directory', 127
    else:
        message, code = f'exec: "{args[0]}": executable file not found in $PATH', 127
    os.write(2, f"{message}\n".encode())
    os._exit(code)


def _drop_privileges(linux, config: dict) -> None:
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last_cap + 1):
        if cap not in DEFAULT_CAPS:
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
    # inheritable stays empty, as docker does since CVE-2022-24769
    linux.capset(DEFAULT_CAP_MASK, DEFAULT_CAP_MASK, 0)
    os.setgroups(config["groups"])
    os.setgid(config["gid"])
    # leaving uid 0 clears the permitted and effective sets, as in docker
    os.setuid(config["uid"])
    if config["no_new_privs"]:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)


def _set_nofile(wanted: int) -> None:
    """docker's open-files limit; raising the hard limit needs
    CAP_SYS_RESOURCE, so without it take the soft limit up to the hard one."""
    if not wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except ValueError:  # Python's EPERM for setrlimit
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _empty_stdin() -> None:
    """A step's stdin under runc (so in BuildKit) is a pipe nobody writes
    to: reads see EOF and `[ -p /dev/stdin ]` holds. Ours was /dev/null."""
    read_end, write_end = os.pipe()
    os.close(write_end)
    if read_end != 0:
        os.dup2(read_end, 0)
        os.close(read_end)


def _command(linux, config: dict) -> None:
    """The forked step process: drop what docker drops, then exec."""
    # Python ignores SIGPIPE and SIGXFSZ; an ignored signal survives execve
    for signum in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT):
        _signal.signal(signum, _signal.SIG_DFL)
    os.setsid()
    _empty_stdin()
    os.umask(0o022)
    _set_nofile(config["nofile"])
    try:
        for kind, soft, hard in config.get("rlimits", ()):  # --ulimit
            resource.setrlimit(kind, (soft, hard))
    except (OSError, ValueError) as exc:
        os.write(2, f"failed to set a ulimit: {exc}\n".encode())
        os._exit(126)
    os.chdir(config["cwd"])
    try:
        _drop_privileges(linux, config)
    except OSError as exc:
        os.write(2, f"failed to switch to user {config['uid']}:{config['gid']}: {exc}\n".encode())
        os._exit(126)
    _exec(config)


def _init(linux, config: dict, status_fd: int, lifeline: int) -> None:
    """pid 1 of the sandbox; never returns."""
    linux.prctl(linux.PR_SET_PDEATHSIG, _signal.SIGKILL)
    # getppid() is 0 across a pid namespace: the helper holds the write end
    # of `lifeline`, which reads as EOF once the helper has died
    if select.select([lifeline], [], [], 0)[0]:
        os._exit(1)
    os.close(lifeline)
    # pid 1 ignores signals it has no handler for: keep it that way, so that
    # the step cannot kill its init with a stray SIGINT
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    try:
        _prepare_root(linux, config)
    except OSError as exc:
        _report(status_fd, "error", f"preparing the sandbox: {exc}")
        os._exit(1)
    command = os.fork()
    if command == 0:
        os.close(status_fd)
        _command(linux, config)
    while True:  # reap every orphan until the step's own process ends
        pid, status = os.wait()
        if pid == command:
            break
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        _report(status_fd, "exit", 128 + signum, signum)
        os._exit(128 + signum)
    code = os.waitstatus_to_exitcode(status)
    _report(status_fd, "exit", code, 0)
    os._exit(code)


def _import_linux():
    """`linux.py`, loaded as a sibling file (the package is not importable with -S)."""
    import linux

    return linux


def main(argv: list[str]) -> int:
    # Ctrl-C in a terminal signals the whole process group, this helper too:
    # pybuild decides when the step ends (it kills us on cancel), and a
    # KeyboardInterrupt here would print a traceback into the step's output.
    # Its children set SIGINT back to SIG_DFL (_init, _command).
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    linux = _import_linux()
    with open(argv[1], "rb") as handle:
        config = marshal.load(handle)
    status_fd = int(argv[2])
    os.set_inheritable(status_fd, False)
    linux.prctl(linux.PR_SET_PDEATHSIG, _signal.SIGKILL)
    if os.getppid() != config["parent"]:
        return 1  # pybuild's thread is already gone
    try:
        # before any process of the step exists: all of them inherit it
        for procs in config.get("cgroups", ()):
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
    except OSError as exc:
        _report(status_fd, "error", f"joining the step's cgroup: {exc}")
        return 1
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWPID
    if config["network_none"]:
        flags |= linux.CLONE_NEWNET
    try:
        linux.unshare(flags)
        # nothing mounted from now on may propagate to the host
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    except OSError as exc:
        _report(status_fd, "error", f"creating namespaces: {exc}")
        return 1
    lifeline, alive = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(alive)
        _init(linux, config, status_fd, lifeline)
    os.close(lifeline)
    _report(status_fd, "pid1", init)
    _, status = os.waitpid(init, 0)
    return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv))
