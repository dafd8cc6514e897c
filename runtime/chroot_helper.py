"""The helper process of the chroot executor (runtime/chroot.py).

Run as `python -S -E chroot_helper.py CONFIG STATUS_FD LIFELINE_FD`, or
with `--probe` alone to print which namespaces this process may create.
Like sandbox.py it imports the standard library and its siblings only
(`linux.py`, `sandbox.py`, `sandbox_mounts.py`, the `confine` package), so
that it starts in a few milliseconds and never forks pybuild's threaded
interpreter.

The chroot executor is for hosts where the builtin sandbox and runc cannot
work: root of a container that may not mount nor unshare (docker's and
podman's defaults). It unshares only the namespaces the config names (those
the probe found permitted and the step needs) and mounts only when told:

    helper (outside, a child subreaper)  unshare(what is permitted)
      └─ init  [mounts /proc, /sys, /dev, the step's mounts], chroot(rootfs)
           └─ command  as sandbox.py's: user, capabilities, rlimits, exec

Nothing may outlive the step, and without a pid namespace no kernel rule
kills the step's processes for us. So the helper is a child subreaper: every
process of the step that loses its parent (a daemon that double-forked, in
a session of its own) becomes the helper's child, and the helper kills every
descendant it has once the command has exited, or once LIFELINE (a pipe
whose only write end pybuild holds) reads EOF: pybuild cancelled the step
or died, SIGKILL included. With a pid namespace, init is its pid 1 and the
kernel kills the rest when it exits; the sweep then finds nothing.

The helper reports on STATUS_FD as sandbox.py does: "init <pid>", "exit
<code> <signal or 0>" or "error <message>".
"""

from __future__ import annotations

import _signal
import marshal
import os
import select
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
# The namespaces the chroot executor may use, by the name it reports.
NAMESPACES = (("uts", 0x04000000), ("ipc", 0x08000000), ("net", 0x40000000), ("pid", 0x20000000),
              ("mount", 0x00020000))
_REAP_EVERY = 1.0  # seconds: orphans of the step that exit are reaped this often
_SWEEP_PAUSE = 0.002
_SWEEP_TIMEOUT = 10.0  # seconds


def _import_siblings():
    """linux.py, sandbox.py (the step's process), sandbox_mounts.py (the
    mounts, resolved inside the rootfs) and confine: stdlib-only siblings."""
    import confine
    import linux
    import sandbox
    import sandbox_mounts

    return linux, sandbox, sandbox_mounts, confine


# --- the probe ----------------------------------------------------------------


def probe(linux) -> list[str]:
    """The namespaces a child of this process may unshare, each tried alone
    in a child of its own. "mount" also needs mount(2) to work in it: under
    docker's seccomp profile both fail, but a kernel or LSM could refuse
    mount(2) alone."""
    permitted = []
    for name, flag in NAMESPACES:
        child = os.fork()
        if child == 0:
            try:
                linux.unshare(flag)
                if name == "mount":
                    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
            except OSError:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            permitted.append(name)
    return permitted


# --- killing what the step left -----------------------------------------------


def _descendants(me: int) -> list[int]:
    """Every process below `me`, from one reading of /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                text = handle.read()
        except OSError:
            continue
        parent = int(text[text.rindex(b")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(name))
    found, queue = [], [me]
    while queue:
        for child in children.get(queue.pop(), ()):
            found.append(child)
            queue.append(child)
    return found


def _reap_some() -> bool:
    """Reap the children that have exited; False once there are none left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def sweep() -> None:
    """SIGKILL every descendant until none is left. A killed process's
    children become ours (we are their subreaper), so each round sees what
    the last one orphaned, and a process forking meanwhile adds a child the
    next round finds. A process stuck in the kernel (uninterruptible
    sleep, a dead NFS server) dies only when it returns from there: after
    _SWEEP_TIMEOUT the helper leaves rather than hold the build for ever,
    as the builtin executor stops waiting for its pid namespace."""
    me = os.getpid()
    deadline = time.monotonic() + _SWEEP_TIMEOUT
    pause = _SWEEP_PAUSE
    while True:
        for pid in _descendants(me):
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not _reap_some() or time.monotonic() > deadline:
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.1)  # each round reads all of /proc


# --- the step -----------------------------------------------------------------


def _prepare_mounts(linux, mounts, confine, config: dict) -> None:
    """What sandbox_mounts.prepare_root mounts, in this private mount
    namespace: /proc, /sys, /dev, the
    generated /etc files, the step's mounts, docker's masks. Every target
    is resolved inside the rootfs by the sandbox's own helpers."""
    root = config["rootfs"]
    # The rootfs as a mount of its own, nodev: a device node the image or a
    # step made cannot be opened (the builtin sandbox's rule).
    linux.mount(root, root, None, linux.MS_BIND | linux.MS_REC)
    linux.mount("", root, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_NODEV | mounts._mount_flags(root))
    with confine.Tree(root) as tree:
        try:
            proc = mounts._mount_proc(linux, tree.fd)
        except PermissionError:
            # A container masking /proc refuses a fresh one: chroot, being
            # the weaker isolation, takes the container's (docs/isolation.md).
            proc = mounts.bind_outer_proc(linux, tree.fd)
        try:
            sys_fd = mounts._mount_sys(linux, tree.fd)
            try:
                mounts._mount_dev(linux, tree.fd)
                for name in ("hosts", "resolv.conf"):
                    mounts._mount_spec(linux, confine, tree, {"type": "bind", "source": config["etc"][name],
                                                              "target": "/etc/" + name, "readonly": True,
                                                              "sealed": True})
                for mount in config["mounts"]:
                    mounts._mount_spec(linux, confine, tree, mount)
                mounts._mask_paths(linux, proc, sys_fd)
            finally:
                os.close(sys_fd)
        finally:
            os.close(proc)
        os.fchdir(tree.fd)


def _enter_root(linux, mounts, confine, config: dict) -> None:
    if "uts" in config["namespaces"]:
        mounts.set_hostname(linux, config["hostname"])
    if "net" in config["namespaces"]:
        mounts._loopback_up()
    if config["mount"]:
        _prepare_mounts(linux, mounts, confine, config)
        # With a mount namespace, the builtin sandbox's pivot_root: a root
        # step leaves a chroot with chroot+fchdir, and reaches whatever the
        # host's tree holds (the user's own files, rootless); a pivoted root
        # whose old root is detached leaves nothing of it reachable.
        linux.pivot_root(".", ".")
        linux.umount(".", linux.MNT_DETACH)
    else:
        with confine.Tree(config["rootfs"]) as tree:
            os.fchdir(tree.fd)
        # No mount namespace, no pivot_root: the rest of the host's tree
        # stays below the chroot (docs/isolation.md says what that costs).
        os.chroot(".")
    os.chdir("/")
    if config["mount"]:
        # made for the step's user beforehand; here only when a mount hid it
        os.makedirs(config["cwd"], mode=0o755, exist_ok=True)


def _init(siblings, config: dict, status_fd: int, last_cap: int) -> None:
    """The step's first process (pid 1 when there is a pid namespace):
    enters the root, runs the command, reports how it ended; never returns."""
    linux, sandbox, mounts, confine = siblings
    linux.prctl(linux.PR_SET_PDEATHSIG, _signal.SIGKILL)
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    try:
        _enter_root(linux, mounts, confine, config)
    except OSError as exc:
        sandbox.report(status_fd, "error", f"preparing the chroot: {exc}")
        os._exit(1)
    command = os.fork()
    if command == 0:
        os.close(status_fd)
        sandbox.exec_step(linux, config, last_cap)
    sandbox.reap_until(command, status_fd)


def _unshare(linux, config: dict) -> None:
    flags = 0
    for name, flag in NAMESPACES:
        if name in config["namespaces"]:
            flags |= flag
    if flags:
        linux.unshare(flags)
    if "mount" in config["namespaces"]:
        # nothing mounted from now on may propagate to the host
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)


def _wait(init: int, lifeline: int) -> None:
    """Until init has exited or the lifeline ended; reaping, meanwhile, the
    orphans of the step that exit (they are ours, as subreaper)."""
    pidfd = os.pidfd_open(init)
    try:
        while True:
            ready = select.select([lifeline, pidfd], [], [], _REAP_EVERY)[0]
            if lifeline in ready:
                os.kill(init, _signal.SIGKILL)
                return
            if pidfd in ready:
                return
            _reap_orphans(init)
    finally:
        os.close(pidfd)


def _reap_orphans(init: int) -> None:
    """Reap the exited children that are not init (waitid with WNOWAIT
    peeks first, so that init, whose pidfd the helper waits on, is left
    for the sweep). One zombie init stops it; the sweep reaps all."""
    while True:
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if found is None or found.si_pid == init:
            return
        os.waitpid(found.si_pid, 0)


def main(argv: list[str]) -> int:
    # pybuild decides when the step ends (it closes the lifeline); a Ctrl-C
    # of the terminal's process group must not kill the helper first
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    siblings = _import_siblings()
    linux = siblings[0]
    if argv[1:] == ["--probe"]:
        print(" ".join(probe(linux)))
        return 0
    with open(argv[1], "rb") as handle:
        config = marshal.load(handle)
    status_fd, lifeline = int(argv[2]), int(argv[3])
    os.set_inheritable(status_fd, False)
    os.set_inheritable(lifeline, False)
    if select.select([lifeline], [], [], 0)[0]:
        return 1  # cancelled, or pybuild died, before the start
    linux.prctl(PR_SET_CHILD_SUBREAPER, 1)
    if not siblings[1].join_cgroups(config, status_fd):
        return 1
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        last_cap = int(handle.read())
    try:
        _unshare(linux, config)
    except OSError as exc:
        siblings[1].report(status_fd, "error", f"creating namespaces ({' '.join(config['namespaces'])}): {exc}")
        return 1
    init = os.fork()
    if init == 0:
        os.close(lifeline)
        _init(siblings, config, status_fd, last_cap)
    siblings[1].report(status_fd, "init", init)
    try:
        _wait(init, lifeline)
    finally:
        sweep()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
