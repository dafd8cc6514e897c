"""Snapshots: directories in overlay upperdir form, and merged views of them.

Layout under `root` (ROOT/snapshots):

    <id>/fs       the snapshot's files (whiteouts: 0/0 char devices, opaque
                  directories: trusted.overlay.opaque=y, or user.overlay.opaque=y
                  in a user namespace: runtime/whiteouts.py)
    <id>/work     overlay's workdir, only while <id> is mounted as upper
    .mnt-T-XXXX   a merged view while mounted
    .flat-T-XXXX  a temporary flattened lower (see "Deep chains" below)
    .empty        an empty directory, the second lower overlay insists on
    .leases/T     the lease of each live process using the snapshots

T is the token of the process that made the directory (runtime/lease.py):
one that died without cleaning up (SIGKILL) is found by its free lease,
and `remove_left_by` unmounts and removes what it left.

Ids are mkdtemp names: 8 characters, unique across processes, and short
because overlay's options must fit in one page.

Deep chains. mount(2) copies at most one page of options. Lower paths are
given relative ("<id>/fs", 12 bytes each), with the mount made from `root` as
the working directory, so about 330 lowers fit in 4 KiB; overlay itself
stacks at most 500. Beyond either limit the bottom of the chain is merged
into a temporary `.flat-XXXX` directory (whiteouts applied, opaque
directories honoured, files hardlinked rather than copied since overlay
never writes to a lower), used as the single bottom lower and removed on
unmount. Chains that deep are rare (Docker caps images at 127 layers), so the
flattened lower is not cached.

Threads. The working directory is per process, so the mount is made by a
short-lived helper thread that first unshares its filesystem attributes
(unshare(CLONE_FS), as Go runtimes do for the same reason) and only then
changes directory: other threads never see a different cwd.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from runtime.errors import RuntimeFailure
from runtime.fsutil import remove_tree
from runtime.lease import Leases
from runtime.mounts import bind_mount, detach, mount_overlay, mount_points_below, unmount
from runtime.userns import in_user_namespace
# fs/overlayfs/params.h: OVL_MAX_STACK
_OVERLAY_MAX_LOWERS = 500
_PAGE = os.sysconf("SC_PAGE_SIZE")
# Overlay options that keep the upperdir a plain diff: without them, a
# renamed directory becomes a redirect xattr and a chmod a data-less
# metacopy file, neither of which a layer tar can carry. With redirect_dir
# off, rename(2) of a lower directory fails with EXDEV and tools fall back
# to copying, so the upper gets full copies. index=off: no inode index, so
# the upper is not tied to these particular lower directories.
OVERLAY_FLAGS = "index=off,redirect_dir=off,metacopy=off"
if in_user_namespace():
    # Only a user.* xattr can be set without CAP_SYS_ADMIN of the initial
    # namespace: overlay keeps its opaque marks there (Linux >= 5.11). The
    # kernel refuses userxattr with redirect_dir=off, which may follow a
    # lower's redirect; nofollow neither makes nor follows one.
    OVERLAY_FLAGS = "index=off,redirect_dir=nofollow,metacopy=off,userxattr"
# Entries of the snapshot root that only live while a process uses them.
_TEMPORARY = (".mnt-", ".flat-", ".probe-")
_ID_RE = re.compile(r"[a-z0-9_]{1,64}")
# Notes live beside "fs" and "work", so neither name is one.
_NOTE_RE = re.compile(r"note-[a-z0-9_.-]{1,80}")


class UnknownSnapshot(RuntimeFailure):
    def __init__(self, snapshot_id: str):
        self.snapshot_id = snapshot_id
        super().__init__(f"snapshot {snapshot_id!r} does not exist")


class _SnapshotStore:
    """Creation, lookup and removal; the subclasses differ in mount()."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Owner only, as containerd's snapshot root: an image's setuid-root
        # file or world-writable dir in <id>/fs must not be reachable by
        # other users of the host (SECURITY.md).
        os.chmod(self.root, 0o700)
        self._empty = self.root / ".empty"
        self._empty.mkdir(mode=0o755, exist_ok=True)
        self.leases = lease_dir(self.root)

    def create(self) -> str:
        path = tempfile.mkdtemp(prefix="", dir=self.root)
        os.chmod(path, 0o755)
        # The merged root takes this directory's mode: 0755 like any rootfs.
        os.mkdir(os.path.join(path, "fs"), 0o755)
        os.chmod(os.path.join(path, "fs"), 0o755)
        return os.path.basename(path)

    def fs_path(self, snapshot_id: str) -> Path:
        if not _ID_RE.fullmatch(snapshot_id):
            raise UnknownSnapshot(snapshot_id)
        return self.root / snapshot_id / "fs"

    def exists(self, snapshot_id: str) -> bool:
        return _ID_RE.fullmatch(snapshot_id) is not None and (self.root / snapshot_id / "fs").is_dir()

    def remove(self, snapshot_id: str) -> None:
        self.fs_path(snapshot_id)  # validates the id
        remove_tree(self.root / snapshot_id)

    def ids(self) -> list[str]:
        return sorted(name for name in os.listdir(self.root) if _ID_RE.fullmatch(name) and self.exists(name))

    def note_path(self, snapshot_id: str, name: str) -> Path:
        """A small file kept beside a snapshot's `fs` (what an op wants to
        remember about how it made it); removed with the snapshot."""
        if not _NOTE_RE.fullmatch(name):
            raise ValueError(f"invalid snapshot note name: {name!r}")
        return self.fs_path(snapshot_id).parent / name

    def with_note(self, name: str) -> list[str]:
        """The snapshots that have the note `name`, most recent note first."""
        found = []
        for snapshot_id in os.listdir(self.root):
            if not _ID_RE.fullmatch(snapshot_id):
                continue
            try:
                found.append((os.stat(self.note_path(snapshot_id, name)).st_mtime_ns, snapshot_id))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return [snapshot_id for _, snapshot_id in sorted(found, reverse=True)]

    def has_entries_below(self, snapshot_id: str, rel: str) -> bool:
        """Whether the snapshot holds anything (whiteouts included) inside
        the directory `rel`. Components are lstat'ed, never followed: a
        symlink or file on the way means this snapshot has nothing there."""
        path = os.fspath(self.fs_path(snapshot_id))
        for name in rel.split("/"):
            if name in ("", "."):
                continue
            path = os.path.join(path, name)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    return False
            except (FileNotFoundError, NotADirectoryError):
                return False
        with os.scandir(path) as entries:
            return next(entries, None) is not None

    def commit(self, snapshot_id: str) -> None:
        """Mark the snapshot finished: its overlay workdir goes."""
        self.fs_path(snapshot_id)
        remove_tree(self.root / snapshot_id / "work")

    def _require(self, snapshot_id: str) -> None:
        if not self.exists(snapshot_id):
            raise UnknownSnapshot(snapshot_id)

    def made_by(self, name: str) -> str | None:
        """The token of the process that made the temporary entry `name`
        (a merged view, a flattened lower, a probe), if it is one."""
        for kind in _TEMPORARY:
            if name.startswith(kind):
                return name[len(kind):].split("-", 1)[0]
        return None

    def remove_left_by(self, owners: Iterable[str]) -> list[str]:
        """Unmount and remove the merged views, flattened lowers and probes
        that the processes with these tokens (dead ones: their leases are
        free) left; returns their names. Nothing else is touched, so this
        is safe while other processes use the snapshots."""
        owners = set(owners)
        removed = []
        for name in sorted(os.listdir(self.root)):
            if self.made_by(name) not in owners:
                continue
            path = os.path.join(self.root, name)
            for point in sorted(mount_points_below(path), reverse=True):
                detach(point)
            if mount_points_below(path):
                continue  # never remove files through a mount
            remove_tree(path)
            removed.append(name)
        return removed


class OverlaySnapshotter(_SnapshotStore):
    # `volatile` (Linux 5.10+) makes unmounting skip the sync of the whole
    # upper filesystem, which costs up to ~0.3 s per step on a busy disk. A
    # step's files are not needed durably before the build records them,
    # and a machine crash only loses cache entries (doctor finds them).
    volatile = False

    @contextlib.contextmanager
    def mount(self, lowers: Sequence[str], upper: str | None = None) -> Iterator[Path]:
        lowers = list(lowers)
        for snapshot_id in lowers + ([upper] if upper else []):
            self._require(snapshot_id)
        owner = self.leases.hold()
        try:
            yield from self._mounted(lowers, upper, owner)
        finally:
            self.leases.release()

    def _mounted(self, lowers: list[str], upper: str | None, owner: str) -> Iterator[Path]:
        target = tempfile.mkdtemp(prefix=f".mnt-{owner}-", dir=self.root)
        flat: str | None = None
        mounted = False
        workdir = self.root / upper / "work" if upper else None
        try:
            if not lowers:
                source = str(self.fs_path(upper)) if upper else str(self._empty)
                bind_mount(source, target, readonly=upper is None)
                mounted = True
            else:
                if workdir is not None:
                    remove_tree(workdir)  # left over from a crash, maybe
                    workdir.mkdir()
                flat = self._attach(target, lowers, upper, owner)
                mounted = True
            yield Path(target)
        finally:
            if mounted:
                self._detach(target, upper if lowers else None)
            os.rmdir(target)
            if flat is not None:
                remove_tree(self.root / flat)
            if workdir is not None:
                remove_tree(workdir)

    def _attach(self, target: str, lowers: list[str], upper: str | None, owner: str) -> str | None:
        """Mount the overlay on `target`; returns the flattened lower made
        for it, if any (removed after `_detach`)."""
        options, flat = self._options(lowers, upper, owner)
        mount_overlay(str(self.root), target, options, readonly=upper is None)
        return flat

    def _detach(self, target: str, upper: str | None) -> None:
        """Undo `_attach` (`upper`: None for a bind or read-only view)."""
        unmount(target)

    def _options(self, lowers: list[str], upper: str | None, owner: str) -> tuple[str, str | None]:
        """The mount data, and the flattened lower made for it if any."""
        tail = f",upperdir={upper}/fs,workdir={upper}/work" if upper else ""
        tail += "," + OVERLAY_FLAGS
        if upper and self.volatile:
            tail += ",volatile"
        paths = [f"{snapshot_id}/fs" for snapshot_id in lowers]
        if upper is None and len(paths) == 1:
            paths.insert(0, ".empty")  # overlay wants two lowers without an upper
        budget = _PAGE - 1 - len("lowerdir=") - len(tail)
        if len(paths) <= _OVERLAY_MAX_LOWERS and sum(len(p) + 1 for p in paths) - 1 <= budget:
            return "lowerdir=" + ":".join(reversed(paths)) + tail, None
        # Imported here, as in CopySnapshotter: a chain this deep is rare, and
        # a build on overlayfs need not load the merging code for it.
        from runtime import upperdir

        flat = tempfile.mkdtemp(prefix=f".flat-{owner}-", dir=self.root)
        name = os.path.basename(flat)
        try:
            # Keep as many of the top lowers as fit next to the flat one.
            used = len(name)
            keep = 0
            for path in reversed(paths):
                if keep + 2 > _OVERLAY_MAX_LOWERS or used + len(path) + 1 > budget:
                    break
                used += len(path) + 1
                keep += 1
            upperdir.merge_layers(flat, [str(self.root / path) for path in paths[: len(paths) - keep]], link_files=True)
        except BaseException:
            remove_tree(flat)
            raise
        kept = [name] + paths[len(paths) - keep:]
        return "lowerdir=" + ":".join(reversed(kept)) + tail, name


class CopySnapshotter(_SnapshotStore):
    """For hosts without a usable overlayfs: mount() copies the lowers and the
    upper into a plain directory, and on a clean exit writes what changed
    back into the upper in the same upperdir form overlay would have left.
    Changes are found by inode and ctime, which every write, chmod, chown,
    xattr change or utime bumps and no process can set back. The view of a
    read-only mount is a copy too; writes to it are simply discarded."""

    @contextlib.contextmanager
    def mount(self, lowers: Sequence[str], upper: str | None = None) -> Iterator[Path]:
        lowers = list(lowers)
        for snapshot_id in lowers + ([upper] if upper else []):
            self._require(snapshot_id)
        owner = self.leases.hold()
        try:
            yield from self._copied(lowers, upper, owner)
        finally:
            self.leases.release()

    def _copied(self, lowers: list[str], upper: str | None, owner: str) -> Iterator[Path]:
        from runtime import upperdir  # only this snapshotter needs it on every mount

        target = tempfile.mkdtemp(prefix=f".mnt-{owner}-", dir=self.root)
        try:
            upperdir.merge_layers(target, [str(self.fs_path(i)) for i in lowers], link_files=False)
            if upper is None:
                yield Path(target)
                return
            lower_view = upperdir.index(target)
            upper_fs = str(self.fs_path(upper))
            upper_entries = {rel: st for rel, st in upperdir.walk(upper_fs)}
            upperdir.merge_layers(target, [upper_fs], link_files=False)
            before = upperdir.mark(target)
            yield Path(target)
            diff = tempfile.mkdtemp(prefix="fs-", dir=self.root / upper)
            try:
                upperdir.write_diff(target, diff, lower_view, before, upper_fs, upper_entries)
                old = str(self.root / upper / "fs.old")
                os.rename(upper_fs, old)
                os.rename(diff, upper_fs)
            except BaseException:
                remove_tree(diff)
                raise
            remove_tree(old)
        finally:
            remove_tree(target)


def lease_dir(root: str | os.PathLike) -> Leases:
    """The leases of the processes using the snapshots under `root`."""
    return Leases(Path(root) / ".leases", gated=True)
