"""The supervisor: what kills a command, and stops an OCI step's container,
when pybuild dies.

`runc run` outlives a pybuild killed by SIGKILL, and so does the container
it runs: runc gives the container's init no parent-death signal, and
PR_SET_PDEATHSIG would not reach the step's processes anyway. An
ssh-agent started for `--ssh ID=KEY` would outlive it too. So pybuild
starts such commands as (runtime/lifeline.py)

    python -S -E supervise.py LIFELINE BUNDLE|- -- COMMAND...

LIFELINE is the read end of a pipe whose only write end pybuild holds: it
reads EOF once pybuild closes it (to stop the command) or dies, however it
dies and whichever of its threads started the command. The supervisor
forks the command in a session of its own (with a parent-death signal: it
dies with the supervisor) and waits for either event. When the lifeline
ends first, it kills the command's whole process group: what the command
started (git's remote helpers and index-pack, ssh) dies with it, not only
the command. When the command exits first, whatever of its group is left
is killed likewise and the supervisor exits with the command's status.
Given a BUNDLE, a lifeline's end is followed by `RUNTIME delete --force`
on the container (which kills every process of the step, daemons in their
own sessions included) and by a kill of whatever the container's cgroups
still hold (a container whose runtime was killed before it recorded its
state).

Its own session also keeps the command out of the terminal's process
group: Ctrl-C reaches pybuild, which decides (it closes the lifeline), and
nothing the command runs can stop to read the terminal.

BUNDLE/container, written by pybuild before the start (`write_record`),
names the runtime, the container and its cgroup directories: the next
pybuild that finds the bundle of a dead process runs the same
`stop_container` on it, should the supervisor have been killed as well.
The builtin executor records the cgroups it makes for a step's limits in
its scratch directory the same way (they outlive a killed pybuild, empty).

Like sandbox.py, the supervisor imports only the standard library and
`linux.py` (about 10 ms to start, paid by every OCI step); importable as
`runtime.supervise` for `write_record`, `stop_container` and
`unescape_mountinfo`.
"""

from __future__ import annotations

import _signal
import os
import select
import sys
import time

RECORD = "container"
_DELETE_TIMEOUT = 10.0  # seconds for `RUNTIME delete --force`
_SWEEP_TIMEOUT = 5.0  # seconds to empty the container's cgroups


# --- the container's record ------------------------------------------------


def write_record(bundle: str, runtime: str, container_id: str, cgroups: list[str] | None = None) -> None:
    """Name what `stop_container` needs, in the bundle, before the start:
    the runtime and the container, or "-" for a step of the builtin
    sandbox, and the step's cgroups (for a container, where the runtime
    will make them)."""
    if cgroups is None:
        cgroups = _cgroup_dirs(container_id)
    lines = [runtime, container_id, *cgroups]
    with open(os.path.join(bundle, RECORD), "w") as handle:
        handle.write("\n".join(lines) + "\n")


def _cgroup_dirs(name: str) -> list[str]:
    """Where the runtime will put the container's cgroups: `name` below our
    own cgroup in each hierarchy, which is how runc's cgroupfs driver reads
    the config's (empty, so relative) cgroupsPath. The runtime is our
    descendant, so it starts in our cgroups."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            own[controllers] = path
    found: list[str] = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            mount_root, point = unescape_mountinfo(fields[3]), unescape_mountinfo(fields[4])
            tail = line.split(" - ", 1)[1].split()
            fstype, options = tail[0], set(tail[2].split(",")) if len(tail) > 2 else set()
            for controllers, path in own.items():
                if fstype == "cgroup2":
                    matches = controllers == ""
                else:
                    matches = fstype == "cgroup" and controllers != "" and set(controllers.split(",")) <= options
                if not matches or not (path + "/").startswith(mount_root.rstrip("/") + "/"):
                    continue
                inner = path[len(mount_root.rstrip("/")):].strip("/")
                directory = os.path.join(point, inner, name)
                if directory not in found:
                    found.append(directory)
    return found


def unescape_mountinfo(field: str) -> str:
    """A path field of /proc/self/mountinfo as the path it is: space, tab,
    newline and backslash are escaped there as octal."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def stop_container(bundle: str) -> bool:
    """Kill and remove the container of `bundle` (its record and its state
    directory, `BUNDLE/state`), and every process its cgroups still hold;
    then remove them. False if some cgroup could not be removed."""
    try:
        with open(os.path.join(bundle, RECORD)) as handle:
            runtime, container_id, *cgroups = handle.read().split("\n")
    except (OSError, ValueError):
        return True  # no record, nothing to stop
    if runtime != "-":
        import subprocess  # only now: it is slow to import, and rarely needed

        try:
            subprocess.run([runtime, "--root", os.path.join(bundle, "state"), "delete", "--force", container_id],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=_DELETE_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass  # the cgroups still hold its processes: killed below
    return kill_cgroups([path for path in cgroups if path])


def kill_cgroups(directories: list[str]) -> bool:
    """SIGKILL every process in these cgroups and remove them; False if one
    is still there after a few seconds. The container has its own pid
    namespace: once its init dies, the kernel kills the rest, so a fork
    bomb cannot outrun this. A killed process holds its cgroup until its
    parent reaps it (pid 1 of the host, for the orphans of a dead pybuild),
    so removal is retried meanwhile."""
    deadline = time.monotonic() + _SWEEP_TIMEOUT
    left = [directory for directory in directories if os.path.isdir(directory)]
    for directory in left:
        try:
            with open(os.path.join(directory, "cgroup.kill"), "w") as handle:
                handle.write("1")  # cgroup v2, Linux 5.14+: all at once
        except OSError:
            pass
    while left:
        for directory in list(left):
            for pid in _procs(directory):
                try:
                    os.kill(pid, _signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass  # the runtime removed it
            except OSError:
                continue  # still populated
            left.remove(directory)
        if left:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
    return True


def _procs(directory: str) -> list[int]:
    try:
        with open(os.path.join(directory, "cgroup.procs")) as handle:
            return [int(pid) for pid in handle.read().split()]
    except (FileNotFoundError, ValueError):
        return []


# --- the supervisor process -------------------------------------------------


def _ended(lifeline: int, timeout: float | None) -> bool:
    return bool(select.select([lifeline], [], [], timeout)[0])


def _start(linux, command: list[str]) -> int:
    parent = os.getpid()
    child = os.fork()
    if child:
        return child
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, _signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)  # the supervisor is already gone
        os.setsid()  # its group is the child's pid: see _kill_group
        # Python ignores these, and an ignored signal survives execve
        for signum in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT):
            _signal.signal(signum, _signal.SIG_DFL)
        os.execv(command[0], command)
    except BaseException as exc:  # noqa: BLE001 - the child must never return
        os.write(2, f"starting {command[0]}: {exc}\n".encode(errors="replace"))
    os._exit(127)


def _exit_like(status: int) -> int:
    """Leave as the runtime left: its exit code, or its signal."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            _signal.signal(signum, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), signum)
        return 128 + signum
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> int:
    # Ctrl-C in a terminal signals the whole process group: pybuild decides
    # what happens to the step (it closes the lifeline to cancel it).
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    lifeline, bundle = int(argv[1]), argv[2]
    command = argv[argv.index("--") + 1:]
    os.set_inheritable(lifeline, False)
    if _ended(lifeline, 0):
        return 1  # cancelled, or pybuild died, before the start
    import linux  # the sibling module: -S leaves the package unimportable

    child = _start(linux, command)
    pidfd = os.pidfd_open(child)
    ready = select.select([lifeline, pidfd], [], [])[0]
    _kill_group(child)
    _, status = os.waitpid(child, 0)
    if pidfd not in ready:
        if bundle != "-":
            stop_container(bundle)
        return 128 + _signal.SIGKILL
    return _exit_like(status)


def _kill_group(child: int) -> None:
    """SIGKILL the child, then the process group it leads. Done before the
    child is reaped: until then its pid cannot be reused, so the group is
    the child's, even when the child has exited. The child first: once it
    is killed it neither forks nor reaches its setsid, so the group is
    complete when it is killed."""
    os.kill(child, _signal.SIGKILL)
    try:
        os.killpg(child, _signal.SIGKILL)
    except ProcessLookupError:
        pass  # killed before its setsid: it had no group


if __name__ == "__main__":
    sys.exit(main(sys.argv))
