"""The objects one pybuild process keeps for a root directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cache.errors import CacheError
from cache.index import Index
from cache.store import ContentStore
from runtime.errors import RuntimeFailure


def default_root() -> Path:
    if os.environ.get("PYBUILD_ROOT"):
        return Path(os.path.abspath(os.environ["PYBUILD_ROOT"]))  # as builder.config.resolve
    if os.geteuid() == 0:
        return Path("/var/lib/pybuild")
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "pybuild"


class _LayerTars:
    """builder.export.layers.SnapshotTars, imported when a lazy blob is first read."""

    def __init__(self, root: Path, snapshots):
        self._args = (root, snapshots)
        self._tars = None

    def __getattr__(self, name):
        if self._tars is None:
            from builder.export.layers import SnapshotTars

            self._tars = SnapshotTars(*self._args)
        return getattr(self._tars, name)


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
        from builder.root.reclaim import reclaim
        from runtime.executors import default_isolation
        from runtime.snapshot import default_snapshotter

        root = Path(root) if root else default_root()
        root.mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
        snapshots = default_snapshotter(root / "snapshots")
        snapshots.leases.hold()
        try:
            worker = cls(
                root=root,
                store=ContentStore(root / "content", _LayerTars(root, snapshots)),
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
