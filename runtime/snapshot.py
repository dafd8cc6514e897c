"""Snapshots: directories in overlay upperdir form, and merged views of them.

Layout under `root` (ROOT/snapshots):

    <id>/fs       the snapshot's files (whiteouts: 0/0 char devices, opaque
                  directories: trusted.overlay.opaque=y)
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
import errno
import functools
import json
import os
import re
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from runtime import linux
from runtime.errors import MountFailed, RuntimeFailure
from runtime.fsutil import copy_metadata, copy_node, remove_tree
from runtime.lease import Leases
from runtime.supervise import unescape_mountinfo

_CLONE_FS = 0x00000200
# fs/overlayfs/params.h: OVL_MAX_STACK
_OVERLAY_MAX_LOWERS = 500
_PAGE = os.sysconf("SC_PAGE_SIZE")
# Overlay options that keep the upperdir a plain diff: without them, a
# renamed directory becomes a redirect xattr and a chmod a data-less
# metacopy file, neither of which a layer tar can carry. With redirect_dir
# off, rename(2) of a lower directory fails with EXDEV and tools fall back
# to copying, so the upper gets full copies. index=off: no inode index, so
# the upper is not tied to these particular lower directories.
_OVERLAY_FLAGS = "index=off,redirect_dir=off,metacopy=off"
# Entries of the snapshot root that only live while a process uses them.
_TEMPORARY = (".mnt-", ".flat-", ".probe-")
_ID_RE = re.compile(r"[a-z0-9_]{1,64}")
# Notes live beside "fs" and "work", so neither name is one.
_NOTE_RE = re.compile(r"note-[a-z0-9_.-]{1,80}")
_OVERLAY_XATTRS = ("trusted.overlay.",)
_OPAQUE_XATTR = "trusted.overlay.opaque"
# CopySnapshotter's tag on its copies (see _mark); never leaves the view.
_MARK = "trusted.pybuild.path"


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
                _detach(point)
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
                _bind(source, target, readonly=upper is None)
                mounted = True
            else:
                if workdir is not None:
                    remove_tree(workdir)  # left over from a crash, maybe
                    workdir.mkdir()
                options, flat = self._options(lowers, upper, owner)
                _mount_overlay(str(self.root), target, options, readonly=upper is None)
                mounted = True
            yield Path(target)
        finally:
            if mounted:
                _unmount(target)
            os.rmdir(target)
            if flat is not None:
                remove_tree(self.root / flat)
            if workdir is not None:
                remove_tree(workdir)

    def _options(self, lowers: list[str], upper: str | None, owner: str) -> tuple[str, str | None]:
        """The mount data, and the flattened lower made for it if any."""
        tail = f",upperdir={upper}/fs,workdir={upper}/work" if upper else ""
        tail += "," + _OVERLAY_FLAGS
        if upper and self.volatile:
            tail += ",volatile"
        paths = [f"{snapshot_id}/fs" for snapshot_id in lowers]
        if upper is None and len(paths) == 1:
            paths.insert(0, ".empty")  # overlay wants two lowers without an upper
        budget = _PAGE - 1 - len("lowerdir=") - len(tail)
        if len(paths) <= _OVERLAY_MAX_LOWERS and sum(len(p) + 1 for p in paths) - 1 <= budget:
            return "lowerdir=" + ":".join(reversed(paths)) + tail, None
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
            merge_layers(flat, [str(self.root / path) for path in paths[: len(paths) - keep]], link_files=True)
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
        target = tempfile.mkdtemp(prefix=f".mnt-{owner}-", dir=self.root)
        try:
            merge_layers(target, [str(self.fs_path(i)) for i in lowers], link_files=False)
            if upper is None:
                yield Path(target)
                return
            lower_view = _index(target)
            upper_fs = str(self.fs_path(upper))
            upper_entries = {rel: st for rel, st in _walk(upper_fs)}
            merge_layers(target, [upper_fs], link_files=False)
            before = _mark(target)
            yield Path(target)
            diff = tempfile.mkdtemp(prefix="fs-", dir=self.root / upper)
            try:
                _write_diff(target, diff, lower_view, before, upper_fs, upper_entries)
                old = str(self.root / upper / "fs.old")
                os.rename(upper_fs, old)
                os.rename(diff, upper_fs)
            except BaseException:
                remove_tree(diff)
                raise
            remove_tree(old)
        finally:
            remove_tree(target)


# ---------------------------------------------------------------- mounting


def _mount_overlay(cwd: str, target: str, options: str, *, readonly: bool) -> None:
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
            _unmount(target)
        raise interrupted
    error = outcome.get("error")
    if error is not None:
        raise MountFailed(f"mount overlay on {target}: {error}") from error


def _bind(source: str, target: str, *, readonly: bool) -> None:
    try:
        linux.mount(source, target, None, linux.MS_BIND)
    except OSError as exc:
        raise MountFailed(f"bind mount {source} on {target}: {exc}") from exc
    if readonly:
        try:
            linux.mount("none", target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)
        except OSError as exc:
            _unmount(target)
            raise MountFailed(f"remount {target} read-only: {exc}") from exc


def _unmount(target: str) -> None:
    try:
        linux.umount(target)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise MountFailed(f"unmount {target}: {exc}") from exc
        # Something still holds it open (a straggling process, a cwd): detach
        # now, the kernel frees it when the last user goes.
        linux.umount(target, linux.MNT_DETACH)


def lease_dir(root: str | os.PathLike) -> Leases:
    """The leases of the processes using the snapshots under `root`."""
    return Leases(Path(root) / ".leases", gated=True)


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


def _detach(point: str) -> None:
    try:
        linux.umount(point, linux.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more)
            raise MountFailed(f"unmount {point}: {exc}") from exc


def _overlay_works(root: str, extra: str) -> bool:
    """Mount a tiny overlay, delete a lower file and replace a lower
    directory: whiteouts and opaque xattrs must land in the upper."""
    leases = lease_dir(root)
    owner = leases.hold()
    try:
        return _probe(tempfile.mkdtemp(prefix=f".probe-{owner}-", dir=root), extra)
    finally:
        leases.release()


def _probe(probe: str, extra: str) -> bool:
    try:
        for name in ("lower/d", "upper", "work", "merged"):
            os.makedirs(os.path.join(probe, name))
        Path(probe, "lower/f").write_bytes(b"")
        Path(probe, "lower/d/x").write_bytes(b"")
        merged = os.path.join(probe, "merged")
        try:
            _mount_overlay(probe, merged, f"lowerdir=lower,upperdir=upper,workdir=work,{_OVERLAY_FLAGS}{extra}",
                           readonly=False)
        except MountFailed:
            return False
        try:
            os.unlink(os.path.join(merged, "f"))
            remove_tree(os.path.join(merged, "d"))
            os.mkdir(os.path.join(merged, "d"))
        except OSError:
            return False
        finally:
            _unmount(merged)
        whiteout = os.lstat(os.path.join(probe, "upper/f"))
        opaque = os.getxattr(os.path.join(probe, "upper/d"), _OPAQUE_XATTR, follow_symlinks=False)
        return stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0 and opaque == b"y"
    except OSError:
        return False
    finally:
        remove_tree(probe)


_PROBE_FILE = ".overlay-probe"


@functools.lru_cache(maxsize=None)
def _overlay_support(root: str) -> tuple[bool, bool]:
    """(overlay usable, `volatile` usable) on `root`. Probing mounts and
    unmounts, so the answer is kept in the root per kernel release: a fully
    cached build mounts nothing at all."""
    record = os.path.join(root, _PROBE_FILE)
    kernel = os.uname().release
    try:
        with open(record) as f:
            saved = json.load(f)
        if saved.get("kernel") == kernel:
            return bool(saved["overlay"]), bool(saved["volatile"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    volatile = _overlay_works(root, ",volatile")
    usable = volatile or _overlay_works(root, "")
    fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=root)
    with os.fdopen(fd, "w") as f:
        json.dump({"kernel": kernel, "overlay": usable, "volatile": volatile}, f)
    os.replace(tmp, record)
    return usable, volatile


def default_snapshotter(root: Path) -> OverlaySnapshotter | CopySnapshotter:
    """An OverlaySnapshotter when overlayfs works on `root` (probed once per
    root and kernel), else a CopySnapshotter."""
    Path(root).mkdir(parents=True, exist_ok=True)
    usable, volatile = _overlay_support(os.path.realpath(root))
    if usable:
        snapshotter = OverlaySnapshotter(root)
        snapshotter.volatile = volatile
        return snapshotter
    return CopySnapshotter(root)


# ---------------------------------------------------------------- merging


def merge_layers(dest: str, layers: Sequence[str], *, link_files: bool) -> None:
    """Apply snapshot directories (upperdir form, bottom to top) onto `dest`
    as overlay would show them: whiteouts delete, opaque directories hide
    what was below. With link_files, files are hardlinked from the layers
    (for read-only use only); otherwise copied, hardlinks within a layer kept.
    The result carries no overlay xattrs and no whiteouts."""
    for layer in layers:
        _merge_dir(layer, dest, link_files, {})
        copy_metadata(layer, dest, os.lstat(layer), skip_xattrs=_OVERLAY_XATTRS)


def _merge_dir(src: str, dst: str, link_files: bool, links: dict) -> None:
    # Depth first with an explicit stack (a layer may be thousands of
    # directories deep); a directory's metadata once its entries are in.
    stack = [(src, dst, iter(os.listdir(src)), None)]
    while stack:
        src_dir, dst_dir, names, done = stack[-1]
        for name in names:
            src_path = os.path.join(src_dir, name)
            dst_path = os.path.join(dst_dir, name)
            st = os.lstat(src_path)
            existing = _lstat_or_none(dst_path)
            if _is_whiteout(st):
                if existing is not None:
                    remove_tree(dst_path)
                continue
            if stat.S_ISDIR(st.st_mode):
                if existing is not None and (not stat.S_ISDIR(existing.st_mode) or _is_opaque(src_path)):
                    remove_tree(dst_path)
                    existing = None
                if existing is None:
                    os.mkdir(dst_path, 0o700)
                stack.append((src_path, dst_path, iter(os.listdir(src_path)), (src_path, dst_path, st)))
                break  # its entries next; this loop resumes where it left off
            if existing is not None:
                remove_tree(dst_path)
            if link_files:
                os.link(src_path, dst_path, follow_symlinks=False)
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], dst_path, follow_symlinks=False)
                continue
            copy_node(src_path, dst_path, st, skip_xattrs=_OVERLAY_XATTRS)
            if st.st_nlink > 1:
                links[key] = dst_path
        else:
            stack.pop()
            if done is not None:
                copy_metadata(*done, skip_xattrs=_OVERLAY_XATTRS)


# ---------------------------------------------------------------- diffing


def _walk(top: str) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under `top`, parents first,
    each directory's entries sorted; iterative, for trees of any depth."""
    stack = [_sorted_entries(top, "")]
    while stack:
        found = next(stack[-1], None)
        if found is None:
            stack.pop()
            continue
        rel, st = found
        yield rel, st
        if stat.S_ISDIR(st.st_mode):
            stack.append(_sorted_entries(top, rel))


def _sorted_entries(top: str, rel: str) -> Iterator[tuple[str, os.stat_result]]:
    with os.scandir(os.path.join(top, rel) if rel else top) as entries:
        children = [(entry.name, entry.stat(follow_symlinks=False)) for entry in entries]
    return iter([(f"{rel}/{name}" if rel else name, st) for name, st in sorted(children)])


def _index(top: str) -> dict[str, bool]:
    """Every path under `top` -> is it a directory."""
    return {rel: stat.S_ISDIR(st.st_mode) for rel, st in _walk(top)}


def _write_diff(merged: str, diff: str, lower_view, before, upper_fs: str, upper_entries) -> None:
    """Write into the empty `diff` the upperdir that turns the lowers'
    merged view (`lower_view`) into the current `merged` directory."""
    links: dict = {}
    opaque: set[str] = set()
    written_dirs: list[str] = []
    current: set[str] = set()
    current_dirs: set[str] = {""}

    def ensure_parents(rel: str) -> None:
        missing = []
        parent = os.path.dirname(rel)
        while parent and not os.path.isdir(os.path.join(diff, parent)):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for parent in reversed(missing):
            os.mkdir(os.path.join(diff, parent), 0o700)
            written_dirs.append(parent)

    for rel, st in _walk(merged):
        current.add(rel)
        old = before.get(rel)
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            marked = _marked_as(os.path.join(merged, rel)) == rel
        else:  # symlinks, devices: untagged; their inode must do
            marked = old is not None and old[0] == st.st_ino
        changed = not marked or old != (st.st_ino, st.st_ctime_ns)
        from_upper = rel in upper_entries and not _is_whiteout(upper_entries[rel])
        src = os.path.join(merged, rel)
        dst = os.path.join(diff, rel)
        if stat.S_ISDIR(st.st_mode):
            current_dirs.add(rel)
            same_dir = marked
            # A lower directory deleted and made anew: nothing of the old one
            # may show through. An opaque directory of the upper stays so.
            replaced = lower_view.get(rel) is True and not same_dir
            kept_opaque = from_upper and same_dir and _is_opaque(os.path.join(upper_fs, rel))
            if replaced or kept_opaque:
                opaque.add(rel)
            if changed or from_upper or rel in opaque:
                ensure_parents(rel)
                os.mkdir(dst, 0o700)
                written_dirs.append(rel)
                if rel in opaque:
                    os.setxattr(dst, _OPAQUE_XATTR, b"y")
            continue
        if not changed and not from_upper:
            continue
        ensure_parents(rel)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            os.link(links[key], dst, follow_symlinks=False)
            continue
        copy_node(src, dst, st, skip_xattrs=(_MARK,))
        if st.st_nlink > 1:
            links[key] = dst

    # Deletions: a lower path gone from the view gets a whiteout, unless
    # something above already hides it: a deleted parent (whiteout itself),
    # a parent that is no directory any more, or an opaque parent.
    for rel in sorted(lower_view):
        parent = os.path.dirname(rel)
        if rel in current or parent not in current_dirs or _under_any(parent, opaque):
            continue
        ensure_parents(rel)
        os.mknod(os.path.join(diff, rel), stat.S_IFCHR, 0)

    # Directory metadata last, deepest first, so adding entries does not
    # disturb the times just set.
    for rel in sorted(set(written_dirs), key=lambda r: r.count("/"), reverse=True):
        path = os.path.join(merged, rel)
        copy_metadata(path, os.path.join(diff, rel), os.lstat(path), skip_xattrs=(_MARK,))
    copy_metadata(merged, diff, os.lstat(merged), skip_xattrs=(_MARK,))


def _mark(top: str) -> dict[str, tuple[int, int]]:
    """Tag each directory and regular file of a fresh copy with its path,
    and return every entry's (inode, ctime).

    Inode numbers are reused as soon as freed (rm -rf d; mkdir d may give d
    its old number back), so identity is the tag, which a new or moved file
    lacks or has wrong. Content and metadata changes show in ctime; the wait
    at the end makes sure any later change gets a strictly later ctime than
    the coarse clock gave the copies.
    """
    before = {}
    latest = 0
    for rel, st in _walk(top):
        path = os.path.join(top, rel)
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            os.setxattr(path, _MARK, rel.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            st = os.lstat(path)
        before[rel] = (st.st_ino, st.st_ctime_ns)
        latest = max(latest, st.st_ctime_ns)
    # The probe lives beside `top`, not in it: it must not touch the view.
    probe = tempfile.mktemp(prefix=".tick-", dir=os.path.dirname(top))
    while True:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        now = os.lstat(probe).st_ctime_ns
        os.unlink(probe)
        if now > latest:
            return before
        time.sleep(0.001)


def _marked_as(path: str) -> str | None:
    try:
        return os.getxattr(path, _MARK, follow_symlinks=False).decode("utf-8", "surrogateescape")
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def _under_any(path: str, dirs: set[str]) -> bool:
    while path:
        if path in dirs:
            return True
        path = os.path.dirname(path)
    return False


def _lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
