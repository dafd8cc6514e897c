"""Which snapshotter a root uses, and why: kernel overlayfs (with
`userxattr` inside a user namespace, Linux >= 5.11), else fuse-overlayfs,
else copies (`native`, BuildKit's name for it). `pybuild info` shows the
choice and its reason.

Probing mounts and unmounts, so the answer is kept in the root per kernel
release and kind of namespace: a fully cached build mounts nothing at all.
`PYBUILD_SNAPSHOTTER` overrides the probe (as buildkitd's
--oci-worker-snapshotter), for a host where the probe's answer is not the
one wanted, and to measure each (bench/).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import MountFailed, RuntimeFailure
from runtime.fsutil import remove_tree
from runtime.fuse_snapshot import FuseOverlaySnapshotter, fuse_overlayfs
from runtime.mounts import mount_overlay, unmount
from runtime.snapshot import OVERLAY_FLAGS, CopySnapshotter, OverlaySnapshotter, lease_dir
from runtime.userns import in_user_namespace
from runtime.whiteouts import OPAQUE_XATTR, is_whiteout

__all__ = ["ENV_SNAPSHOTTER", "NAMES", "Choice", "UnknownSnapshotter", "choose", "default_snapshotter"]

ENV_SNAPSHOTTER = "PYBUILD_SNAPSHOTTER"
NAMES = ("overlayfs", "fuse-overlayfs", "native")
_PROBE_FILE = ".overlay-probe"
_FUSE_PROBE_FILE = ".fuse-probe"


class UnknownSnapshotter(RuntimeFailure):
    pass


@dataclass(frozen=True)
class Choice:
    name: str  # one of NAMES
    reason: str
    volatile: bool = False  # overlayfs only: `volatile` mounts work
    binary: str | None = None  # fuse-overlayfs only: its path


def default_snapshotter(root: Path):
    """The snapshotter `choose` picks for the snapshots under `root`."""
    choice = choose(root)
    if choice.name == "overlayfs":
        snapshotter = OverlaySnapshotter(root)
        snapshotter.volatile = choice.volatile
        return snapshotter
    if choice.name == "fuse-overlayfs":
        return FuseOverlaySnapshotter(root, choice.binary)
    return CopySnapshotter(root)


def choose(root: Path) -> Choice:
    Path(root).mkdir(parents=True, exist_ok=True)
    userns = in_user_namespace()
    usable, volatile, why = _overlay_support(os.path.realpath(root), userns)
    wanted = os.environ.get(ENV_SNAPSHOTTER, "") or "auto"
    if wanted not in NAMES + ("auto",):
        raise UnknownSnapshotter(f"{ENV_SNAPSHOTTER}={wanted}: choose auto, {', '.join(NAMES)}")
    if wanted == "overlayfs" or (wanted == "auto" and usable):
        if not usable:
            raise UnknownSnapshotter(f"{ENV_SNAPSHOTTER}=overlayfs: {why}")
        kernel = "kernel overlayfs" + (" with userxattr, in a user namespace" if userns else "")
        return Choice("overlayfs", kernel + (f" (set by {ENV_SNAPSHOTTER})" if wanted != "auto" else ""), volatile)
    if wanted == "native":
        return Choice("native", f"set by {ENV_SNAPSHOTTER}")
    fuse = fuse_overlayfs()
    fuse_missing = ("fuse-overlayfs not found" if shutil.which("fuse-overlayfs") is None
                    else "/dev/fuse cannot be opened")
    if wanted == "fuse-overlayfs":
        if fuse is None:
            raise UnknownSnapshotter(f"{ENV_SNAPSHOTTER}=fuse-overlayfs: {fuse_missing}")
        return Choice("fuse-overlayfs", f"set by {ENV_SNAPSHOTTER}", binary=fuse)
    # Only now: an openable /dev/fuse does not mean mount(2) is allowed (a
    # container given the device but not the right to mount).
    fuse_why = fuse_missing if fuse is None else _fuse_support(os.path.realpath(root), userns, fuse)
    if not fuse_why:
        return Choice("fuse-overlayfs", f"kernel overlayfs cannot be mounted here ({why})", binary=fuse)
    return Choice("native", f"kernel overlayfs cannot be mounted here ({why}) and fuse-overlayfs cannot either "
                            f"({fuse_why}): snapshots are copied")


def _remembered(root: str, name: str, key: dict, probe) -> dict:
    """The record `name` in `root` when it was made under `key` (the
    kernel release, the namespace kind, ...), else `probe()`'s answer, saved
    there: probing mounts, and a fully cached build mounts nothing."""
    record = os.path.join(root, name)
    key = {"kernel": os.uname().release, **key}
    try:
        with open(record) as f:
            saved = json.load(f)
        if isinstance(saved, dict) and all(saved.get(k) == v for k, v in key.items()):
            return saved
    except (OSError, ValueError):
        pass
    answer = {**key, **probe()}
    fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=root)
    with os.fdopen(fd, "w") as f:
        json.dump(answer, f)
    os.replace(tmp, record)
    return answer


@functools.lru_cache(maxsize=None)
def _overlay_support(root: str, userns: bool) -> tuple[bool, bool, str]:
    """(overlay usable, `volatile` usable, why not) on `root`, remembered."""
    def probe() -> dict:
        why = _overlay_works(root, ",volatile")
        volatile = why is None
        if not volatile:
            why = _overlay_works(root, "")
        return {"overlay": why is None, "volatile": volatile, "why": why or ""}

    saved = _remembered(root, _PROBE_FILE, {"userns": userns, "flags": OVERLAY_FLAGS}, probe)
    return bool(saved.get("overlay")), bool(saved.get("volatile")), str(saved.get("why", ""))


@functools.lru_cache(maxsize=None)
def _fuse_support(root: str, userns: bool, binary: str) -> str:
    """Why fuse-overlayfs cannot mount on `root` ("" when it can), remembered
    as the kernel overlay's answer is."""
    def probe() -> dict:
        leases = lease_dir(root)
        owner = leases.hold()
        directory = tempfile.mkdtemp(prefix=f".probe-{owner}-", dir=root)
        try:
            snaps = FuseOverlaySnapshotter(Path(directory) / "snapshots", binary)
            lower = snaps.create()
            (snaps.fs_path(lower) / "f").write_bytes(b"")
            upper = snaps.create()
            with snaps.mount([lower], upper) as merged:
                (merged / "g").write_bytes(b"")
            return {"why": "" if (snaps.fs_path(upper) / "g").exists() else "a write did not reach the upper"}
        except (OSError, RuntimeFailure) as exc:
            return {"why": str(exc)}
        finally:
            remove_tree(directory)
            leases.release()

    return str(_remembered(root, _FUSE_PROBE_FILE, {"userns": userns}, probe).get("why", ""))


def _overlay_works(root: str, extra: str) -> str | None:
    """Mount a tiny overlay, delete a lower file and replace a lower
    directory: whiteouts and opaque xattrs must land in the upper. None if
    they do, else what went wrong."""
    leases = lease_dir(root)
    owner = leases.hold()
    try:
        return _probe(tempfile.mkdtemp(prefix=f".probe-{owner}-", dir=root), extra)
    finally:
        leases.release()


def _probe(probe: str, extra: str) -> str | None:
    try:
        for name in ("lower/d", "upper", "work", "merged"):
            os.makedirs(os.path.join(probe, name))
        Path(probe, "lower/f").write_bytes(b"")
        Path(probe, "lower/d/x").write_bytes(b"")
        merged = os.path.join(probe, "merged")
        try:
            mount_overlay(probe, merged, f"lowerdir=lower,upperdir=upper,workdir=work,{OVERLAY_FLAGS}{extra}",
                          readonly=False)
        except MountFailed as exc:
            cause = exc.__cause__
            return f"mount: {cause.strerror}" if isinstance(cause, OSError) and cause.strerror else str(exc)
        try:
            os.unlink(os.path.join(merged, "f"))
            remove_tree(os.path.join(merged, "d"))
            os.mkdir(os.path.join(merged, "d"))
        except OSError as exc:
            return f"writing through the overlay: {exc.strerror}"
        finally:
            unmount(merged)
        if not is_whiteout(os.lstat(os.path.join(probe, "upper/f"))):
            return "a deletion left no whiteout in the upper"
        if os.getxattr(os.path.join(probe, "upper/d"), OPAQUE_XATTR, follow_symlinks=False) != b"y":
            return "a replaced directory was not marked opaque"
        return None
    except OSError as exc:
        return f"probe: {exc.strerror or exc}"
    finally:
        remove_tree(probe)
