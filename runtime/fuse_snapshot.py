"""Snapshots mounted by fuse-overlayfs: for a rootless pybuild on a kernel
whose overlayfs cannot be mounted in a user namespace (before 5.11), as
podman and rootless BuildKit fall back to it.

The snapshots keep the kernel overlay's upperdir form (runtime/snapshot.py),
so a root may switch between the two. fuse-overlayfs reads that form as
lowers (0/0 character devices, and the opaque xattr under either of
overlay's namespaces) but writes its own in an upper: an opaque directory
gets `user.fuseoverlayfs.opaque` and `.wh..wh..opq`/`.wh..opq` entries, and
a whiteout it cannot mknod is a `.wh.NAME` file. After each writable mount
the upper is put back into overlay's form (`_normalise`).

The daemon runs in the foreground under the lifeline (runtime/lifeline.py):
it sits in pybuild's mount namespace, so a daemon outliving a killed
pybuild would keep that namespace, and the mount, alive for good.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time

from runtime.errors import MountFailed
from runtime.fsutil import remove_tree
from runtime.lifeline import Supervised
from runtime.mounts import unmount
from runtime.snapshot import OverlaySnapshotter
from runtime.whiteouts import OPAQUE_MARKER, OPAQUE_XATTR, XATTR_NAMESPACE, is_whiteout

__all__ = ["FuseOverlaySnapshotter", "fuse_overlayfs"]

# What fuse-overlayfs writes for an opaque directory in an unprivileged upper.
_FUSE_OPAQUE_XATTR = "user.fuseoverlayfs.opaque"
_FUSE_OPAQUE_WHITEOUT = ".wh..opq"
_MOUNT_TIMEOUT = 30.0
_EXIT_TIMEOUT = 5.0


def fuse_overlayfs() -> str | None:
    """The fuse-overlayfs binary, if this host has one and /dev/fuse opens."""
    binary = shutil.which("fuse-overlayfs")
    if binary is None:
        return None
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return None
    return binary


class FuseOverlaySnapshotter(OverlaySnapshotter):
    """OverlaySnapshotter with fuse-overlayfs doing the mounting."""

    def __init__(self, root, binary: str):
        super().__init__(root)
        self._binary = binary
        # mount point -> (daemon, upper to normalise or None, its lowers)
        self._daemons: dict[str, tuple[Supervised, str | None, list[str]]] = {}

    def _attach(self, target: str, lowers: list[str], upper: str | None, owner: str) -> str | None:
        scratch = None
        if upper is None:
            # fuse-overlayfs always wants an upper: a read-only view gets a
            # throwaway one, kept in a temporary entry the reclaim knows.
            scratch = tempfile.mkdtemp(prefix=f".flat-{owner}-", dir=self.root)
            os.mkdir(os.path.join(scratch, "fs"))
            os.mkdir(os.path.join(scratch, "work"))
            upper_dir, work_dir = os.path.join(scratch, "fs"), os.path.join(scratch, "work")
        else:
            upper_dir, work_dir = str(self.fs_path(upper)), str(self.root / upper / "work")
        lower_dirs = ":".join(str(self.fs_path(snapshot_id)) for snapshot_id in reversed(lowers))
        options = f"lowerdir={lower_dirs},upperdir={upper_dir},workdir={work_dir}"
        try:
            daemon = Supervised([self._binary, "-f", "-o", options, target], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:
            if scratch:
                remove_tree(scratch)
            raise MountFailed(f"starting fuse-overlayfs: {exc}") from exc
        try:
            _wait_mounted(daemon, target)
        except BaseException:
            daemon.stop()
            daemon.wait()
            if scratch:
                remove_tree(scratch)
            raise
        self._daemons[target] = (daemon, upper_dir if upper else None, [str(self.fs_path(i)) for i in lowers])
        return os.path.basename(scratch) if scratch else None

    def _detach(self, target: str, upper: str | None) -> None:
        entry = self._daemons.pop(target, None)
        if entry is None:
            unmount(target)  # a bind mount: no daemon
            return
        daemon, upper_dir, lowers = entry
        # The directory times the step saw, read through the mount: on disk
        # a copied-up directory has the copy's time, and _normalise's
        # unlinks change it again; the kernel overlay keeps the lower's.
        times = _view_times(upper_dir, target) if upper_dir is not None else {}
        try:
            unmount(target)
        finally:
            # Unmounted, the daemon exits by itself. It does not when the
            # unmount was only a detach (an fd still open in the view, which
            # is a bug of ours): then the upper must still be final now.
            try:
                daemon.wait(timeout=_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
            daemon.stop()
            daemon.wait()
        if upper_dir is not None:
            _normalise(upper_dir, lowers)
            for rel, (atime_ns, mtime_ns) in sorted(times.items(), key=lambda item: -item[0].count("/")):
                path = os.path.join(upper_dir, rel) if rel else upper_dir
                if os.path.isdir(path) and not os.path.islink(path):
                    os.utime(path, ns=(atime_ns, mtime_ns), follow_symlinks=False)


def _view_times(upper: str, view: str) -> dict[str, tuple[int, int]]:
    """rel -> (atime, mtime) in the mounted `view` of every directory the
    `upper` holds."""
    times = {}
    for directory, _, _ in os.walk(upper):
        rel = os.path.relpath(directory, upper)
        rel = "" if rel == "." else rel
        try:
            st = os.lstat(os.path.join(view, rel) if rel else view)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            times[rel] = (st.st_atime_ns, st.st_mtime_ns)
    return times


def _wait_mounted(daemon: Supervised, target: str) -> None:
    """Until `target` is a mount point, or the daemon gave up."""
    parent = os.stat(os.path.dirname(target)).st_dev
    deadline = time.monotonic() + _MOUNT_TIMEOUT
    while time.monotonic() < deadline:
        if os.stat(target).st_dev != parent:
            return
        if daemon.poll() is not None:
            message = daemon.stderr.read().decode(errors="replace").strip() if daemon.stderr else ""
            raise MountFailed(f"fuse-overlayfs on {target}: {message or f'exit status {daemon.returncode}'}")
        time.sleep(0.002)
    raise MountFailed(f"fuse-overlayfs on {target}: not mounted after {_MOUNT_TIMEOUT:.0f} s")


def _normalise(upper: str, lowers: list[str]) -> None:
    """Put fuse-overlayfs's marks in `upper` into the kernel overlay's form,
    as the kernel would have left them above `lowers`: fuse-overlayfs marks
    every directory it makes opaque, and whiteouts names no lower has; the
    kernel does either only where a lower has the name. (Its `.wh.NAME`
    file whiteouts appear only where mknod of a 0/0 device is refused,
    before Linux 5.8, older than any kernel this supports.)"""
    def in_lowers(path: str) -> bool:
        rel = os.path.relpath(path, upper)
        return any(os.path.lexists(os.path.join(lower, rel)) for lower in lowers)

    # Its own mark: user.fuseoverlayfs.opaque unprivileged, overlay's
    # trusted one as root. user.overlay.opaque in a user namespace is a
    # step's (fuse-overlayfs lets a step set it): never taken for a mark.
    own_mark = _FUSE_OPAQUE_XATTR if XATTR_NAMESPACE == "user." else OPAQUE_XATTR
    for directory, _, files in os.walk(upper):
        opaque = False
        for mark in (_FUSE_OPAQUE_XATTR, OPAQUE_XATTR):
            try:
                opaque = (mark == own_mark and os.getxattr(directory, mark, follow_symlinks=False) == b"y") or opaque
                os.removexattr(directory, mark, follow_symlinks=False)
            except OSError:
                pass
        for name in files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if name in (OPAQUE_MARKER, _FUSE_OPAQUE_WHITEOUT) and not stat.S_ISDIR(st.st_mode):
                os.unlink(path)
                opaque = True
            elif is_whiteout(st) and not in_lowers(path):
                os.unlink(path)
        if opaque and directory != upper and in_lowers(directory):
            os.setxattr(directory, OPAQUE_XATTR, b"y", follow_symlinks=False)
