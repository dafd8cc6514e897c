"""The helper process of the builtin executor.

Run as `python -S -E sandbox.py CONFIG STATUS_FD` by `runtime.builtin`:
it imports the standard library and its sibling files (`linux.py`,
`sandbox_mounts.py`, the `confine` package) only, so that it starts in a
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

What init mounts in the rootfs, which is untrusted, and how: sandbox_mounts.py.

Imported as `runtime.sandbox`, this module offers the docker defaults
(capabilities, PATH) that the OCI executor writes into its config.json.
"""

from __future__ import annotations

import _signal
import marshal
import os
import resource
import select
import sys

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

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def report(fd: int, *fields) -> None:
    """One status line to pybuild (the chroot helper's too)."""
    line = " ".join(str(field) for field in fields).replace("\n", " ")
    os.write(fd, (line + "\n").encode(errors="replace"))


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


def _drop_privileges(linux, config: dict, last_cap: int | None = None) -> None:
    if last_cap is None:
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


def exec_step(linux, config: dict, last_cap: int | None = None) -> None:
    """The forked step process: drop what docker drops, then exec. (The
    chroot helper's too, which gives `last_cap`, read before a chroot that
    may have no /proc.)"""
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
        _drop_privileges(linux, config, last_cap)
    except OSError as exc:
        os.write(2, f"failed to switch to user {config['uid']}:{config['gid']}: {exc}\n".encode())
        os._exit(126)
    _exec(config)


def _init(linux, mounts, confine, config: dict, status_fd: int, lifeline: int) -> None:
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
        mounts.prepare_root(linux, confine, config)
    except OSError as exc:
        report(status_fd, "error", f"preparing the sandbox: {exc}")
        os._exit(1)
    command = os.fork()
    if command == 0:
        os.close(status_fd)
        exec_step(linux, config)
    reap_until(command, status_fd)


def join_cgroups(config: dict, status_fd: int) -> bool:
    """Move this helper into the step's cgroups (config["cgroups"]) before
    any process of the step exists, so all of them inherit them; False
    (reported on `status_fd`) when it cannot. (The chroot helper's too.)"""
    try:
        for procs in config.get("cgroups", ()):
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
    except OSError as exc:
        report(status_fd, "error", f"joining the step's cgroup: {exc}")
        return False
    return True


def reap_until(command: int, status_fd: int) -> None:
    """As the step's first process: reap every orphan until `command` ends,
    report how it ended on `status_fd` and exit so; never returns. (The
    chroot helper's first process too.)"""
    while True:
        pid, status = os.wait()
        if pid == command:
            break
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        report(status_fd, "exit", 128 + signum, signum)
        os._exit(128 + signum)
    code = os.waitstatus_to_exitcode(status)
    report(status_fd, "exit", code, 0)
    os._exit(code)


def _import_siblings():
    """`linux.py`, `sandbox_mounts.py` and the `confine` package, loaded as
    siblings of this file (pybuild's packages are not importable with -S);
    all are stdlib-only."""
    import confine
    import linux
    import sandbox_mounts

    return linux, sandbox_mounts, confine


def main(argv: list[str]) -> int:
    # Ctrl-C in a terminal signals the whole process group, this helper too:
    # pybuild decides when the step ends (it kills us on cancel), and a
    # KeyboardInterrupt here would print a traceback into the step's output.
    # Its children set SIGINT back to SIG_DFL (_init, _command).
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    linux, mounts, confine = _import_siblings()
    with open(argv[1], "rb") as handle:
        config = marshal.load(handle)
    status_fd = int(argv[2])
    os.set_inheritable(status_fd, False)
    linux.prctl(linux.PR_SET_PDEATHSIG, _signal.SIGKILL)
    if os.getppid() != config["parent"]:
        return 1  # pybuild's thread is already gone
    if not join_cgroups(config, status_fd):
        return 1
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWPID
    if config["network_none"]:
        flags |= linux.CLONE_NEWNET
    try:
        linux.unshare(flags)
        # nothing mounted from now on may propagate to the host
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    except OSError as exc:
        report(status_fd, "error", f"creating namespaces: {exc}")
        return 1
    lifeline, alive = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(alive)
        _init(linux, mounts, confine, config, status_fd, lifeline)
    os.close(lifeline)
    report(status_fd, "pid1", init)
    _, status = os.waitpid(init, 0)
    return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv))
