"""Rootless: a pybuild started by an ordinary user enters a user namespace
of its own, once, before anything else, and from then on is root there.

The namespace maps in-namespace 0 to the user and 1..N to the user's
(first) subordinate range of N ids (/etc/subuid, /etc/subgid), written by the setuid
helpers newuidmap/newgidmap as podman and rootlesskit do. Everything after
the entry runs unchanged: it mounts overlayfs (with `userxattr`), makes
RUN's namespaces, chowns files to image ids. An image's uid 1000 is 1000
inside the namespace, so the layer tars carry the same ids, and the same
bytes, as a root build's (docs/architecture.md, "Rootless").

The process itself unshares, without a re-exec: unshare(CLONE_NEWUSER)
needs a single-threaded caller, which a console script is at its first
line, and a forked child (still outside) runs the two helpers on the
parent's pid. The mount namespace made in the same call takes every mount
pybuild makes with it when the process ends, however it ends.

Without a subordinate range, or without the helpers, nothing is entered:
commands that need no root (`--help`, `check`) work, and opening a root
fails with `missing()`'s message, which names the fix.
"""

from __future__ import annotations

import errno
import functools
import os
import sys

__all__ = ["chown", "enter", "host_ids", "in_user_namespace", "missing", "require_mapped", "rootless",
           "subordinate_range", "unmapped_message"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
_state: dict[str, object] = {"host_uid": None, "host_gid": None, "missing": None}


def rootless() -> bool:
    """Whether this process was started by a user other than root and
    entered (or tried to enter) its own namespace."""
    return host_ids()[0] != 0


def host_ids() -> tuple[int, int]:
    """The uid and gid that started this process, outside any namespace
    pybuild entered."""
    if _state["host_uid"] is None:
        return os.geteuid(), os.getegid()
    return _state["host_uid"], _state["host_gid"]


def missing() -> str | None:
    """Why a rootless process has no namespace to build in, with the fix;
    None when it has one (or needs none)."""
    if _state["host_uid"] is None and os.geteuid() != 0:
        # The Python API, or a program that did not call enter() first: a
        # process that may have threads cannot unshare a user namespace.
        return ("a rootless pybuild enters its own user namespace when it starts: run the pybuild command "
                "(or python -m builder.cli), not the Python API, as a user other than root")
    return _state["missing"]  # type: ignore[return-value]


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the
    initial one (entered by pybuild, or a container's)."""
    rows = _id_map("/proc/self/uid_map")
    return rows is not None and rows[:1] != [("0", "0", "4294967295")]


@functools.lru_cache(maxsize=None)
def _id_map(map_file: str) -> list[tuple[str, str, str]] | None:
    """The rows of /proc/self/uid_map or gid_map, read once: they change
    only when enter() maps this process, which forgets them then."""
    try:
        with open(map_file) as f:
            return [tuple(line.split()) for line in f]
    except OSError:
        return None


def unmapped_message(uid: int | None, gid: int | None) -> str:
    return (f"uid {uid} or gid {gid} is not mapped in this user namespace (rootless: the subordinate ranges "
            "of /etc/subuid and /etc/subgid must cover every id the image uses)")


def _mapped(ident: int, map_file: str) -> bool:
    rows = _id_map(map_file)
    return rows is None or any(int(inside) <= ident < int(inside) + int(count) for inside, _, count in rows)


def require_mapped(uid: int | None, gid: int | None) -> None:
    """Raise OSError(EINVAL) naming the fix when the ids cannot exist in
    this process's user namespace: a step's USER, a mount's uid= would
    otherwise fail as a bare "Invalid argument" (or runc's)."""
    if ((uid is not None and uid >= 0 and not _mapped(uid, "/proc/self/uid_map"))
            or (gid is not None and gid >= 0 and not _mapped(gid, "/proc/self/gid_map"))):
        raise OSError(errno.EINVAL, unmapped_message(uid, gid))


def chown(path, uid: int, gid: int) -> None:
    """os.chown, failing as require_mapped does for an id the namespace
    does not map."""
    require_mapped(uid, gid)
    os.chown(path, uid, gid)


CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24


def has_capability(cap: int) -> bool:
    """Whether this process holds `cap` in its effective set (over its own
    user namespace, which may not be the host's)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except (OSError, ValueError):
        pass
    return False


def subordinate_range(path: str, name: str, ident: int) -> tuple[int, int] | None:
    """The first range of `path` (/etc/subuid format: NAME-or-ID:START:COUNT)
    given to the user, as (start, count)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (name, str(ident)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start > 0 and count > 0:
            return start, count
    return None


def _free_range(size: int = 65536) -> str:
    """A range no user has yet in either file, for the fix to suggest: the
    first one above every range given, from 100000 (useradd's start)."""
    start = 100000
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                start = max(start, int(parts[1]) + int(parts[2]))
    return f"{start}-{start + size - 1}"


def enter() -> None:
    """Enter the namespace if this process is not root; a no-op for root
    and on a second call. Records why it could not (see `missing`)."""
    if _state["host_uid"] is not None:
        return
    uid, gid = os.geteuid(), os.getegid()
    _state["host_uid"], _state["host_gid"] = uid, gid
    if uid == 0:
        return
    # Only a user's process pays for these: root's no-op rebuild (the memo's
    # replay) imports neither subprocess nor shutil otherwise.
    import pwd
    import shutil

    if "runtime.whiteouts" in sys.modules:
        # Its xattr names were fixed, outside any namespace, when imported.
        _state["missing"] = "rootless pybuild: runtime.userns.enter() must run before pybuild's other modules load"
        return
    try:
        account = pwd.getpwuid(uid)
        name = account.pw_name
    except KeyError:
        account, name = None, str(uid)
    if not os.environ.get("HOME") and account is not None:
        # `~` would be looked up as uid 0 of the namespace: root's home.
        os.environ["HOME"] = account.pw_dir
    uids = subordinate_range("/etc/subuid", name, uid)
    gids = subordinate_range("/etc/subgid", name, uid)
    if uids is None or gids is None:
        free = _free_range()
        _state["missing"] = (
            f"rootless pybuild needs a subordinate uid and gid range for {name} in /etc/subuid and "
            f"/etc/subgid: as root, run `usermod --add-subuids {free} --add-subgids {free} {name}`"
        )
        return
    helpers = [shutil.which(tool) for tool in ("newuidmap", "newgidmap")]
    if None in helpers:
        _state["missing"] = "rootless pybuild needs newuidmap and newgidmap on PATH (Debian's package uidmap)"
        return
    problem = _unshare_and_map(helpers, (uid, uids), (gid, gids))
    if problem:
        _state["missing"] = f"rootless pybuild could not enter its user namespace: {problem}"


def _unshare_and_map(helpers, user: tuple[int, tuple[int, int]], group: tuple[int, tuple[int, int]]) -> str | None:
    import subprocess

    from runtime import linux

    go_read, go_write = os.pipe()
    parent = os.getpid()
    child = os.fork()
    if child == 0:  # outside the namespace: map the parent's ids once it has unshared
        status = 1
        try:
            os.close(go_write)
            if os.read(go_read, 1) == b"1":
                status = 0
                for helper, (own, (start, count)) in zip(helpers, (user, group)):
                    done = subprocess.run([helper, str(parent), "0", str(own), "1", "1", str(start), str(count)],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
                    if done.returncode != 0:
                        sys.stderr.buffer.write(done.stderr)
                        status = 2
                        break
        finally:
            os._exit(status)
    os.close(go_read)
    try:
        linux.unshare(CLONE_NEWUSER | CLONE_NEWNS)
    except OSError as exc:
        os.write(go_write, b"0")
        os.close(go_write)
        os.waitpid(child, 0)
        return (f"unshare: {exc.strerror}: user namespaces are refused here; in a container, its default "
                "seccomp profile refuses them (run it with --security-opt seccomp=unconfined, as rootless "
                "BuildKit documents), else the sysctl user.max_user_namespaces is 0")
    os.write(go_write, b"1")
    os.close(go_write)
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return "newuidmap/newgidmap failed (see above)"
    # Mounts made here stay here: nothing pybuild mounts reaches the host's
    # namespace, and all of it goes when the process does.
    linux.mount("none", "/", None, MS_REC | MS_PRIVATE)
    _id_map.cache_clear()  # read before (a check, the unshare itself): ours now
    return None
