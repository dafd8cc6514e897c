"""A push as the progress display shows it: a step `pushing REF` of its
own (builder.solver.tasks.Task) with BuildKit's statuses.

BuildKit's exporter shows `pushing layers` until every blob is in the
registry, then `pushing manifest for REF@sha256:...`; docker 26 pushing
a build adds one status per layer, `pushing layer <12 hex>`, with the
bytes sent of its size. pybuild shows all three: a slow push of a large
layer moves on screen instead of looking hung. A layer the registry had
already (or mounted from the repository it was pulled from) is a status
completed at once with no bytes, as docker 26 shows it.
"""

from __future__ import annotations

from typing import Callable

from builder.image import CONFIG_TYPES, Descriptor
from builder.registry.pushing import BlobState, PushProgress, reporting_to
from builder.registry.reference import Reference
from cache.digest import Digest

LAYERS = "pushing layers"


class ShownPush(PushProgress):
    """A push's progress as statuses of `task`."""

    def __init__(self, task, ref: Reference, top: Descriptor):
        self._task = task
        self._manifest = f"pushing manifest for {ref.with_digest(None)}@{top.digest}"

    def blob(self, desc: Descriptor, sent: int, state: BlobState) -> None:
        if desc.media_type in CONFIG_TYPES:
            return  # small, and not a layer: docker shows none either
        status_id = f"pushing layer {desc.digest.short}"
        if state is BlobState.SENDING:
            self._task.status(status_id, sent, desc.size)
        elif state is BlobState.PUSHED:
            self._task.status(status_id, desc.size, desc.size, done=True)
        else:
            self._task.status(status_id, done=True)

    def blobs_pushed(self) -> None:
        self._task.status(LAYERS, done=True)
        self._task.status(self._manifest)


def push_shown(reporter, ref: Reference, top: Descriptor, send: Callable[[], Digest]) -> Digest:
    """`send()` — a registry client's push of `top` (a manifest or index)
    under `ref` — shown by `reporter` as the step `pushing REF`; its digest."""
    task = reporter.task(f"pushing {ref}")
    task.status(LAYERS)
    try:
        with reporting_to(ShownPush(task, ref, top)):
            digest = send()
    except BaseException as exc:
        task.end(exc)
        raise
    task.end()
    return digest
