"""The registry client against the real docker-registry (and, for faults,
the same registry behind a fault-injecting proxy)."""

import base64
import json
import os
import stat

import pytest

from builder.registry.auth import Credentials, DockerConfigAuth, no_credentials, parse_challenge
from builder.errors import RegistryError
from builder.image import OCI_INDEX, OCI_MANIFEST, Descriptor
from builder.registry.reference import Reference
from builder.registry.client import RegistryClient
from builder.registry.platforms import parse_platform, select_platform
from cache.digest import Digest
from cache.store import ContentStore
from fixtures.busybox import skopeo_inspect
from fixtures.images import make_image


def client_for(store, **kwargs) -> RegistryClient:
    kwargs.setdefault("auth", no_credentials)
    kwargs.setdefault("backoff", 0.01)
    return RegistryClient(store, **kwargs)


def ingest_is_empty(store: ContentStore) -> bool:
    return not any(store.tmp_dir.iterdir())


def corrupt_same_size(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# -- pulling ---------------------------------------------------------------------------


def test_resolve_and_pull_busybox(store, busybox_image):
    client = client_for(store)
    resolved = client.resolve(Reference.parse(busybox_image.ref))
    assert resolved.manifest.digest == busybox_image.digest
    assert resolved.manifest.media_type == OCI_MANIFEST
    assert resolved.index is None
    assert resolved.ref.digest == busybox_image.digest
    assert resolved.config.digest == busybox_image.config
    assert resolved.config_json["config"]["Cmd"] == ["sh"]
    assert tuple(layer.digest for layer in resolved.layers) == busybox_image.layers
    # manifest and config are stored, verified; layers only when fetched
    assert store.verify(resolved.manifest.digest) and store.verify(resolved.config.digest)
    assert not store.has(resolved.layers[0].digest)

    seen = []
    for layer in resolved.layers:
        client.fetch_blob(resolved.ref, layer, progress=lambda d, done, total: seen.append((d, done, total)))
        assert store.verify(layer.digest)
    assert seen[-1] == (resolved.layers[-1], resolved.layers[-1].size, resolved.layers[-1].size)
    assert ingest_is_empty(store)


def test_resolve_by_digest(store, busybox_image):
    ref = Reference.parse(f"{busybox_image.registry.host}/busybox@{busybox_image.digest}")
    resolved = client_for(store).resolve(ref)
    assert resolved.manifest.digest == busybox_image.digest
    assert resolved.image.layers == resolved.layers


def test_fetch_blob_skips_what_the_store_has(store, busybox_image, fault_proxy):
    client = client_for(store)
    resolved = client.resolve(Reference.parse(busybox_image.ref))
    client.fetch_blob(resolved.ref, resolved.layers[0])
    proxied = Reference.parse(f"{fault_proxy.host}/busybox:latest")
    client.fetch_blob(proxied, resolved.layers[0])
    assert fault_proxy.requests == []


@pytest.mark.parametrize("platform, expected", [
    ("linux/amd64", "amd64"),
    ({"os": "linux", "architecture": "amd64"}, "amd64"),
    ("linux/arm64", "arm64"),
    ("linux/arm64/v8", "arm64"),
])
def test_index_platform_selection(store, busybox_index, platform, expected):
    resolved = client_for(store).resolve(Reference.parse(busybox_index.ref), platform)
    assert resolved.index is not None and resolved.index.digest == busybox_index.digest
    assert resolved.index.media_type == OCI_INDEX
    assert resolved.ref.digest == busybox_index.digest
    assert resolved.manifest.digest == getattr(busybox_index, expected)
    assert resolved.config_json["architecture"] == expected
    assert store.has(busybox_index.digest) and store.has(resolved.manifest.digest)


def test_index_without_the_platform(store, busybox_index):
    with pytest.raises(RegistryError, match="no match for platform linux/s390x in manifest list"):
        client_for(store).resolve(Reference.parse(busybox_index.ref), "linux/s390x")


def test_select_platform_rules():
    def entry(arch, variant=None, os_="linux"):
        platform = {"os": os_, "architecture": arch}
        if variant:
            platform["variant"] = variant
        return {"mediaType": OCI_MANIFEST, "digest": str(Digest.of_bytes(repr(platform).encode())),
                "size": 1, "platform": platform}

    arm = [entry("arm", "v6"), entry("arm", "v7"), entry("arm64")]
    assert select_platform(arm, "linux/arm/v7").platform["variant"] == "v7"
    assert select_platform(arm, "linux/arm").platform["variant"] == "v7"  # containerd normalises linux/arm to arm/v7, as BuildKit asks
    assert select_platform(arm, "linux/arm64/v8").platform == {"os": "linux", "architecture": "arm64"}
    assert select_platform(arm, "windows/arm64") is None
    assert select_platform([{"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1,
                             "platform": {"os": "unknown", "architecture": "unknown"}}], "linux/amd64") is None
    assert parse_platform("linux/arm64/v8") == {"os": "linux", "architecture": "arm64", "variant": "v8"}
    with pytest.raises(RegistryError, match="invalid platform"):
        parse_platform("linux")


def test_not_found(store, registry):
    ref = Reference.parse(f"{registry.host}/nope:latest")
    with pytest.raises(RegistryError) as info:
        client_for(store).resolve(ref)
    assert str(info.value) == f"failed to resolve {registry.host}/nope:latest: not found"
    assert info.value.status == 404


def test_unreachable_registry(store):
    with pytest.raises(RegistryError) as info:
        client_for(store, retries=1).resolve(Reference.parse("127.0.0.1:1/x"))
    assert str(info.value) == "cannot reach registry 127.0.0.1:1: connection refused"


def push_unique(store, registry, repo, marker: bytes):
    """An image whose layer exists nowhere else in the registry, pushed."""
    image = make_image(store, [{"data": marker + os.urandom(4096)}])
    ref = Reference.parse(f"{registry.host}/{repo}:latest")
    client_for(store).push(ref, image)
    return ref, image


def test_tampered_blob_is_refused_and_not_stored(tmp_path, store, registry):
    ref, image = push_unique(store, registry, "tampered", b"tampered layer")
    corrupt_same_size(registry.blob_file(image.layers[0].digest))
    fresh = ContentStore(tmp_path / "fresh")
    client = client_for(fresh)
    resolved = client.resolve(ref)
    with pytest.raises(RegistryError, match=f"failed to fetch {image.layers[0].digest} .*does not match"):
        client.fetch_blob(resolved.ref, resolved.layers[0])
    assert not fresh.has(image.layers[0].digest)
    assert ingest_is_empty(fresh)


def test_tampered_manifest_is_refused(tmp_path, store, registry):
    ref, image = push_unique(store, registry, "tampered-manifest", b"tampered manifest")
    corrupt_same_size(registry.blob_file(image.manifest.digest))
    fresh = ContentStore(tmp_path / "fresh")
    with pytest.raises(RegistryError, match="manifest does not match its digest"):
        client_for(fresh).resolve(ref)
    assert list(fresh.digests()) == []


# -- faults: resume, retries ------------------------------------------------------------


def test_interrupted_download_resumes_with_range(store, busybox_image, fault_proxy):
    ref = Reference.parse(f"{fault_proxy.host}/busybox:latest")
    client = client_for(store)
    layer = client.resolve(ref).layers[0]
    fault_proxy.faults.cut_blob_after = 100_000
    client.fetch_blob(ref, layer)
    assert store.verify(layer.digest)
    blob_gets = [headers for method, path, headers in fault_proxy.requests if str(layer.digest) in path]
    assert len(blob_gets) == 2
    assert "Range" not in blob_gets[0]
    resumed_at = int(blob_gets[1]["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 100_000


def test_resume_when_the_server_ignores_range(store, busybox_image, fault_proxy):
    ref = Reference.parse(f"{fault_proxy.host}/busybox:latest")
    client = client_for(store)
    layer = client.resolve(ref).layers[0]
    fault_proxy.faults.cut_blob_after = 50_000
    fault_proxy.faults.ignore_range = True
    client.fetch_blob(ref, layer)
    assert store.verify(layer.digest)


def test_retries_5xx_and_429(store, busybox_image, fault_proxy):
    ref = Reference.parse(f"{fault_proxy.host}/busybox:latest")
    fault_proxy.fail_next(503, times=2)
    fault_proxy.fail_next(429, headers={"Retry-After": "0"})
    resolved = client_for(store, retries=3).resolve(ref)
    assert resolved.manifest.digest == busybox_image.digest


def test_retries_are_bounded(store, busybox_image, fault_proxy):
    ref = Reference.parse(f"{fault_proxy.host}/busybox:latest")
    fault_proxy.fail_next(502, times=3)
    with pytest.raises(RegistryError, match="failed to resolve .*: unexpected status 502") as info:
        client_for(store, retries=2).resolve(ref)
    assert info.value.transient


# -- pushing -----------------------------------------------------------------------------


def test_push_then_skopeo_and_pull_see_it(tmp_path, store, registry):
    image = make_image(store, [{"etc/hello": b"hello\n"}, {"etc/world": b"world\n"}])
    ref = Reference.parse(f"{registry.host}/pushed:v1")
    digest = client_for(store).push(ref, image)
    assert digest == image.manifest.digest

    raw = skopeo_inspect(f"docker://{ref}", raw=True)
    assert raw == json.loads(store.read_bytes(image.manifest.digest))
    assert skopeo_inspect(f"docker://{ref}")["Digest"] == str(digest)

    fresh = ContentStore(tmp_path / "fresh")
    client = client_for(fresh)
    resolved = client.resolve(ref)
    for layer in resolved.layers:
        client.fetch_blob(resolved.ref, layer)
    assert resolved.image == image
    assert sorted(fresh.digests()) == sorted(store.digests())


def test_push_is_idempotent_and_skips_present_blobs(store, registry, fault_proxy):
    image = make_image(store, [{"a": os.urandom(1000)}])
    ref = Reference.parse(f"{fault_proxy.host}/again:v1")
    client = client_for(store)
    client.push(ref, image)
    fault_proxy.requests.clear()
    assert client.push(ref, image) == image.manifest.digest
    methods = sorted(method for method, _, _ in fault_proxy.requests)
    assert methods == ["HEAD", "HEAD", "PUT"]  # two blobs present, the manifest put again


def test_chunked_push(tmp_path, store, registry, fault_proxy):
    image = make_image(store, [{"random": os.urandom(20_000)}])
    ref = Reference.parse(f"{fault_proxy.host}/chunked:v1")
    client_for(store, chunk_size=4096).push(ref, image)
    patches = [path for method, path, _ in fault_proxy.requests if method == "PATCH"]
    assert len(patches) >= image.layers[0].size // 4096
    fresh = ContentStore(tmp_path / "fresh")
    client = client_for(fresh)
    resolved = client.resolve(Reference.parse(f"{registry.host}/chunked:v1"))
    client.fetch_blob(resolved.ref, resolved.layers[0])
    assert fresh.verify(image.layers[0].digest)


def test_push_mounts_blobs_pulled_from_the_same_registry(tmp_path, store, busybox_image, fault_proxy):
    client = client_for(store)
    source = Reference.parse(f"{fault_proxy.host}/busybox:latest")
    resolved = client.resolve(source)
    for layer in resolved.layers:
        client.fetch_blob(resolved.ref, layer)
    fault_proxy.requests.clear()
    target = Reference.parse(f"{fault_proxy.host}/mounted-{os.urandom(4).hex()}:v1")
    client.push(target, resolved.image)
    posts = [path for method, path, _ in fault_proxy.requests if method == "POST"]
    assert any(f"mount={resolved.layers[0].digest}".replace(":", "%3A") in path and "from=busybox" in path
               for path in posts)
    uploads = [path for method, path, _ in fault_proxy.requests if method == "PUT" and "/blobs/" in path]
    assert all(str(resolved.layers[0].digest).replace(":", "%3A") not in path for path in uploads)


def test_push_of_a_blob_missing_locally(store, registry):
    image = make_image(store, [{"a": b"a"}])
    store.delete(image.layers[0].digest)
    with pytest.raises(RegistryError, match="blob not in the local store"):
        client_for(store).push(Reference.parse(f"{registry.host}/missing:v1"), image)


# -- authentication ----------------------------------------------------------------------


def test_basic_auth_registry(tmp_path, store, auth_registry):
    image = make_image(store, [{"secret": b"for members only\n"}])
    ref = Reference.parse(f"{auth_registry.host}/private:v1")
    with pytest.raises(RegistryError, match="unauthorized") as info:
        client_for(store).push(ref, image)
    assert info.value.status == 401

    wrong = client_for(store, auth=lambda registry: Credentials("builder", "wrong"))
    with pytest.raises(RegistryError, match="unauthorized"):
        wrong.resolve(ref)

    creds = {auth_registry.host: Credentials(auth_registry.username, auth_registry.password)}
    assert client_for(store, auth=creds.get).push(ref, image) == image.manifest.digest
    creds_text = f"{auth_registry.username}:{auth_registry.password}"
    assert skopeo_inspect(f"docker://{ref}", creds=creds_text)["Digest"] == str(image.manifest.digest)

    # the same credentials found where `docker login` writes them
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"auths": {auth_registry.host: {
        "auth": base64.b64encode(creds_text.encode()).decode()}}}))
    fresh = ContentStore(tmp_path / "fresh")
    resolved = client_for(fresh, auth=DockerConfigAuth(config)).resolve(ref)
    assert resolved.manifest.digest == image.manifest.digest


def test_bearer_token_registry(tmp_path, store, token_registry):
    registry, server = token_registry
    server.requests.clear()  # the token server is shared by the session's tests
    image = make_image(store, [{"tokens": os.urandom(64)}])
    ref = Reference.parse(f"{registry.host}/team/app:v1")
    with pytest.raises(RegistryError, match="unauthorized: bad credentials"):
        client_for(store).push(ref, image)

    creds = {registry.host: Credentials("builder", "s3cret-pass")}
    client = client_for(store, auth=creds.get)
    assert client.push(ref, image) == image.manifest.digest
    scopes = [request["query"].get("scope") for request in server.requests]
    assert ["repository:team/app:pull,push"] in scopes
    # tokens are cached per scope: a handful of requests, not one per call
    assert len(server.requests) <= 3

    fresh = ContentStore(tmp_path / "fresh")
    puller = client_for(fresh, auth=creds.get)
    resolved = puller.resolve(ref)
    puller.fetch_blob(resolved.ref, resolved.layers[0])
    assert fresh.verify(image.layers[0].digest)
    assert ["repository:team/app:pull"] in [request["query"].get("scope") for request in server.requests]


def test_docker_config_credential_helpers(tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-pbtest"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread server\n'
                      'if [ "$server" = "reg.example:5000" ]; then\n'
                      '  echo \'{"ServerURL":"reg.example:5000","Username":"u","Secret":"p"}\'\n'
                      'elif [ "$server" = "https://index.docker.io/v1/" ]; then\n'
                      '  echo \'{"Username":"<token>","Secret":"refresh"}\'\n'
                      'else echo "credentials not found in native keychain"; exit 1; fi\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "pbtest", "credHelpers": {"ghcr.io": "absent"}}))
    auth = DockerConfigAuth(config)
    assert auth("reg.example:5000") == Credentials("u", "p")
    assert auth("docker.io") == Credentials(identity_token="refresh")
    assert auth("other.example") is None
    with pytest.raises(RegistryError, match="docker-credential-absent not found"):
        auth("ghcr.io")
    assert "p" not in repr(auth("reg.example:5000")).replace("password", "")


def test_parse_challenge():
    challenge = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                                'scope="repository:library/busybox:pull,push"')
    assert challenge.scheme == "bearer"
    assert dict(challenge.params) == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                                      "scope": "repository:library/busybox:pull,push"}
    assert parse_challenge('Basic realm="pybuild-test"').params == {"realm": "pybuild-test"}
    assert parse_challenge(None) is None


def test_descriptor_round_trip_through_resolve(store, busybox_image):
    resolved = client_for(store).resolve(Reference.parse(busybox_image.ref))
    body = json.loads(store.read_bytes(resolved.manifest.digest))
    assert [Descriptor.from_json(layer) for layer in body["layers"]] == list(resolved.layers)
