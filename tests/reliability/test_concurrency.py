"""Four builds at once on one root, sharing one `sharing=locked` cache
mount: all succeed, the lock serialises the cache's users, and the images
are those four serial builds make."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from builder.root.doctor import check
from builder.root.worker import Worker
from e2e.helpers import build_image


def _dockerfile(ref: str) -> str:
    # read-sleep-write on the shared cache: without the lock, updates are lost
    return f"""FROM {ref}
ARG N
RUN --mount=type=cache,id=shared,target=/cache,sharing=locked \\
    i=$(cat /cache/count 2>/dev/null || echo 0); sleep 0.3; echo $((i + 1)) > /cache/count; echo "build $N" > /mine
RUN echo "done $N" > /done
"""


def _tree(rootfs: Path) -> dict[str, str]:
    return {str(p.relative_to(rootfs)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(rootfs.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_four_concurrent_builds_share_a_root_and_a_locked_cache(tmp_path, busybox_image):
    shared = tmp_path / "shared-root"
    dockerfile = _dockerfile(busybox_image.ref)
    args = [{"N": str(n), "SOURCE_DATE_EPOCH": "0"} for n in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda a: build_image(tmp_path, shared, dockerfile, build_args=a), args))
    serial = [build_image(tmp_path, tmp_path / "serial-root", dockerfile, build_args=a) for a in args]
    for together, alone, a in zip(concurrent, serial, args):
        assert together.read_text("/mine") == f"build {a['N']}\n"
        assert _tree(together.rootfs) == _tree(alone.rootfs)
        # image IDs differ by the files' mtimes (times of the runs); the
        # files and the image config are the same
        assert together.config == alone.config
        assert len(together.manifest["layers"]) == len(alone.manifest["layers"])
    (count,) = (shared / "cachemounts").rglob("count")
    assert count.read_text() == "4\n"  # no update lost: the lock held
    worker = Worker.open(shared, "builtin")
    try:
        assert check(worker) == []
    finally:
        worker.close()
