"""Registry credentials go only where they belong (issue 14, attack 11).

- A token realm gets the registry's credentials (docker's token flow), so
  it must be HTTPS — plain HTTP only when the registry itself is reached
  over plain HTTP *and* the realm's host is one pybuild would speak plain
  HTTP to (loopback, or listed insecure). Attacked with real
  docker-registry instances in token mode whose realm is a recording
  server: an HTTPS registry naming an http:// realm on loopback, and a
  loopback registry naming an http:// realm on another (non-loopback)
  address. The recording server must receive nothing.
- The Authorization header goes to the registry's own origin only: a blob
  GET redirected to another port, or an upload Location on another port,
  gets none (the fault proxy in front of the real registry makes both).

That a loopback registry with its realm on another loopback port still
works is tests/builder/test_registry.py::test_bearer_token_registry and
tests/e2e/test_registry_auth.py.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from builder.registry.auth import Credentials
from builder.errors import RegistryError
from builder.registry.reference import Reference
from builder.registry.client import RegistryClient
from builder.registry.hosts import RegistryHosts
from fixtures import busybox
from fixtures.images import make_image
from fixtures.proxy import FaultProxy
from fixtures.pybuild import pybuild_env
from fixtures.registry import remove_registry, start_registry
from fixtures.servers import RecordingServer, send
from fixtures.tls import address_on_loopback, make_certificates

USER, PASSWORD = "builder", "realm-must-not-see-this"


def _realm(blobs: Path | None = None):
    """How the recording server answers: as a token realm that hands out
    tokens to anyone, serving any blob of `blobs` (a directory of sha256
    blobs) it is asked for, and 401 to the rest."""

    def answer(handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        status, body = 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"recorded"}]}'
        if handler.path.startswith("/token"):
            status, body = 200, json.dumps({"token": "stolen", "expires_in": 300}).encode()
        elif "/blobs/sha256:" in handler.path and blobs is not None:
            path = blobs / handler.path.rsplit("sha256:", 1)[1].split("?")[0]
            if path.is_file():
                status, body = 200, path.read_bytes()
        send(handler, status, body, {"Content-Type": "application/json"})
    return answer


def _docker_config(tmp_path: Path, host: str, user: str = USER, password: str = PASSWORD) -> Path:
    """A docker config.json holding `user`'s credentials for `host`."""
    directory = tmp_path / "docker-config"
    directory.mkdir(exist_ok=True)
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": pair}}}))
    return directory


def _pybuild(tmp_path: Path, *args: str, docker_config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["pybuild", *args], capture_output=True, text=True, timeout=180,
                          env=pybuild_env(tmp_path, DOCKER_CONFIG=str(docker_config)))


def _build_from(tmp_path: Path, ref: str, docker_config: Path, config: str = "") -> subprocess.CompletedProcess:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(f"FROM {ref}\n")
    (tmp_path / "config.toml").write_text(config)
    return _pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "--progress", "plain",
                    "--config", str(tmp_path / "config.toml"), str(context), docker_config=docker_config)


def _token_registry(root: Path, realm: str, **kwargs):
    certs = make_certificates(root / "token-certs", "127.0.0.1")
    return start_registry(root / "registry", token={"realm": realm, "service": "pybuild-test", "issuer": "test",
                                                     "rootcertbundle": certs[0]}, **kwargs)


def test_an_https_registry_naming_a_plain_http_realm_gets_no_credentials(tmp_path):
    recorder = RecordingServer(_realm())
    try:
        with address_on_loopback() as address:
            registry = _token_registry(tmp_path, f"{recorder.url}/token", address=address,
                                       tls=make_certificates(tmp_path / "certs", address))
            try:
                done = _build_from(tmp_path, f"{registry.host}/busybox:latest",
                                   _docker_config(tmp_path, registry.host),
                                   config=f'[registry."{registry.host}"]\nca = "{registry.ca}"\n')
            finally:
                remove_registry(registry)
    finally:
        recorder.close()
    assert done.returncode == 1
    assert "refusing a plain-HTTP token realm" in done.stderr and "Traceback" not in done.stderr
    assert PASSWORD not in done.stderr
    assert recorder.requests == []


def test_a_loopback_registry_naming_a_plain_http_realm_on_another_host_gets_no_credentials(tmp_path):
    with address_on_loopback() as address:
        recorder = RecordingServer(_realm(), address)
        registry = _token_registry(tmp_path, f"{recorder.url}/token")
        try:
            ref, creds = f"{registry.host}/busybox:latest", _docker_config(tmp_path, registry.host)
            refused = _build_from(tmp_path, ref, creds)
            seen_when_refused = list(recorder.requests)
            # Listed as insecure, the realm's host is one the user accepts
            # plain HTTP to: then the token flow runs (and the registry
            # refuses this realm's token, which it did not sign).
            realm_host = recorder.url.split("://", 1)[1]
            allowed = _build_from(tmp_path, ref, creds, config=f'[registry."{realm_host}"]\ninsecure = true\n')
        finally:
            remove_registry(registry)
            recorder.close()
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "refusing a plain-HTTP token realm" in refused.stderr and f"host {realm_host}" in refused.stderr
    assert seen_when_refused == []
    assert allowed.returncode == 1 and "refusing" not in allowed.stderr
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert ("GET", recorder.requests[0][1], basic) == recorder.requests[0]


@pytest.fixture
def pushed_to_auth_registry(auth_registry, busybox_image):
    ref = f"{auth_registry.host}/redirected:latest"
    busybox.skopeo_push(busybox_image.layout, "latest", ref,
                        creds=f"{auth_registry.username}:{auth_registry.password}")
    return busybox_image


def test_a_blob_redirected_to_another_port_gets_no_credentials(tmp_path, auth_registry, pushed_to_auth_registry):
    recorder = RecordingServer(_realm(pushed_to_auth_registry.layout / "blobs" / "sha256"))
    proxy = FaultProxy(auth_registry.host)
    proxy.faults.redirect_blobs_to = recorder.url
    try:
        config = _docker_config(tmp_path, proxy.host, auth_registry.username, auth_registry.password)
        done = _pybuild(tmp_path, "pull", "--root", str(tmp_path / "root"), f"{proxy.host}/redirected:latest",
                        docker_config=config)
    finally:
        proxy.close()
        recorder.close()
    assert done.returncode == 0, done.stderr
    blob_gets = [r for r in recorder.requests if "/blobs/" in r[1]]
    assert len(blob_gets) == 2  # the config and the layer, served after the redirect
    assert [auth for _, _, auth in recorder.requests] == [None] * len(recorder.requests)
    # ... while the registry's own origin was sent the credentials.
    assert any(headers.get("Authorization", "").startswith("Basic ") for _, _, headers in proxy.requests)


def test_an_upload_location_on_another_port_gets_no_credentials(tmp_path, store, auth_registry):
    recorder = RecordingServer(_realm())
    proxy = FaultProxy(auth_registry.host)
    proxy.faults.upload_location_to = recorder.url
    creds = {proxy.host: Credentials(auth_registry.username, auth_registry.password)}
    client = RegistryClient(store, auth=creds.get, hosts=RegistryHosts(), retries=0)
    image = make_image(store, [{"moved": os.urandom(32)}])
    try:
        with pytest.raises(RegistryError, match="unauthorized"):
            client.push(Reference.parse(f"{proxy.host}/moved:v1"), image)
    finally:
        client.close()
        proxy.close()
        recorder.close()
    assert recorder.requests, "the upload never reached the moved Location"
    assert [auth for _, _, auth in recorder.requests] == [None] * len(recorder.requests)
    assert any(headers.get("Authorization", "").startswith("Basic ") for _, _, headers in proxy.requests)
