"""HTTP as the registry client speaks it (builder/registry/client.py): URLs
checked before they are used, a session that never reads ~/.netrc, one
exchange with its redirects followed by hand so that credentials stay
with their origin, bodies read up to a cap, and distribution error bodies
turned into one RegistryError line."""

from __future__ import annotations

import json
from typing import Callable, Mapping
from urllib.parse import quote, urljoin, urlsplit

import requests

from builder.errors import RegistryError

# Token answers and other bodies are small too: a registry or token server
# sending more is refused (or, for bodies never used, cut) at this size
# instead of filling memory.
MAX_TOKEN_SIZE = 1 << 20
# Go's http.Client stops after 10 redirects too.
MAX_REDIRECTS = 10
# Small enough that a dropped connection loses little: bytes of a read cut
# short are lost, the complete chunks before it are kept and resumed after.
STREAM_CHUNK = 64 << 10
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 30.0


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


def json_object(data: bytes) -> dict:
    """`data` parsed as a JSON object; ValueError for anything else,
    a nesting too deep for the parser (RecursionError) included."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def oserror_reason(exc: BaseException) -> str:
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


def origin_of(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: what must be equal for a URL to be the same
    server as another, to be sent its credentials."""
    parts = urlsplit(checked_url(url))
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def read_capped(resp: requests.Response, limit: int, too_large: Callable[[], RegistryError] | None) -> bytes:
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
    for chunk in resp.iter_content(STREAM_CHUNK):
        if size + len(chunk) > limit:
            if too_large is not None:
                raise too_large()
            parts.append(chunk[:limit - size])
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def preload(resp: requests.Response, limit: int = MAX_TOKEN_SIZE,
            too_large: Callable[[], RegistryError] | None = None) -> None:
    """Read a body that is not streamed to its caller (see read_capped)
    and give it to requests as if it had read it itself, so that
    `.content` and `.json()` work and the connection is reused. An error
    body is read for its message only: one cut short is just not parsed."""
    with resp:
        resp._content = read_capped(resp, limit, too_large if resp.status_code < 300 else None)


def redact_url(url: str) -> str:
    """A URL for messages: without its query (an upload's state, a
    pre-signed CDN link's signature)."""
    return url.split("?", 1)[0]


def response_error(resp: requests.Response, what: str) -> RegistryError:
    """A distribution error body (`{"errors": [{"code", "message"}]}`) as one line."""
    code = message = None
    try:
        errors = json_object(resp.content).get("errors") or []
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
                         transient=status in TRANSIENT_STATUS)


def retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER)
    except ValueError:
        # An HTTP date is allowed too; our own backoff is a fine stand-in.
        return None


def with_query(url: str, **params: str) -> str:
    """Add parameters to an upload URL that may already carry its own state."""
    extra = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def send(session: requests.Session, method: str, url: str, *, headers: Mapping[str, str],
         authorization: str | None, body: Callable[[], object] | None, verify: str | bool,
         timeout: tuple[float, float]) -> requests.Response:
    """One HTTP exchange, its redirects followed here rather than by
    requests: `authorization` goes only to the origin (scheme, host,
    port) of `url` — a blob redirected to a CDN, or any other host or
    port, gets no credentials. The response is streamed."""
    first = origin_of(url)
    for _ in range(MAX_REDIRECTS + 1):
        sent = dict(headers)
        if authorization and origin_of(url) == first:
            sent["Authorization"] = authorization
        resp = session.request(method, url, headers=sent, data=body() if body else None, stream=True,
                               timeout=timeout, verify=verify, allow_redirects=False)
        if not resp.is_redirect:
            return resp
        resp.close()
        url = checked_url(resp.headers["Location"], resp.url)
        if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
            method, body = "GET", None  # as browsers and requests do
    raise RegistryError(f"{method} {redact_url(url)}: more than {MAX_REDIRECTS} redirects")
