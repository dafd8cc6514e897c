"""The objects one pybuild process keeps for a root directory."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from builder.config import default_root
from builder.export.layers import SnapshotTars
from builder.root.reclaim import reclaim
from builder.errors import HostError
from cache.errors import CacheError
from cache.index import Index
from cache.store import ContentStore
from runtime.errors import RuntimeFailure


def _prepare(root: Path) -> None:
    """The root, made owner-only when pybuild makes it (as buildkitd's), and
    its directories that hold what steps wrote owner-only always: a RUN's
    cache mount can hold a setuid file, which no other user of the host may
    reach (SECURITY.md; ROOT/snapshots is kept so by the snapshotter). A root
    its owner made read-only is refused: root, and root of a rootless
    pybuild's namespace, would write there anyway."""
    try:
        info = os.stat(root)
    except FileNotFoundError:
        root.parent.mkdir(parents=True, exist_ok=True)
        root.mkdir(mode=0o700, exist_ok=True)
    else:
        if info.st_uid == os.geteuid() and not info.st_mode & stat.S_IWUSR:
            raise HostError(f"root {root} is read-only (mode {stat.S_IMODE(info.st_mode):o}): make it writable "
                            "or give another --root")
        if not os.access(root, os.W_OK | os.X_OK):
            from runtime.userns import host_ids

            raise HostError(f"root {root} is not writable by uid {host_ids()[0]} (another user's, maybe root's): "
                            "give a --root of your own (rootless: the default is ~/.local/share/pybuild)")
    for private in ("tmp", "cachemounts"):
        (root / private).mkdir(mode=0o700, exist_ok=True)
        os.chmod(root / private, 0o700)


@dataclass
class Worker:
    root: Path
    store: ContentStore
    index: Index
    snapshots: object  # runtime Snapshotter
    isolation: str
    _closed: bool = False

    @classmethod
    def open(cls, root: Path | None = None, isolation: str | None = None) -> "Worker":
        """The root's objects, with this process's lease on the root held
        until `close`, after taking back what dead processes left in it
        (builder/root/reclaim.py)."""
        from runtime.executors import default_isolation
        from runtime.snapshotters import default_snapshotter

        from runtime import userns

        if userns.missing():
            raise HostError(userns.missing())
        root = Path(root) if root else default_root()
        _prepare(root)
        snapshots = default_snapshotter(root / "snapshots")
        snapshots.leases.hold()
        try:
            worker = cls(
                root=root,
                # Lazy layers are made from their snapshots when first read.
                store=ContentStore(root / "content", SnapshotTars(root, snapshots)),
                index=Index(root / "index.db"),
                snapshots=snapshots,
                isolation=isolation or default_isolation(),
            )
        except BaseException:
            snapshots.leases.release()
            raise
        try:
            reclaim(worker)
        except (OSError, RuntimeFailure, CacheError):
            # What could not be taken back stays for `pybuild doctor` to
            # show; it must not fail the command asked for (doctor included).
            pass
        except BaseException:
            worker.close()
            raise
        return worker

    @property
    def cache_mounts(self) -> Path:
        return self.root / "cachemounts"

    def executor(self):
        from runtime.executors import get_executor

        return get_executor(self.isolation)

    def close(self) -> None:
        self.index.close()
        if not self._closed:
            self._closed = True
            self.snapshots.leases.release()
