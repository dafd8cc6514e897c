"""The registry client: the only module of pybuild that speaks HTTP.

It implements the parts of the OCI distribution API a builder needs —
resolve a name to a platform's manifest, pull blobs, push blobs and
manifests — and hands back only what it verified: every manifest and blob
lands in the `ContentStore` through a writer that checks digest and size,
so nothing unverified from the network is ever stored or returned.

requests exceptions are translated here, once, into `RegistryError`.
"""

from __future__ import annotations

import base64
import os
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping
from urllib.parse import quote, urlencode, urljoin, urlsplit

import requests

from builder.registry.auth import Challenge, CredentialSource, Credentials, DockerConfigAuth, parse_challenge
from builder.errors import RegistryError
from builder.image import (
    CONFIG_TYPES,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Image,
)
from builder.image_schema import SchemaError, check_config, check_index, check_manifest
from builder.registry.reference import Reference
from builder.registry.hosts import RegistryHosts
from cache.digest import Digest
from cache.errors import BlobNotFound, DigestMismatch, InvalidDigest, SizeMismatch
from cache.store import ContentStore

# Accepting all four lets the registry answer with whatever it stores
# instead of converting (or refusing, for an OCI index asked as docker).
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
# containerd's limit: a manifest is metadata, never megabytes.
MAX_MANIFEST_SIZE = 4 << 20
# An image config is metadata too. containerd and BuildKit read one whole
# with no limit; containers/image (Podman, CRI-O, skopeo) refuses one over
# 4 MiB (MaxConfigBodySize), which years of real images have stayed under.
MAX_CONFIG_SIZE = 4 << 20
# Token answers and other bodies are small too: a registry or token server
# sending more is refused (or, for bodies never used, cut) at this size
# instead of filling memory.
MAX_TOKEN_SIZE = 1 << 20
# Go's http.Client stops after 10 redirects too.
_MAX_REDIRECTS = 10
# Small enough that a dropped connection loses little: bytes of a read cut
# short are lost, the complete chunks before it are kept and resumed after.
_STREAM_CHUNK = 64 << 10
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 30.0
# A token without `expires_in` is valid for 60 seconds (docker token spec).
_DEFAULT_TOKEN_LIFETIME = 60

Progress = Callable[[Descriptor, int, int], None]


@dataclass(frozen=True)
class ResolvedManifest:
    """A name resolved to one platform's image, manifest and config stored.

    `ref` is the name pinned to the digest it resolved to (the index's when
    the name points at an index, as `docker pull` reports), `index` the
    index's descriptor when there was one.
    """

    ref: Reference
    manifest: Descriptor
    manifest_json: dict
    config: Descriptor
    config_json: dict
    layers: tuple[Descriptor, ...]
    index: Descriptor | None = None

    @property
    def image(self) -> Image:
        return Image(self.manifest, self.config, self.layers)


def parse_platform(platform) -> dict:
    """`"linux/arm64/v8"`, a mapping, or any object whose `str()` is such a
    string (frontend.ops.Platform) → `{"os", "architecture"[, "variant"]}`.
    Aliases (`aarch64`, `armhf`...) are the caller's to normalise, with the
    one parser builds use (builder.build.parse_platform)."""
    if isinstance(platform, Mapping):
        body = {"os": platform.get("os", "linux"), "architecture": platform["architecture"]}
        if platform.get("variant"):
            body["variant"] = platform["variant"]
    else:
        parts = str(platform).split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise RegistryError(f"invalid platform {platform!r}: expected os/arch[/variant]")
        body = {"os": parts[0], "architecture": parts[1]}
        if len(parts) == 3:
            body["variant"] = parts[2]
    return body


def _variant(platform: Mapping) -> str:
    # arm64 images rarely say v8, and asking for linux/arm64/v8 must find them.
    variant = platform.get("variant") or ""
    return variant or ("v8" if platform.get("architecture") == "arm64" else "")


def select_platform(manifests: Iterable[Mapping], platform) -> Descriptor | None:
    """The first entry of an index matching os, architecture and (when asked
    for) variant; entries without a platform (attestations) never match."""
    want = parse_platform(platform)
    fallback = None
    for entry in manifests:
        have = entry.get("platform") or {}
        if have.get("os") != want["os"] or have.get("architecture") != want["architecture"]:
            continue
        if entry.get("mediaType", OCI_MANIFEST) not in MANIFEST_TYPES:
            continue
        if _variant(have) == _variant(want):
            return Descriptor.from_json(entry)
        if "variant" not in want and fallback is None:
            fallback = Descriptor.from_json(entry)
    return fallback


def checked_url(url: str, base: str = "") -> str:
    """`url` (joined onto `base`, as a Location header is) once it parses,
    its port included. urllib raises ValueError on `http://[::1/x` or a port
    past 65535 and requests lets it through, from its own redirect handling
    too: here it becomes requests' InvalidURL, which every caller of this
    client reports as its own error like any other failed request."""
    joined = url
    try:
        joined = urljoin(base, url) if base else url
        urlsplit(joined).port
    except ValueError as exc:
        raise requests.exceptions.InvalidURL(f"invalid URL {redact_url(joined)!r}: {exc}") from None
    return joined


class Session(requests.Session):
    """A requests session that never reads `~/.netrc` (or `$NETRC`).

    requests looks a netrc entry up for every request sent without `auth=`
    (it then replaces an Authorization header set by hand) and for every
    redirect's new host. A registry's credentials come from the docker
    config (builder.registry.auth) and an `ADD <url>`'s from its URL only, as in
    BuildKit, whose HTTP clients read no netrc: the host's netrc entry for
    a server a Dockerfile names must never reach it. Everything else
    `trust_env` gives stays: the proxies of HTTP_PROXY, HTTPS_PROXY and
    NO_PROXY (re-read for each redirect's host) and REQUESTS_CA_BUNDLE;
    requests reads those in `request()` and `send()`, not here.
    """

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        # In prepare_request, trust_env decides the netrc lookup and nothing else.
        trust_env, self.trust_env = self.trust_env, False
        try:
            return super().prepare_request(request)
        finally:
            self.trust_env = trust_env

    def request(self, method, url, *args, **kwargs) -> requests.Response:
        return super().request(method, checked_url(url), *args, **kwargs)

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # requests reads the Location even of a redirect it does not follow.
        target = super().get_redirect_target(resp)
        if target is not None:
            checked_url(target, resp.url)
        return target

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        # requests' own: drop Authorization when the redirect leaves the
        # host; then it would add the new host's netrc entry, which we never do.
        url = prepared_request.url
        if "Authorization" in prepared_request.headers and self.should_strip_auth(response.request.url, url):
            del prepared_request.headers["Authorization"]


def _json_object(data: bytes) -> dict:
    """`data` parsed as a JSON object; ValueError for anything else,
    a nesting too deep for the parser (RecursionError) included."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _oserror_reason(exc: BaseException) -> str:
    """The socket error at the bottom of requests' exception chain, in the
    words `connect(2)` uses: `connection refused`, `no route to host`."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror and not isinstance(
            current, (requests.RequestException,)
        ):
            return current.strerror[0].lower() + current.strerror[1:]
        todo.extend(e for e in (current.__cause__, current.__context__, getattr(current, "reason", None))
                    if isinstance(e, BaseException))
        todo.extend(a for a in current.args if isinstance(a, BaseException))
    return str(exc)


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: what must be equal for a URL to be the same
    server as another, to be sent its credentials."""
    parts = urlsplit(checked_url(url))
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _read_capped(resp: requests.Response, limit: int, too_large: Callable[[], RegistryError] | None) -> bytes:
    """The body of a streamed response, read piece by piece up to `limit`
    bytes: past it, `too_large()` is raised (before a byte is read when
    Content-Length says so), or without it the body is cut there."""
    try:
        declared = int(resp.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if too_large is not None and declared > limit:
        raise too_large()
    parts, size = [], 0
    for chunk in resp.iter_content(_STREAM_CHUNK):
        if size + len(chunk) > limit:
            if too_large is not None:
                raise too_large()
            parts.append(chunk[:limit - size])
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _preload(resp: requests.Response, limit: int = MAX_TOKEN_SIZE,
             too_large: Callable[[], RegistryError] | None = None) -> None:
    """Read a body that is not streamed to its caller (see _read_capped)
    and give it to requests as if it had read it itself, so that
    `.content` and `.json()` work and the connection is reused. An error
    body is read for its message only: one cut short is just not parsed."""
    with resp:
        resp._content = _read_capped(resp, limit, too_large if resp.status_code < 300 else None)


def redact_url(url: str) -> str:
    """A URL for messages: without its query (an upload's state, a
    pre-signed CDN link's signature)."""
    return url.split("?", 1)[0]


def _response_error(resp: requests.Response, what: str) -> RegistryError:
    """A distribution error body (`{"errors": [{"code", "message"}]}`) as one line."""
    code = message = None
    try:
        errors = _json_object(resp.content).get("errors") or []
    except ValueError:
        errors = []
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        code, message = errors[0].get("code"), errors[0].get("message")
    status = resp.status_code
    if status == 404:
        detail = "not found"
    elif status == 401:
        detail = f"unauthorized: {message or 'authentication required'}"
    elif status == 403:
        detail = f"denied: {message or 'requested access to the resource is denied'}"
    elif code:
        detail = f"{code.lower()}: {message}" if message else code.lower()
    else:
        detail = f"unexpected status {status} {resp.reason or ''}".rstrip()
    return RegistryError(f"{what}: {detail}", status=status, code=code,
                         transient=status in _TRANSIENT_STATUS)


def _unauthorized_hint(error: RegistryError, registry: str, creds: Credentials | None) -> RegistryError:
    """Say whether credentials were sent: a registry answers "authentication
    required" to wrong credentials as well as to none, and the two need
    different fixes (BuildKit prints a bare "401 Unauthorized" for both)."""
    if error.status != 401:
        return error
    if creds is None:
        hint = f"no credentials found for {registry} (pybuild login {registry})"
    else:
        hint = f"the credentials for {registry} were refused"
    return RegistryError(f"{error}; {hint}", status=error.status, code=error.code, transient=error.transient)


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER)
    except ValueError:
        # An HTTP date is allowed too; our own backoff is a fine stand-in.
        return None


def _with_query(url: str, **params: str) -> str:
    """Add parameters to an upload URL that may already carry its own state."""
    extra = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def _from_start(blob):
    """A file to send (again, after a redirect) from its first byte."""
    blob.seek(0)
    return blob


def _basic_authorization(creds: Credentials) -> str:
    pair = f"{creds.username}:{creds.password}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


def _pull_scope(ref: Reference) -> str:
    return f"repository:{ref.repository}:pull"


def _push_scope(ref: Reference) -> str:
    return f"repository:{ref.repository}:pull,push"


class RegistryClient:
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
        self._hosts = hosts if hosts is not None else RegistryHosts.from_environment()
        self._insecure = frozenset(insecure) | self._hosts.insecure
        self._pull_from: dict[str, str] = {}  # repository name -> the mirror (or origin) that answered
        self._credentials = auth if auth is not None else DockerConfigAuth()
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
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, frozenset[str]], tuple[str, float]] = {}
        self._token_locks: dict[tuple[str, frozenset[str]], threading.Lock] = {}
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

    def _sleep_before_retry(self, attempt: int, resp: requests.Response | None = None) -> None:
        delay = _retry_after(resp) if resp is not None else None
        time.sleep(delay if delay is not None else self._backoff * (2 ** attempt))

    def _send(self, method: str, url: str, *, headers: Mapping[str, str], authorization: str | None,
              body: Callable[[], object] | None, verify: str | bool) -> requests.Response:
        """One HTTP exchange, its redirects followed here rather than by
        requests: `authorization` goes only to the origin (scheme, host,
        port) of `url` — a blob redirected to a CDN, or any other host or
        port, gets no credentials. The response is streamed."""
        origin = _origin(url)
        for _ in range(_MAX_REDIRECTS + 1):
            sent = dict(headers)
            if authorization and _origin(url) == origin:
                sent["Authorization"] = authorization
            resp = self._session().request(method, url, headers=sent, data=body() if body else None,
                                           stream=True, timeout=self._timeout, verify=verify,
                                           allow_redirects=False)
            if not resp.is_redirect:
                return resp
            resp.close()
            url = checked_url(resp.headers["Location"], resp.url)
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                method, body = "GET", None  # as browsers and requests do
        raise RegistryError(f"{method} {redact_url(url)}: more than {_MAX_REDIRECTS} redirects")

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
            registry_origin = _origin(self._base(ref))  # a mirror's name comes from the config file
            _origin(url)
        except requests.exceptions.InvalidURL as exc:
            raise RegistryError(f"registry {host}: {exc}") from None
        attempt = 0
        answered_challenge = False
        while True:
            authorization = self._authorization(ref, scopes) if _origin(url) == registry_origin else None
            try:
                resp = self._send(method, url, headers=headers or {}, authorization=authorization, body=body,
                                  verify=self._hosts.verify(ref.registry))
                if not stream or resp.status_code >= 300:
                    _preload(resp, limit, too_large)
            except requests.exceptions.SSLError as exc:
                raise RegistryError(f"cannot reach registry {host}: TLS error: {_oserror_reason(exc)}") from exc
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                # ChunkedEncodingError: the connection dropped in a body being read.
                if retry and attempt < self._retries:
                    self._sleep_before_retry(attempt)
                    attempt += 1
                    continue
                raise RegistryError(f"cannot reach registry {host}: {_oserror_reason(exc)}",
                                    transient=True) from exc
            except requests.RequestException as exc:  # a bad redirect URL, an undecodable body...
                raise RegistryError(f"registry {host}: {exc}") from exc
            if resp.status_code == 401 and not answered_challenge and _origin(resp.url) == registry_origin:
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate"))
                if challenge is not None and self._answer_challenge(ref, challenge, scopes, authorization):
                    answered_challenge = True
                    continue
                return resp
            if retry and resp.status_code in _TRANSIENT_STATUS and attempt < self._retries:
                self._sleep_before_retry(attempt, resp)
                attempt += 1
                continue
            return resp

    def _refused(self, resp: requests.Response, what: str, ref: Reference) -> RegistryError:
        return _unauthorized_hint(_response_error(resp, what), ref.registry, self._creds(ref))

    # -- authentication ------------------------------------------------------------

    def _creds(self, ref: Reference) -> Credentials | None:
        return self._credentials(ref.registry)

    def _authorization(self, ref: Reference, scopes: tuple[str, ...]) -> str | None:
        """The Authorization header for a host whose challenge we already know,
        so that only the first request to a registry pays for a 401."""
        with self._lock:
            challenge = self._challenges.get(ref.api_host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self._creds(ref)
            return _basic_authorization(creds) if creds else None
        return f"Bearer {self._token(ref, challenge, scopes)}"

    def _token(self, ref: Reference, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        """A cached token for these scopes, or a new one. Parallel uploads
        wait for one fetch instead of each asking the token server."""
        key = (ref.api_host, frozenset(scopes))
        with self._lock:
            fetch_lock = self._token_locks.setdefault(key, threading.Lock())
        with fetch_lock:
            with self._lock:
                cached = self._tokens.get(key)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
            return self._fetch_token(ref, challenge, scopes)

    def _answer_challenge(self, ref: Reference, challenge: Challenge, scopes: tuple[str, ...],
                          refused: str | None) -> bool:
        """Remember how this registry wants to be spoken to; False when we
        have nothing better to offer than what was just refused."""
        if challenge.scheme == "basic":
            if self._creds(ref) is None:
                return False
            with self._lock:
                self._challenges[ref.api_host] = challenge
            return True
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return False
        key = (ref.api_host, frozenset(scopes))
        with self._lock:
            self._challenges[ref.api_host] = challenge
            # Forget the token only if it is the one refused (expired or too
            # narrow), not one another thread fetched meanwhile.
            cached = self._tokens.get(key)
            if cached is not None and refused == f"Bearer {cached[0]}":
                del self._tokens[key]
        return True

    def _plain_http(self, host: str) -> bool:
        """Whether pybuild speaks plain HTTP to `host` (host[:port]): a
        loopback address, or one the user listed as insecure."""
        return Reference(host, "_").is_loopback or host in self._insecure

    def _check_realm(self, ref: Reference, realm: str, what: str) -> None:
        """A token realm gets the registry's credentials (docker's token
        flow) and hands out tokens: it must be HTTPS, unless the registry
        itself is reached over plain HTTP and the realm's host is one
        pybuild would speak plain HTTP to as well (loopback, insecure).
        Docker checks neither; an HTTPS registry naming an http:// realm
        would have the credentials cross the network in the clear."""
        try:
            parts = urlsplit(checked_url(realm))
        except requests.exceptions.InvalidURL:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(f"{what}: the registry sent an invalid token realm {realm!r}")
        if parts.scheme == "https":
            return
        realm_host = parts.netloc.rpartition("@")[2]
        if not (self._plain_http(ref.registry) and self._plain_http(realm_host)):
            raise RegistryError(f"{what}: refusing a plain-HTTP token realm: credentials and tokens go to "
                                f"a realm over HTTPS only (plain HTTP only when the registry and the realm's "
                                f"host {realm_host} are both loopback or insecure registries)")

    def _fetch_token(self, ref: Reference, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        """Docker's token flow: GET realm?service=..&scope=.. with basic
        credentials when we have them (anonymous otherwise), or the OAuth
        refresh-token POST for identity tokens. The credentials go to the
        realm's origin only, never where it redirects."""
        realm = challenge.params["realm"]
        service = challenge.params.get("service")
        wanted = scopes or tuple(filter(None, [challenge.params.get("scope")]))
        creds = self._creds(ref)
        what = f"cannot get a token for {ref.name} from {redact_url(realm)}"
        self._check_realm(ref, realm, what)
        try:
            if creds is not None and creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "client_id": "pybuild", "scope": " ".join(wanted)}
                if service:
                    form["service"] = service
                resp = self._send("POST", realm, headers={}, authorization=None, body=lambda: form, verify=True)
            else:
                params = ([("service", service)] if service else []) + [("scope", s) for s in wanted]
                url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(params)}" if params else realm
                basic = _basic_authorization(creds) if creds is not None else None
                resp = self._send("GET", url, headers={}, authorization=basic, body=None, verify=True)
            _preload(resp, MAX_TOKEN_SIZE,
                     lambda: RegistryError(f"{what}: token response larger than {MAX_TOKEN_SIZE} bytes"))
            if resp.status_code != 200:
                raise self._refused(resp, what, ref)
            data = resp.content
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise RegistryError(f"{what}: {_oserror_reason(exc)}", transient=True) from exc
        except requests.RequestException as exc:
            raise RegistryError(f"{what}: {exc}") from exc
        try:
            answer = _json_object(data)
            token = answer.get("token") or answer["access_token"]
            lifetime = int(answer.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{what}: invalid token response") from exc
        with self._lock:
            # Renew a little early so a token never expires in flight.
            self._tokens[(ref.api_host, frozenset(scopes))] = (token, time.monotonic() + lifetime * 0.9)
        return token

    # -- manifests -----------------------------------------------------------------

    def _get_manifest(self, ref: Reference, obj: str, expected: Descriptor | None,
                      what: str) -> tuple[Descriptor, dict]:
        """Fetch, verify and store one manifest or index by tag or digest."""
        url = f"{self._base(ref)}{ref.repository}/manifests/{obj}"
        resp = self._request("GET", ref, url, (_pull_scope(ref),), headers={"Accept": MANIFEST_ACCEPT},
                             limit=MAX_MANIFEST_SIZE,
                             too_large=lambda: RegistryError(f"{what}: manifest larger than {MAX_MANIFEST_SIZE} bytes"))
        if resp.status_code != 200:
            raise self._refused(resp, what, ref)
        data = resp.content
        header_digest = resp.headers.get("Docker-Content-Digest")
        content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        # What we asked for by digest must hash to it; for a tag, the
        # registry's Docker-Content-Digest is the best claim there is.
        try:
            if expected is not None:
                claimed = expected.digest
            elif obj.startswith(("sha256:", "sha512:")):
                claimed = Digest.parse(obj)
            elif header_digest:
                claimed = Digest.parse(header_digest)
            else:
                claimed = Digest.of_bytes(data)
        except InvalidDigest as exc:
            raise RegistryError(f"{what}: registry sent an invalid digest: {exc}") from exc
        actual_hash = claimed.hasher()
        actual_hash.update(data)
        if actual_hash.hexdigest() != claimed.hex:
            raise RegistryError(f"{what}: manifest does not match its digest {claimed}")
        if expected is not None and len(data) != expected.size:
            raise RegistryError(f"{what}: manifest {claimed} has {len(data)} bytes, expected {expected.size}")
        try:
            body = _json_object(data)
        except ValueError as exc:
            raise RegistryError(f"{what}: manifest is not valid JSON: {exc}") from exc
        media_type = body.get("mediaType") or content_type
        if media_type not in MANIFEST_TYPES + INDEX_TYPES:
            # An OCI manifest may omit mediaType; its shape tells.
            if "manifests" in body:
                media_type = OCI_INDEX
            elif "config" in body and "layers" in body:
                media_type = OCI_MANIFEST
            else:
                raise RegistryError(f"{what}: unsupported manifest type {media_type or 'unknown'}")
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
            child = select_platform(top_json.get("manifests") or [], platform)
            if child is None:
                wanted = "/".join(parse_platform(platform).values())
                raise RegistryError(f"{what}: no match for platform {wanted} in manifest list")
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
            config_json = _json_object(data)
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
                        raise RegistryError(f"{what}: download interrupted: {_oserror_reason(exc)}",
                                            transient=True) from exc
                    self._sleep_before_retry(attempt)
                    attempt += 1
            try:
                writer.commit()
            except (DigestMismatch, SizeMismatch) as exc:
                raise RegistryError(f"{what}: {exc}") from exc

    def _stream_blob(self, ref: Reference, url: str, headers: Mapping[str, str], writer, desc: Descriptor,
                     progress: Progress | None, what: str) -> None:
        resp = self._request("GET", ref, url, (_pull_scope(ref),), headers=headers, stream=True)
        with resp:
            if resp.status_code == 206:
                skip = 0
            elif resp.status_code == 200:
                skip = writer.size
            else:
                raise self._refused(resp, what, ref)
            for chunk in resp.iter_content(_STREAM_CHUNK):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                if writer.size + len(chunk) > desc.size:
                    # Stop a server that streams more than the descriptor allows.
                    raise RegistryError(f"{what}: blob is larger than the {desc.size} bytes expected")
                writer.write(chunk)
                if progress:
                    progress(desc, writer.size, desc.size)

    def _blob_exists(self, ref: Reference, digest: Digest, scopes: tuple[str, ...]) -> bool:
        url = f"{self._base(ref)}{ref.repository}/blobs/{digest}"
        with self._request("HEAD", ref, url, scopes) as resp:
            if resp.status_code == 200:
                return True
            if resp.status_code == 404:
                return False
            raise self._refused(resp, f"failed to check {digest} in {ref.name}", ref)

    def push_blob(self, ref: Reference, desc: Descriptor) -> None:
        """Make sure the registry has one blob of our store under `ref`'s
        repository: present already, mounted from the repository we pulled it
        from, or uploaded. Uploads are not idempotent mid-way, so a transient
        failure restarts the whole upload, a bounded number of times."""
        if not self._store.has(desc.digest):
            raise RegistryError(f"cannot push {desc.digest} to {ref.name}: blob not in the local store")
        scopes = (_push_scope(ref),)
        if self._blob_exists(ref, desc.digest, scopes):
            return
        attempt = 0
        while True:
            try:
                self._upload_blob(ref, desc)
                return
            except RegistryError as exc:
                if not exc.transient or attempt >= self._retries:
                    raise
                self._sleep_before_retry(attempt)
                attempt += 1

    def _upload_blob(self, ref: Reference, desc: Descriptor) -> None:
        what = f"failed to push {desc.digest} to {ref.name}"
        base = self._base(ref)
        uploads = f"{base}{ref.repository}/blobs/uploads/"
        origin = self._origins.get(desc.digest)
        scopes = (_push_scope(ref),)
        start_url = uploads
        if origin is not None and origin.registry == ref.registry and origin.repository != ref.repository:
            scopes = (_push_scope(ref), _pull_scope(origin))
            start_url = _with_query(uploads, mount=str(desc.digest), **{"from": origin.repository})
        resp = self._request("POST", ref, start_url, scopes, retry=False)
        with resp:
            if resp.status_code == 201:
                return  # mounted from the origin repository
            if resp.status_code != 202 or "Location" not in resp.headers:
                raise self._refused(resp, what, ref)
            location = self._upload_location(resp, resp.headers["Location"], what)
        if desc.size <= self._chunk_size:
            with self._store.open(desc.digest) as blob:
                resp = self._request("PUT", ref, _with_query(location, digest=str(desc.digest)), scopes,
                                     headers={"Content-Type": "application/octet-stream"},
                                     body=lambda: _from_start(blob), retry=False)
        else:
            location = self._upload_chunks(ref, desc, location, scopes, what)
            resp = self._request("PUT", ref, _with_query(location, digest=str(desc.digest)), scopes,
                                 headers={"Content-Length": "0"}, retry=False)
        with resp:
            if resp.status_code != 201:
                raise self._refused(resp, what, ref)

    @staticmethod
    def _upload_location(resp: requests.Response, location: str, what: str) -> str:
        try:
            return checked_url(location, resp.url)
        except requests.exceptions.InvalidURL as exc:
            raise RegistryError(f"{what}: the registry sent an invalid upload location: {exc}") from None

    def _upload_chunks(self, ref: Reference, desc: Descriptor, location: str, scopes: tuple[str, ...],
                       what: str) -> str:
        with self._store.open(desc.digest) as blob:
            offset = 0
            while chunk := blob.read(self._chunk_size):
                end = offset + len(chunk) - 1
                resp = self._request("PATCH", ref, location, scopes, body=lambda: chunk, retry=False,
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Range": f"{offset}-{end}",
                                              "Content-Length": str(len(chunk))})
                with resp:
                    if resp.status_code != 202:
                        raise self._refused(resp, what, ref)
                    location = self._upload_location(resp, resp.headers.get("Location", location), what)
                offset = end + 1
        return location

    def put_manifest(self, ref: Reference, desc: Descriptor) -> Digest:
        """PUT a stored manifest or index under `ref`'s tag (or digest)."""
        what = f"failed to push {ref}"
        try:
            data = self._store.read_bytes(desc.digest)
        except BlobNotFound as exc:
            raise RegistryError(f"{what}: manifest not in the local store") from exc
        url = f"{self._base(ref)}{ref.repository}/manifests/{ref.tag or desc.digest}"
        resp = self._request("PUT", ref, url, (_push_scope(ref),), headers={"Content-Type": desc.media_type},
                             body=lambda: data)
        with resp:
            if resp.status_code not in (200, 201):
                raise self._refused(resp, what, ref)
            answered = resp.headers.get("Docker-Content-Digest")
        if answered and answered != str(desc.digest):
            raise RegistryError(f"{what}: registry stored the manifest as {answered}, expected {desc.digest}")
        return desc.digest

    def push(self, ref: Reference, image: Image, extra_blobs: Iterable[Descriptor] = ()) -> Digest:
        """Upload the image's blobs (in parallel, bounded), then its
        manifest by tag; returns the manifest digest. The manifest goes last
        so a registry never holds a manifest whose blobs are missing."""
        blobs: dict[Digest, Descriptor] = {}
        for desc in (*extra_blobs, image.config, *image.layers):
            blobs.setdefault(desc.digest, desc)
        pool = ThreadPoolExecutor(max_workers=self._parallel, thread_name_prefix="push")
        try:
            futures = [pool.submit(self.push_blob, ref, desc) for desc in blobs.values()]
            for future in futures:
                future.result()
        finally:
            # After the first failure, start no further upload.
            pool.shutdown(wait=True, cancel_futures=True)
        return self.put_manifest(ref, image.manifest)

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
                raise _response_error(resp, f"login to {registry} failed")

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
