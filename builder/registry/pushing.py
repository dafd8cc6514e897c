"""The push half of the registry client (builder/registry/client.py mixes
`PushMethods` in): blobs (present already, mounted, or uploaded), then
manifests, and what a push tells its display on the way.

A display (builder/export/pushing.py) gets a `PushProgress`: each blob's
bytes handed to the socket while it is sent, counted by the request body
itself (`UploadBody`) between the pieces it gives urllib3, so reporting
costs no system call; and the moment every blob is there and the
manifests go. It is given for a block of code (`reporting_to`), not as an
argument: a build reaches the client through builder/solver/resolver.py's
RegistryAccess, which passes no display along, and a push made in the
block (with the upload threads it starts) is the one shown.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from enum import Enum
from typing import Callable, Iterable, Iterator

import requests

from builder.errors import RegistryError
from builder.image import Descriptor, Image
from builder.registry.reference import Reference
from builder.registry.tokens import pull_scope, push_scope
from builder.registry.transport import checked_url, with_query
from cache.digest import Digest
from cache.errors import BlobNotFound

# One piece per sendall: large enough that a 1 GB layer is 4096 of them
# (urllib3 alone would read and send a file 16 KiB at a time), small
# enough that a slow registry still moves the count several times a second.
UPLOAD_PIECE = 256 << 10
REPORT_INTERVAL = 0.1  # seconds between two reports of one blob's bytes


class BlobState(Enum):
    SENDING = "sending"   # `sent` bytes handed to the socket so far (0 again when an upload restarts)
    PUSHED = "pushed"     # uploaded whole, the registry has accepted it
    EXISTS = "exists"     # the registry had it: nothing sent
    MOUNTED = "mounted"   # the registry took it from the repository it was pulled from: nothing sent


class PushProgress:
    """What a push reports, from the threads that upload; this one
    reports nothing."""

    def blob(self, desc: Descriptor, sent: int, state: BlobState) -> None:
        """Where one blob stands."""

    def blobs_pushed(self) -> None:
        """Every blob is in the registry; the manifests go now."""


_shown: ContextVar[PushProgress] = ContextVar("pybuild_push_progress", default=PushProgress())


@contextmanager
def reporting_to(progress: PushProgress):
    """Pushes made in this block, on this thread, report to `progress`."""
    token = _shown.set(progress)
    try:
        yield progress
    finally:
        _shown.reset(token)


class PushStopped(Exception):
    """An upload abandoned mid-body: another blob of the push failed, or
    the push was interrupted. urllib3 closes the connection it cut."""


class UploadBody:
    """A request body: `length` bytes of `source` (an open file or bytes)
    from `offset`, given out in pieces of UPLOAD_PIECE, calling
    `report(sent)` after a piece is sent when REPORT_INTERVAL has passed,
    and stopping (PushStopped) before a piece once `stop` is set.

    An iterable with a length: requests sends it with that Content-Length
    and urllib3 passes each piece to one sendall. Iterating starts again
    from `offset`, as a retry or a redirect needs."""

    def __init__(self, source, offset: int, length: int, report: Callable[[int], None],
                 stop: threading.Event | None = None):
        self._source, self._offset, self._length, self._report = source, offset, length, report
        self._stop = stop or threading.Event()

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        sent, last = 0, time.monotonic()
        for piece in self._pieces():
            if self._stop.is_set():
                raise PushStopped("upload stopped")
            yield piece
            sent += len(piece)
            now = time.monotonic()
            if now - last >= REPORT_INTERVAL:
                self._report(sent)
                last = now

    def _pieces(self) -> Iterator[bytes]:
        end = self._offset + self._length
        if isinstance(self._source, (bytes, bytearray, memoryview)):
            view = memoryview(self._source)
            for start in range(self._offset, end, UPLOAD_PIECE):
                yield view[start:min(start + UPLOAD_PIECE, end)]
            return
        self._source.seek(self._offset)
        left = self._length
        while left > 0:
            piece = self._source.read(min(UPLOAD_PIECE, left))
            if not piece:
                # Changed in the store since: the request promised more bytes,
                # which the registry would wait for until the timeout.
                raise RegistryError(f"cannot push: the stored blob ends {left} bytes short of its size")
            left -= len(piece)
            yield piece


class PushMethods:
    """RegistryClient's pushes; they use its _request, _auth, _base,
    _store, _origins, _chunk_size, _parallel, _retries and
    _sleep_before_retry."""

    def _blob_exists(self, ref: Reference, digest: Digest, scopes: tuple[str, ...]) -> bool:
        url = f"{self._base(ref)}{ref.repository}/blobs/{digest}"
        with self._request("HEAD", ref, url, scopes) as resp:
            if resp.status_code == 200:
                return True
            if resp.status_code == 404:
                return False
            raise self._auth.refused(resp, f"failed to check {digest} in {ref.name}", ref)

    def push_blob(self, ref: Reference, desc: Descriptor, progress: PushProgress | None = None,
                  stop: threading.Event | None = None) -> None:
        """Make sure the registry has one blob of our store under `ref`'s
        repository: present already, mounted from the repository we pulled it
        from, or uploaded. Uploads are not idempotent mid-way, so a transient
        failure restarts the whole upload, a bounded number of times; `stop`
        set abandons an upload between two pieces (PushStopped)."""
        progress = progress or PushProgress()
        if not self._store.has(desc.digest):
            raise RegistryError(f"cannot push {desc.digest} to {ref.name}: blob not in the local store")
        scopes = (push_scope(ref),)
        if self._blob_exists(ref, desc.digest, scopes):
            progress.blob(desc, 0, BlobState.EXISTS)
            return
        attempt = 0
        while True:
            try:
                state = self._upload_blob(ref, desc, progress, stop)
                progress.blob(desc, desc.size if state is BlobState.PUSHED else 0, state)
                return
            except RegistryError as exc:
                if not exc.transient or attempt >= self._retries:
                    raise
                self._sleep_before_retry(attempt)
                attempt += 1

    def _upload_blob(self, ref: Reference, desc: Descriptor, progress: PushProgress,
                     stop: threading.Event | None) -> BlobState:
        what = f"failed to push {desc.digest} to {ref.name}"
        base = self._base(ref)
        uploads = f"{base}{ref.repository}/blobs/uploads/"
        origin = self._origins.get(desc.digest)
        scopes = (push_scope(ref),)
        start_url = uploads
        if origin is not None and origin.registry == ref.registry and origin.repository != ref.repository:
            scopes = (push_scope(ref), pull_scope(origin))
            start_url = with_query(uploads, mount=str(desc.digest), **{"from": origin.repository})
        resp = self._request("POST", ref, start_url, scopes, retry=False)
        with resp:
            if resp.status_code == 201:
                return BlobState.MOUNTED
            if resp.status_code != 202 or "Location" not in resp.headers:
                raise self._auth.refused(resp, what, ref)
            location = self._upload_location(resp, resp.headers["Location"], what)
        progress.blob(desc, 0, BlobState.SENDING)
        if desc.size <= self._chunk_size:
            with self._store.open(desc.digest) as blob:
                body = UploadBody(blob, 0, desc.size, lambda sent: progress.blob(desc, sent, BlobState.SENDING),
                                  stop)
                resp = self._request("PUT", ref, with_query(location, digest=str(desc.digest)), scopes,
                                     headers={"Content-Type": "application/octet-stream"},
                                     body=lambda: body, retry=False)
        else:
            location = self._upload_chunks(ref, desc, location, scopes, what, progress, stop)
            resp = self._request("PUT", ref, with_query(location, digest=str(desc.digest)), scopes,
                                 headers={"Content-Length": "0"}, retry=False)
        with resp:
            if resp.status_code != 201:
                raise self._auth.refused(resp, what, ref)
        return BlobState.PUSHED

    @staticmethod
    def _upload_location(resp: requests.Response, location: str, what: str) -> str:
        try:
            return checked_url(location, resp.url)
        except requests.exceptions.InvalidURL as exc:
            raise RegistryError(f"{what}: the registry sent an invalid upload location: {exc}") from None

    def _upload_chunks(self, ref: Reference, desc: Descriptor, location: str, scopes: tuple[str, ...],
                       what: str, progress: PushProgress, stop: threading.Event | None) -> str:
        with self._store.open(desc.digest) as blob:
            offset = 0
            while chunk := blob.read(self._chunk_size):
                end = offset + len(chunk) - 1
                body = UploadBody(chunk, 0, len(chunk),
                                  lambda sent, before=offset: progress.blob(desc, before + sent, BlobState.SENDING),
                                  stop)
                resp = self._request("PATCH", ref, location, scopes, body=lambda: body, retry=False,
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Range": f"{offset}-{end}",
                                              "Content-Length": str(len(chunk))})
                with resp:
                    if resp.status_code != 202:
                        raise self._auth.refused(resp, what, ref)
                    location = self._upload_location(resp, resp.headers.get("Location", location), what)
                offset = end + 1
                progress.blob(desc, offset, BlobState.SENDING)
        return location

    def put_manifest(self, ref: Reference, desc: Descriptor) -> Digest:
        """PUT a stored manifest or index under `ref`'s tag (or digest)."""
        what = f"failed to push {ref}"
        try:
            data = self._store.read_bytes(desc.digest)
        except BlobNotFound as exc:
            raise RegistryError(f"{what}: manifest not in the local store") from exc
        url = f"{self._base(ref)}{ref.repository}/manifests/{ref.tag or desc.digest}"
        resp = self._request("PUT", ref, url, (push_scope(ref),), headers={"Content-Type": desc.media_type},
                             body=lambda: data)
        with resp:
            if resp.status_code not in (200, 201):
                raise self._auth.refused(resp, what, ref)
            answered = resp.headers.get("Docker-Content-Digest")
        if answered and answered != str(desc.digest):
            raise RegistryError(f"{what}: registry stored the manifest as {answered}, expected {desc.digest}")
        return desc.digest

    def _push_blobs(self, ref: Reference, blobs: Iterable[Descriptor]) -> None:
        """Each distinct blob, in parallel (bounded)."""
        progress = _shown.get()  # the pool's threads do not see this thread's context
        unique = {desc.digest: desc for desc in blobs}
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=self._parallel, thread_name_prefix="push")
        try:
            futures = [pool.submit(self.push_blob, ref, desc, progress, stop) for desc in unique.values()]
            for future in futures:
                future.result()
        except BaseException:
            # A failure or an interrupt: uploads under way stop at their next
            # piece instead of sending the rest of a large layer first.
            stop.set()
            raise
        finally:
            # After the first failure, start no further upload.
            pool.shutdown(wait=True, cancel_futures=True)
        progress.blobs_pushed()

    def push(self, ref: Reference, image: Image, extra_blobs: Iterable[Descriptor] = ()) -> Digest:
        """Upload the image's blobs, then its manifest by tag; returns the
        manifest digest. The manifest goes last so a registry never holds
        a manifest whose blobs are missing."""
        self._push_blobs(ref, (*extra_blobs, image.config, *image.layers))
        return self.put_manifest(ref, image.manifest)

    def push_index(self, ref: Reference, images: Iterable[Image], index: Descriptor) -> Digest:
        """The blobs of every image of the stored index `index` (at once:
        platforms share layers), then each image's manifest by digest, then
        the index under `ref`'s tag: the registry never holds an index
        whose manifests are missing, nor a manifest whose blobs are."""
        images = list(images)
        bare = Reference(ref.registry, ref.repository)
        self._push_blobs(bare, (desc for image in images for desc in (image.config, *image.layers)))
        for image in images:
            self.put_manifest(bare, image.manifest)
        return self.put_manifest(ref, index)
