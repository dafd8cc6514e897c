"""Attestation manifests as BuildKit stores them, and what clients make of
an index that carries one: skopeo picks the image for its platform, docker
26 pulls and runs it (both image stores). The fields checked here are the
ones docker 26 wrote (builder/attest/manifests.py records them);
test_provenance_buildkit.py compares with a live docker 26 build too."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from attest.provenance_graphs import observed_record
from builder.attest.manifests import (IN_TOTO, Statement, attestations_by_subject, index_manifests, is_attestation,
                                      read_statements, rebind_attestation, store_attestation_manifest)
from builder.attest.options import ProvenanceOptions
from builder.attest.provenance import PREDICATE_V0_2, provenance_statement
from builder.image import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Descriptor, canonical_json
from cache.digest import Digest
from cache.store import ContentStore
from fixtures.busybox import host_arch
from fixtures.tools import require_tools

SPDX = "https://spdx.dev/Document"


def _image(digest: Digest, size: int, arch: str = "amd64") -> Descriptor:
    return Descriptor(OCI_MANIFEST, digest, size, platform={"architecture": arch, "os": "linux"})


def test_the_manifest_has_buildkits_fields(store):
    statements = [Statement(b'{"spdx":1}', SPDX), Statement(b'{"prov":1}', PREDICATE_V0_2)]
    subject = _image(Digest.of_bytes(b"image"), 668)
    entry = store_attestation_manifest(store, statements, subject)
    assert entry.to_json() == {
        "mediaType": OCI_MANIFEST, "digest": str(entry.digest), "size": entry.size,
        "annotations": {"vnd.docker.reference.digest": str(subject.digest),
                        "vnd.docker.reference.type": "attestation-manifest"},
        "platform": {"architecture": "unknown", "os": "unknown"}}
    raw = store.read_bytes(entry.digest)
    assert len(raw) == entry.size and Digest.of_bytes(raw) == entry.digest
    manifest = json.loads(raw)
    layers = [{"mediaType": IN_TOTO, "digest": str(Digest.of_bytes(s.body)), "size": len(s.body),
               "annotations": {"in-toto.io/predicate-type": s.predicate_type}} for s in statements]
    assert manifest == {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": manifest["config"],
                        "layers": layers}
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    # docker 26's config, byte for byte but for pybuild's canonical key order.
    config = store.read_bytes(Digest.parse(manifest["config"]["digest"]))
    assert json.loads(config) == {"architecture": "unknown", "os": "unknown", "config": {},
                                  "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}}
    assert config == canonical_json(json.loads(config))
    assert read_statements(store, entry) == statements


def test_rebinding_an_attestation_names_the_new_image_and_keeps_the_rest(store):
    """What a push does when it gzips an image stored uncompressed: the
    statements' subjects and the entry's reference move to the new
    manifest; subjects about anything else and every predicate stay."""
    old, new = _image(Digest.of_bytes(b"stored"), 500), _image(Digest.of_bytes(b"pushed"), 480)
    other = {"name": "pkg:docker/other", "digest": {"sha256": "0" * 64}}

    def statement(subject: Descriptor, predicate: dict) -> bytes:
        return canonical_json({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": SPDX,
                               "subject": [{"name": "pkg:docker/x", "digest": {"sha256": subject.digest.hex}},
                                           other], "predicate": predicate})

    before = store_attestation_manifest(store, [Statement(statement(old, {"a": 1}), SPDX),
                                                Statement(statement(old, {"b": 2}), PREDICATE_V0_2)], old)
    after = rebind_attestation(store, before, old, new)
    assert after.annotations == {"vnd.docker.reference.digest": str(new.digest),
                                 "vnd.docker.reference.type": "attestation-manifest"}
    assert read_statements(store, after) == [Statement(statement(new, {"a": 1}), SPDX),
                                             Statement(statement(new, {"b": 2}), PREDICATE_V0_2)]
    assert after.digest != before.digest and read_statements(store, before)[0].body == statement(old, {"a": 1})


def test_an_attestation_needs_a_statement(store):
    with pytest.raises(ValueError):
        store_attestation_manifest(store, [], _image(Digest.of_bytes(b"image"), 1))


def test_the_index_lists_images_then_their_attestations_in_image_order(store):
    amd64, arm64 = _image(Digest.of_bytes(b"a"), 10), _image(Digest.of_bytes(b"b"), 11, "arm64")
    statement = [Statement(b"{}", PREDICATE_V0_2)]
    att_arm64 = store_attestation_manifest(store, statement, arm64)
    att_amd64 = store_attestation_manifest(store, statement, amd64)
    assert index_manifests([amd64, arm64], [att_arm64, att_amd64]) == [amd64, arm64, att_amd64, att_arm64]
    assert index_manifests([amd64, arm64], [att_arm64]) == [amd64, arm64, att_arm64]
    with pytest.raises(ValueError, match="not in the index"):
        index_manifests([amd64], [att_arm64])
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [d.to_json() for d in index_manifests([amd64, arm64], [att_arm64, att_amd64])]}
    found = attestations_by_subject(index)
    assert found == {str(amd64.digest): att_amd64, str(arm64.digest): att_arm64}
    assert [is_attestation(entry) for entry in index["manifests"]] == [False, False, True, True]
    assert attestations_by_subject({"schemaVersion": 2, "config": {}, "layers": []}) == {}


@pytest.fixture(scope="module")
def attested(busybox_image, registry, tmp_path_factory):
    """The busybox fixture's layout with pybuild's provenance of it beside the
    image in an OCI index, pushed with skopeo as it is."""
    require_tools("skopeo")
    tmp = tmp_path_factory.mktemp("attested")
    layout = tmp / "layout"
    shutil.copytree(busybox_image.layout, layout)
    store = ContentStore(layout)  # the store's blobs/ is an OCI layout's
    record = observed_record(f"FROM {busybox_image.ref}\n", ContentStore(tmp / "resolved"))
    image = _image(busybox_image.digest, store.size(busybox_image.digest), host_arch())
    body = provenance_statement(record, ProvenanceOptions(), names=[f"{registry.host}/attested:1"],
                                manifest=image.digest, platform=f"linux/{host_arch()}")
    attestation = store_attestation_manifest(store, [Statement(body, PREDICATE_V0_2)], image)
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": [d.to_json() for d in index_manifests([image], [attestation])]})
    index_digest = store.put_bytes(index)
    (layout / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_INDEX, "digest": str(index_digest), "size": len(index),
         "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
    shutil.rmtree(layout / "ingest")
    ref = f"{registry.host}/attested:1"
    subprocess.run(["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false",
                    f"oci:{layout}:1", f"docker://{ref}"], check=True, capture_output=True, timeout=120)
    return {"ref": ref, "index": index_digest, "image": image, "attestation": attestation, "statement": body}


def _skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, timeout=120).stdout


def test_the_registry_serves_the_index_and_the_statement(attested, tmp_path):
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{attested['ref']}")
    assert Digest.of_bytes(raw) == attested["index"]
    entries = json.loads(raw)["manifests"]
    assert entries == [attested["image"].to_json(), attested["attestation"].to_json()]
    _skopeo("copy", "--quiet", "--all", "--src-tls-verify=false", f"docker://{attested['ref']}",
            f"oci:{tmp_path / 'back'}:1")
    back = ContentStore(tmp_path / "back")
    assert read_statements(back, attested["attestation"]) == [Statement(attested["statement"], PREDICATE_V0_2)]


def test_skopeo_picks_the_image_not_the_attestation(attested, tmp_path):
    inspected = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{attested['ref']}"))
    # skopeo names the index it read and describes the platform image it chose.
    assert inspected["Digest"] == str(attested["index"])
    assert inspected["Architecture"] == host_arch() and inspected["Os"] == "linux"
    assert len(inspected["Layers"]) == 1
    _skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{attested['ref']}", f"oci:{tmp_path / 'one'}:1")
    copied = json.loads((tmp_path / "one/index.json").read_text())["manifests"]
    assert [entry["digest"] for entry in copied] == [str(attested["image"].digest)]


def _pull_and_run(docker, ref: str) -> None:
    try:
        docker.run("pull", "-q", ref)
        assert docker.run("image", "inspect", "--format", "{{.Architecture}}", ref).stdout.strip() == host_arch()
        assert docker.run("run", "--rm", "--network", "none", ref, "echo", "attested").stdout == "attested\n"
    finally:
        docker.run("image", "rm", "-f", ref, check=False)
    assert docker.run("ps", "-a", "-q").stdout.split() == []


def test_docker26_pulls_and_runs_an_attested_image(attested, docker26):  # noqa: F811
    _pull_and_run(docker26, attested["ref"])


def test_docker26_on_containerd_pulls_and_runs_an_attested_image(attested, docker26_multiplatform):  # noqa: F811
    _pull_and_run(docker26_multiplatform, attested["ref"])
