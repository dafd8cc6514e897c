"""Mounting snapshot views: overlayfs from a helper thread with its own
working directory (runtime.snapshot's "Threads"), bind mounts, unmounting,
and the mount points left below a directory."""

from __future__ import annotations

import errno
import os
import threading

from runtime import linux
from runtime.errors import MountFailed
from runtime.supervise import unescape_mountinfo

_CLONE_FS = 0x00000200


def mount_overlay(cwd: str, target: str, options: str, *, readonly: bool) -> None:
    """mount(2) an overlay whose option paths are relative to `cwd`, from a
    helper thread with its own working directory."""
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            linux.unshare(_CLONE_FS)
            os.chdir(cwd)
            linux.mount("pybuild", target, "overlay", linux.MS_RDONLY if readonly else 0, options)
            outcome["mounted"] = True
        except OSError as exc:
            outcome["error"] = exc

    helper = threading.Thread(target=work, name="pybuild-mount", daemon=True)
    helper.start()
    interrupted: KeyboardInterrupt | None = None
    while helper.is_alive():
        try:
            helper.join()
        except KeyboardInterrupt as exc:
            # The mount cannot be cancelled: wait for it so it can be undone.
            interrupted = exc
    if interrupted is not None:
        if outcome.get("mounted"):
            unmount(target)
        raise interrupted
    error = outcome.get("error")
    if error is not None:
        raise MountFailed(f"mount overlay on {target}: {error}") from error


def bind_mount(source: str, target: str, *, readonly: bool) -> None:
    try:
        linux.mount(source, target, None, linux.MS_BIND)
    except OSError as exc:
        raise MountFailed(f"bind mount {source} on {target}: {exc}") from exc
    if readonly:
        try:
            linux.mount("none", target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)
        except OSError as exc:
            unmount(target)
            raise MountFailed(f"remount {target} read-only: {exc}") from exc


def unmount(target: str) -> None:
    try:
        linux.umount(target)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise MountFailed(f"unmount {target}: {exc}") from exc
        # Something still holds it open (a straggling process, a cwd): detach
        # now, the kernel frees it when the last user goes.
        linux.umount(target, linux.MNT_DETACH)


def mount_points_below(path: str) -> list[str]:
    """The mount points at or below `path` in this mount namespace."""
    found = []
    prefix = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = unescape_mountinfo(line.split()[4])
            if point == path or point.startswith(prefix):
                found.append(point)
    return found


def detach(point: str) -> None:
    try:
        linux.umount(point, linux.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more)
            raise MountFailed(f"unmount {point}: {exc}") from exc
