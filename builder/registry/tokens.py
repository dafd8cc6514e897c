"""How a registry client authenticates: the registry's challenge (a 401's
WWW-Authenticate) remembered per host, basic credentials or docker's token
flow answered from the credential source, tokens cached per scope until
shortly before they expire."""

from __future__ import annotations

import base64
import threading
import time
from typing import Callable
from urllib.parse import urlencode, urlsplit

import requests

from builder.errors import RegistryError
from builder.registry.auth import Challenge, CredentialSource, Credentials
from builder.registry.reference import Reference
from builder.registry.transport import (
    MAX_TOKEN_SIZE,
    checked_url,
    json_object,
    oserror_reason,
    preload,
    redact_url,
    response_error,
)

# A token without `expires_in` is valid for 60 seconds (docker token spec).
_DEFAULT_TOKEN_LIFETIME = 60


def basic_authorization(creds: Credentials) -> str:
    pair = f"{creds.username}:{creds.password}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


def pull_scope(ref: Reference) -> str:
    return f"repository:{ref.repository}:pull"


def push_scope(ref: Reference) -> str:
    return f"repository:{ref.repository}:pull,push"


def unauthorized_hint(error: RegistryError, registry: str, creds: Credentials | None) -> RegistryError:
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


class Authorizer:
    """The Authorization header of each request a RegistryClient sends.

    `send` is the client's one HTTP exchange (builder.registry.transport.send
    on its session), used for the token server; `plain_http(host)` tells
    whether the client speaks plain HTTP to a host, which a token realm
    must match (see _check_realm)."""

    def __init__(self, credentials: CredentialSource, send: Callable[..., requests.Response],
                 plain_http: Callable[[str], bool]):
        self._credentials = credentials
        self._send = send
        self._plain_http = plain_http
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, frozenset[str]], tuple[str, float]] = {}
        self._token_locks: dict[tuple[str, frozenset[str]], threading.Lock] = {}

    def refused(self, resp: requests.Response, what: str, ref: Reference) -> RegistryError:
        """The error for a refused request, saying whether credentials were sent."""
        return unauthorized_hint(response_error(resp, what), ref.registry, self.creds(ref))

    def creds(self, ref: Reference) -> Credentials | None:
        return self._credentials(ref.registry)

    def authorization(self, ref: Reference, scopes: tuple[str, ...]) -> str | None:
        """The Authorization header for a host whose challenge we already know,
        so that only the first request to a registry pays for a 401."""
        with self._lock:
            challenge = self._challenges.get(ref.api_host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self.creds(ref)
            return basic_authorization(creds) if creds else None
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

    def answer_challenge(self, ref: Reference, challenge: Challenge, scopes: tuple[str, ...],
                         refused: str | None) -> bool:
        """Remember how this registry wants to be spoken to; False when we
        have nothing better to offer than what was just refused."""
        if challenge.scheme == "basic":
            if self.creds(ref) is None:
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
        creds = self.creds(ref)
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
                basic = basic_authorization(creds) if creds is not None else None
                resp = self._send("GET", url, headers={}, authorization=basic, body=None, verify=True)
            preload(resp, MAX_TOKEN_SIZE,
                    lambda: RegistryError(f"{what}: token response larger than {MAX_TOKEN_SIZE} bytes"))
            if resp.status_code != 200:
                raise self.refused(resp, what, ref)
            data = resp.content
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise RegistryError(f"{what}: {oserror_reason(exc)}", transient=True) from exc
        except requests.RequestException as exc:
            raise RegistryError(f"{what}: {exc}") from exc
        try:
            answer = json_object(data)
            token = answer.get("token") or answer["access_token"]
            lifetime = int(answer.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{what}: invalid token response") from exc
        with self._lock:
            # Renew a little early so a token never expires in flight.
            self._tokens[(ref.api_host, frozenset(scopes))] = (token, time.monotonic() + lifetime * 0.9)
        return token
