"""The registry client: with builder/registry/transport.py and its pushes
(builder/registry/pushing.py), the only code of pybuild that speaks HTTP.

It implements the parts of the OCI distribution API a builder needs —
resolve a name to a platform's manifest, pull blobs, push blobs and
manifests — and hands back only what it verified: every manifest and blob
lands in the `ContentStore` through a writer that checks digest and size,
so nothing unverified from the network is ever stored or returned.

requests exceptions are translated here, once, into `RegistryError`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import Callable, Iterable, Mapping

import requests

from builder.config import file_registry_hosts
from builder.errors import RegistryError
from builder.image import CONFIG_TYPES, INDEX_TYPES, Descriptor
from builder.image_schema import SchemaError, check_config, check_index, check_manifest
from builder.registry.auth import CredentialSource, DockerConfigAuth, parse_challenge
from builder.registry.hosts import RegistryHosts
from builder.registry.manifests import (
    MANIFEST_ACCEPT,
    MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
    ResolvedManifest,
    verified_manifest,
)
from builder.registry.platforms import no_match, select_platform
from builder.registry.pushing import PushMethods
from builder.registry.reference import Reference
from builder.registry.tokens import Authorizer, pull_scope
from builder.registry.transport import (
    MAX_TOKEN_SIZE,
    STREAM_CHUNK,
    TRANSIENT_STATUS,
    Session,
    json_object,
    oserror_reason,
    origin_of,
    preload,
    response_error,
    retry_after,
    send,
)
from cache.digest import Digest
from cache.errors import DigestMismatch, InvalidDigest, SizeMismatch
from cache.store import ContentStore

Progress = Callable[[Descriptor, int, int], None]


class RegistryClient(PushMethods):
    """Talks to registries on behalf of one content store.

    `insecure` lists registries (host:port) reached over plain HTTP besides
    the loopback ones; `auth` maps a registry to `Credentials` (default: the
    docker config). Requests are retried `retries` times on connection
    errors, 429 and 5xx, waiting `backoff` doubled each time or the
    server's Retry-After. Blobs up to `chunk_size` are uploaded in one PUT,
    larger ones in PATCH chunks of that size.
    """

    def __init__(self, store: ContentStore, *, insecure: Iterable[str] = (),
                 auth: CredentialSource | None = None, retries: int = 3, backoff: float = 0.5,
                 timeout: tuple[float, float] = (10.0, 120.0), chunk_size: int = 32 << 20,
                 parallel: int = 4, hosts: RegistryHosts | None = None):
        self._store = store
        # Mirrors, plain-HTTP hosts and CA bundles of the config file (builder.registry.hosts).
        self._hosts = hosts if hosts is not None else file_registry_hosts()
        self._insecure = frozenset(insecure) | self._hosts.insecure
        self._pull_from: dict[str, str] = {}  # repository name -> the mirror (or origin) that answered
        self._retries = retries
        self._backoff = backoff
        # $PYBUILD_REGISTRY_TIMEOUT: seconds a stalled read may last (default 120)
        read_timeout = os.environ.get("PYBUILD_REGISTRY_TIMEOUT")
        self._timeout = (timeout[0], float(read_timeout)) if read_timeout else timeout
        self._chunk_size = chunk_size
        self._parallel = parallel
        # requests.Session is not documented thread-safe: one per thread.
        self._local = threading.local()
        self._lock = threading.Lock()
        self._auth = Authorizer(auth if auth is not None else DockerConfigAuth(), self._send, self._plain_http)
        # Where each pulled blob came from, for cross-repository mounts.
        self._origins: dict[Digest, Reference] = {}

    def allow_insecure(self, registry: str) -> None:
        """Reach `registry` over plain HTTP from now on (`registry.insecure=true`)."""
        self._insecure = self._insecure | {registry}

    # -- transport -----------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = Session()
            session.headers["User-Agent"] = "pybuild/0.1"
        return session

    def _base(self, ref: Reference) -> str:
        scheme = "http" if ref.is_loopback or ref.registry in self._insecure else "https"
        return f"{scheme}://{ref.api_host}/v2/"

    def _send(self, method: str, url: str, *, headers: Mapping[str, str], authorization: str | None,
              body: Callable[[], object] | None, verify: str | bool) -> requests.Response:
        """One exchange (transport.send) on this thread's session, with this client's timeouts."""
        return send(self._session(), method, url, headers=headers, authorization=authorization, body=body,
                    verify=verify, timeout=self._timeout)

    def _plain_http(self, host: str) -> bool:
        """Whether pybuild speaks plain HTTP to `host` (host[:port]): a
        loopback address, or one the user listed as insecure."""
        return Reference(host, "_").is_loopback or host in self._insecure

    def _sleep_before_retry(self, attempt: int, resp: requests.Response | None = None) -> None:
        delay = retry_after(resp) if resp is not None else None
        time.sleep(delay if delay is not None else self._backoff * (2 ** attempt))

    def _request(self, method: str, ref: Reference, url: str, scopes: tuple[str, ...], *,
                 headers: Mapping[str, str] | None = None, body: Callable[[], object] | None = None,
                 stream: bool = False, retry: bool = True, limit: int = MAX_TOKEN_SIZE,
                 too_large: Callable[[], RegistryError] | None = None) -> requests.Response:
        """One API call with authentication, retries, and translated errors.

        Returns any response the server gave (the caller judges the status)
        except a 401 we could not answer with credentials, which is
        returned as is. `body` is a factory so a retry sends it afresh.
        The body is in memory on return unless `stream` was asked for and
        the status is a success: at most `limit` bytes of it, a success's
        longer body raising `too_large()` (without it, cut: such bodies
        are not used).

        Credentials (and a 401's challenge) belong to the registry's own
        origin: an upload Location or a redirect elsewhere gets none, and
        another server's challenge is never answered with them.
        """
        host = ref.api_host
        try:
            registry_origin = origin_of(self._base(ref))  # a mirror's name comes from the config file
            origin_of(url)
        except requests.exceptions.InvalidURL as exc:
            raise RegistryError(f"registry {host}: {exc}") from None
        attempt = 0
        answered_challenge = False
        while True:
            authorization = self._auth.authorization(ref, scopes) if origin_of(url) == registry_origin else None
            try:
                resp = self._send(method, url, headers=headers or {}, authorization=authorization, body=body,
                                  verify=self._hosts.verify(ref.registry))
                if not stream or resp.status_code >= 300:
                    preload(resp, limit, too_large)
            except requests.exceptions.SSLError as exc:
                raise RegistryError(f"cannot reach registry {host}: TLS error: {oserror_reason(exc)}") from exc
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                # ChunkedEncodingError: the connection dropped in a body being read.
                if retry and attempt < self._retries:
                    self._sleep_before_retry(attempt)
                    attempt += 1
                    continue
                raise RegistryError(f"cannot reach registry {host}: {oserror_reason(exc)}",
                                    transient=True) from exc
            except requests.RequestException as exc:  # a bad redirect URL, an undecodable body...
                raise RegistryError(f"registry {host}: {exc}") from exc
            if resp.status_code == 401 and not answered_challenge and origin_of(resp.url) == registry_origin:
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate"))
                if challenge is not None and self._auth.answer_challenge(ref, challenge, scopes, authorization):
                    answered_challenge = True
                    continue
                return resp
            if retry and resp.status_code in TRANSIENT_STATUS and attempt < self._retries:
                self._sleep_before_retry(attempt, resp)
                attempt += 1
                continue
            return resp

    # -- manifests -----------------------------------------------------------------

    def _get_manifest(self, ref: Reference, obj: str, expected: Descriptor | None,
                      what: str) -> tuple[Descriptor, dict]:
        """Fetch, verify and store one manifest or index by tag or digest."""
        url = f"{self._base(ref)}{ref.repository}/manifests/{obj}"
        resp = self._request("GET", ref, url, (pull_scope(ref),), headers={"Accept": MANIFEST_ACCEPT},
                             limit=MAX_MANIFEST_SIZE,
                             too_large=lambda: RegistryError(f"{what}: manifest larger than {MAX_MANIFEST_SIZE} bytes"))
        if resp.status_code != 200:
            raise self._auth.refused(resp, what, ref)
        data = resp.content
        claimed, media_type, body = verified_manifest(data, obj, expected, resp.headers, what)
        self._store.put_bytes(data, expected=claimed)
        platform = expected.platform if expected is not None else None
        return Descriptor(media_type, claimed, len(data), platform=platform), body

    def _pull_endpoints(self, ref: Reference) -> list[Reference]:
        """Where to pull `ref` from: its registry's mirrors in order, then
        the registry itself; the one that answered last time first."""
        registries = [*self._hosts.mirrors_of(ref.registry), ref.registry]
        preferred = self._pull_from.get(ref.name)
        if preferred in registries:
            registries.remove(preferred)
            registries.insert(0, preferred)
        return [replace(ref, registry=registry) for registry in registries]

    def _from_mirrors(self, ref: Reference, attempt: Callable[[Reference], object]):
        """Run `attempt` against each pull endpoint until one succeeds; the
        origin's error (the last tried) is the one raised."""
        endpoints = self._pull_endpoints(ref)
        failure = None
        for endpoint in endpoints:
            try:
                answer = attempt(endpoint)
            except RegistryError as exc:
                failure = exc
                continue
            with self._lock:
                self._pull_from[ref.name] = endpoint.registry
            return answer
        raise failure

    def manifest(self, ref: Reference) -> tuple[Descriptor, dict]:
        """The manifest or index `ref` names, whichever it is (no platform
        chosen: what a signature names), verified and stored; mirrors first."""
        return self._from_mirrors(ref, lambda at: self._get_manifest(at, at.object, None, f"failed to resolve {ref}"))

    def resolve(self, ref: Reference, platform="linux/amd64") -> ResolvedManifest:
        """Resolve a name to the manifest of one platform; the index (if
        any), manifest and config are stored in the content store, layers
        are not (see `fetch_blob`). Mirrors are tried first; the answer
        names `ref`'s own registry."""
        resolved = self._from_mirrors(ref, lambda endpoint: self._resolve_at(endpoint, platform))
        return replace(resolved, ref=replace(resolved.ref, registry=ref.registry))

    def _resolve_at(self, ref: Reference, platform) -> ResolvedManifest:
        what = f"failed to resolve {ref}"
        top, top_json = self._get_manifest(ref, ref.object, None, what)
        index = None
        manifest, manifest_json = top, top_json
        if top.media_type in INDEX_TYPES:
            index = top
            try:
                check_index(top_json)
            except SchemaError as exc:
                raise RegistryError(f"{what}: malformed index {top.digest}: {exc}") from None
            entries = top_json.get("manifests") or []
            child = select_platform(entries, platform)
            if child is None:
                raise RegistryError(f"{what}: {no_match(entries, platform)}")
            manifest, manifest_json = self._get_manifest(ref, str(child.digest), child, what)
        try:
            check_manifest(manifest_json)
            config = Descriptor.from_json(manifest_json["config"])
            layers = tuple(Descriptor.from_json(layer) for layer in manifest_json.get("layers") or ())
        except (KeyError, TypeError, ValueError, InvalidDigest) as exc:
            raise RegistryError(f"{what}: malformed manifest {manifest.digest}: {exc}") from exc
        too_large = RegistryError(f"{what}: image config {config.digest} is larger than {MAX_CONFIG_SIZE} bytes")
        if config.size > MAX_CONFIG_SIZE:
            raise too_large  # before a byte is downloaded
        self.fetch_blob(ref, config)
        with self._store.open(config.digest) as stored:
            data = stored.read(MAX_CONFIG_SIZE + 1)
        if len(data) > MAX_CONFIG_SIZE:
            raise too_large
        try:
            config_json = json_object(data)
        except ValueError as exc:
            raise RegistryError(f"{what}: image config {config.digest} is not valid JSON: {exc}") from exc
        if config.media_type in CONFIG_TYPES:
            # Other config types (a pybuild cache's) are their reader's to check.
            try:
                check_config(config_json)
            except SchemaError as exc:
                raise RegistryError(f"{what}: invalid image config {config.digest}: {exc}") from None
        return ResolvedManifest(ref.with_digest(top.digest), manifest, manifest_json, config, config_json,
                                layers, index)

    # -- blobs -----------------------------------------------------------------------

    def fetch_blob(self, ref: Reference, desc: Descriptor, progress: Progress | None = None) -> None:
        """Download one blob into the store, verified by digest and size,
        from a mirror of ref's registry or the registry itself.

        A dropped connection resumes where it stopped with a Range request
        (a server ignoring Range resends everything; the bytes we already
        hold are skipped). On a mismatch nothing is stored.
        """
        if self._store.has(desc.digest):
            if progress:
                progress(desc, desc.size, desc.size)
            return
        self._from_mirrors(ref, lambda endpoint: self._fetch_blob_at(endpoint, desc, progress))
        with self._lock:
            self._origins[desc.digest] = ref

    def _fetch_blob_at(self, ref: Reference, desc: Descriptor, progress: Progress | None) -> None:
        if self._store.has(desc.digest):
            return
        what = f"failed to fetch {desc.digest} from {ref.name}"
        url = f"{self._base(ref)}{ref.repository}/blobs/{desc.digest}"
        with self._store.writer(desc.digest, desc.size) as writer:
            attempt = 0
            while True:
                # identity: the bytes hashed must be the bytes the registry stores.
                headers = {"Accept-Encoding": "identity"}
                if writer.size:
                    headers["Range"] = f"bytes={writer.size}-"
                try:
                    self._stream_blob(ref, url, headers, writer, desc, progress, what)
                    break
                except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError,
                        requests.Timeout) as exc:
                    if attempt >= self._retries:
                        raise RegistryError(f"{what}: download interrupted: {oserror_reason(exc)}",
                                            transient=True) from exc
                    self._sleep_before_retry(attempt)
                    attempt += 1
            try:
                writer.commit()
            except (DigestMismatch, SizeMismatch) as exc:
                raise RegistryError(f"{what}: {exc}") from exc

    def _stream_blob(self, ref: Reference, url: str, headers: Mapping[str, str], writer, desc: Descriptor,
                     progress: Progress | None, what: str) -> None:
        resp = self._request("GET", ref, url, (pull_scope(ref),), headers=headers, stream=True)
        with resp:
            if resp.status_code == 206:
                skip = 0
            elif resp.status_code == 200:
                skip = writer.size
            else:
                raise self._auth.refused(resp, what, ref)
            for chunk in resp.iter_content(STREAM_CHUNK):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                if writer.size + len(chunk) > desc.size:
                    # Stop a server that streams more than the descriptor allows.
                    raise RegistryError(f"{what}: blob is larger than the {desc.size} bytes expected")
                writer.write(chunk)
                if progress:
                    progress(desc, writer.size, desc.size)

    def check_login(self, registry: str) -> None:
        """`docker login`'s check: GET /v2/ answering the registry's challenge
        with our credentials (for token auth, a token with no scope).
        Raises RegistryError when the registry refuses them."""
        ref = Reference(registry, "library/pybuild-login" if registry == "docker.io" else "pybuild-login")
        with self._request("GET", ref, self._base(ref), ()) as resp:
            if resp.status_code == 401:
                raise RegistryError(f"login to {registry} failed: unauthorized: incorrect username or password",
                                    status=401)
            if resp.status_code != 200:
                raise response_error(resp, f"login to {registry} failed")

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
