"""The objects one pybuild process keeps for a root directory."""

from __future__ import annotations

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
        root.mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
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
