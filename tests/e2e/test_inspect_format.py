"""Issue 18: `pybuild inspect NAME --format TEMPLATE` prints what
`docker buildx imagetools inspect --format` prints for {{json .Provenance}},
{{json .SBOM}}, {{json .Manifest}} and {{json .Image}}: per platform for an
index of several, the one image's value otherwise.

The images carry attestations made here with builder/attest/manifests.py
(as BuildKit stores them: an attestation manifest per image, listed after
the images): the busybox index's two images, pulled into the root, in an
index of their own. buildx 0.13 (Debian 13's docker-buildx, the oracle)
reads the same index once pybuild pushed it: the values agree.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.attest.manifests import Statement, index_manifests, store_attestation_manifest
from builder.image import OCI_INDEX, OCI_MANIFEST, Descriptor, canonical_json
from builder.root.worker import Worker
from fixtures.signing import pybuild
from fixtures.docker26 import buildx_plugin

pytestmark = pytest.mark.e2e

SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"
SPDX = "https://spdx.dev/Document"
AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}  # as the busybox index spells it


def statement(predicate_type: str, subject: Descriptor, predicate: dict) -> Statement:
    body = {"_type": "https://in-toto.io/Statement/v0.1", "predicateType": predicate_type,
            "subject": [{"name": "pkg:docker/inspect/attested@1", "digest": {"sha256": subject.digest.hex}}],
            "predicate": predicate}
    return Statement(canonical_json(body), predicate_type)


def slsa(arch: str) -> dict:
    # <, > and &: Go's encoder escapes them, and so must pybuild's output.
    return {"builder": {"id": ""}, "buildType": "https://mobyproject.org/buildkit@v1",
            "invocation": {"parameters": {"frontend": "dockerfile.v0", "args": {"build-arg:NOTE": "<a> & b"}}},
            "metadata": {"buildInvocationID": f"inv-{arch}", "completeness": {"materials": False}}}


def spdx(name: str) -> dict:
    return {"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": name, "dataLicense": "CC0-1.0",
            "packages": [{"name": "busybox", "versionInfo": "1.36.1", "SPDXID": f"SPDXRef-Package-{name}"}]}


@dataclass(frozen=True)
class Stored:
    work: Path
    registry: object
    attested: str         # an index: amd64 (provenance, two SBOMs) and arm64 (provenance v1)
    single: str           # an index: amd64 and its provenance
    plain: str            # one image, no index
    index: Descriptor     # attested's
    index_body: dict
    configs: dict         # platform -> config
    provenance: dict      # platform -> predicate
    sboms: list           # amd64's SPDX documents

    def inspect(self, name: str, template: str) -> subprocess.CompletedProcess:
        return pybuild(self.work, "inspect", "--format", template, name)

    def value(self, name: str, template: str):
        done = self.inspect(name, template)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _image(worker, digest, platform: dict) -> tuple[Descriptor, dict]:
    manifest = worker.store.read_json(digest)
    config = worker.store.read_json(Descriptor.from_json(manifest["config"]).digest)
    return Descriptor(OCI_MANIFEST, digest, worker.store.size(digest), platform=platform), config


def _put_index(worker, name: str, images: list[Descriptor], attestations: list[Descriptor]) -> tuple[Descriptor, dict]:
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [entry.to_json() for entry in index_manifests(images, attestations)]}
    data = canonical_json(body)
    index = Descriptor(OCI_INDEX, worker.store.put_bytes(data), len(data))
    worker.index.put_image(name, index.digest)
    return index, body


@pytest.fixture(scope="module")
def stored(busybox_index, registry, tmp_path_factory) -> Stored:
    work = tmp_path_factory.mktemp("inspect-format")
    for platform in ("linux/amd64", "linux/arm64"):
        pulled = pybuild(work, "pull", "--platform", platform, busybox_index.ref)
        assert pulled.returncode == 0, pulled.stderr
    attested, single = f"{registry.host}/inspect/attested:1", f"{registry.host}/inspect/single:1"
    worker = Worker.open(work / "root", "builtin")
    try:
        amd64, amd64_config = _image(worker, busybox_index.amd64, AMD64)
        arm64, arm64_config = _image(worker, busybox_index.arm64, ARM64)
        provenance = {"linux/amd64": slsa("amd64"), "linux/arm64": slsa("arm64")}
        sboms = [spdx("final"), spdx("stage-build")]
        attestations = [
            store_attestation_manifest(worker.store, [
                statement(SLSA_V02, amd64, provenance["linux/amd64"]),
                *(statement(SPDX, amd64, document) for document in sboms)], amd64),
            store_attestation_manifest(worker.store, [statement(SLSA_V1, arm64, provenance["linux/arm64"])], arm64),
        ]
        index, body = _put_index(worker, attested, [amd64, arm64], attestations)
        _put_index(worker, single, [amd64], attestations[:1])
    finally:
        worker.close()
    return Stored(work, registry, attested, single, busybox_index.ref, index, body,
                  {"linux/amd64": amd64_config, "linux/arm64": arm64_config}, provenance, sboms)


def test_an_index_of_two_platforms_is_keyed_by_platform(stored):
    assert stored.value(stored.attested, "{{json .Provenance}}") == {
        platform: {"SLSA": predicate} for platform, predicate in stored.provenance.items()}
    # arm64 has no SBOM: left out of the map, as buildx does.
    assert stored.value(stored.attested, "{{json .SBOM}}") == {
        "linux/amd64": {"SPDX": stored.sboms[0], "AdditionalSPDXs": stored.sboms[1:]}}
    assert stored.value(stored.attested, "{{json .Image}}") == stored.configs
    manifest = stored.value(stored.attested, "{{json .Manifest}}")
    assert manifest == {"schemaVersion": 2, "mediaType": OCI_INDEX, "digest": str(stored.index.digest),
                        "size": stored.index.size, "manifests": stored.index_body["manifests"]}
    assert stored.value(stored.attested, "{{json .Name}}") == stored.attested


def test_fields_and_platforms_below_the_value(stored):
    assert stored.value(stored.attested, '{{ json (index .Provenance "linux/arm64").SLSA }}') == \
        stored.provenance["linux/arm64"]
    assert stored.value(stored.attested, '{{json (index .SBOM "linux/amd64").SPDX.name}}') == "final"
    # arm64 has no SBOM: its value is {} (what indexing the map gives) and so its SPDX is null.
    assert stored.value(stored.attested, '{{json (index .SBOM "linux/arm64")}}') == {}
    assert stored.value(stored.attested, '{{json (index .SBOM "linux/arm64").SPDX}}') is None
    assert stored.value(stored.single, "{{json .Provenance.SLSA.metadata}}") == \
        stored.provenance["linux/amd64"]["metadata"]
    missing = stored.inspect(stored.attested, '{{json (index .Image "linux/s390x")}}')
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing.stderr
    assert "has no image for platform linux/s390x; it has linux/amd64, linux/arm64" in missing.stderr


def test_one_platform_is_not_keyed(stored):
    assert stored.value(stored.single, "{{json .Provenance}}") == {"SLSA": stored.provenance["linux/amd64"]}
    assert stored.value(stored.single, "{{json .SBOM}}") == {"SPDX": stored.sboms[0],
                                                             "AdditionalSPDXs": stored.sboms[1:]}
    assert stored.value(stored.single, "{{json .Image}}") == stored.configs["linux/amd64"]
    # An image without an index carries no attestation.
    assert stored.value(stored.plain, "{{json .Provenance}}") == {}
    assert stored.value(stored.plain, "{{json .SBOM}}") == {}
    manifest = stored.value(stored.plain, "{{json .Manifest}}")
    assert set(manifest) == {"mediaType", "digest", "size"}
    assert manifest["mediaType"] == OCI_MANIFEST


def test_json_is_written_as_go_writes_it(stored):
    done = stored.inspect(stored.attested, '{{json (index .Provenance "linux/amd64").SLSA.invocation}}')
    assert done.returncode == 0, done.stderr
    assert '"build-arg:NOTE": "\\u003ca\\u003e \\u0026 b"' in done.stdout
    assert done.stdout.startswith('{\n  "parameters": {\n    "args": {') and done.stdout.endswith("}")
    image = stored.inspect(stored.single, "{{json .Image}}").stdout
    # image-spec's field order, as Go writes the struct: not sorted.
    assert [line for line in image.splitlines() if line.startswith('  "')][:3] == [
        '  "architecture": "amd64",', '  "os": "linux",', '  "config": {']


@pytest.mark.parametrize("template", [
    "{{.Name}}", "{{json .Foo}}", "{{json .Provenance}} and more", "table {{.Digest}}", "{{json .}}",
    "{{json (index .SBOM linux/amd64)}}", "",
])
def test_an_unsupported_template_is_one_line(stored, template):
    done = stored.inspect(stored.attested, template)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "{{json .Provenance}}, {{json .SBOM}}" in done.stderr


def test_indexing_a_manifest_is_one_line(stored):
    done = stored.inspect(stored.attested, '{{json (index .Manifest "linux/amd64")}}')
    assert done.returncode == 1 and done.stderr == "ERROR: --format: .Manifest has no platforms to index\n"


@pytest.mark.parametrize("which", ["attested", "single"])
@pytest.mark.parametrize("template", ["{{json .Provenance}}", "{{json .SBOM}}", "{{json .Image}}",
                                      "{{json .Manifest}}"])
def test_buildx_reads_the_same_values(stored, which, template, tmp_path):
    buildx = buildx_plugin()
    name = getattr(stored, which)
    pushed = pybuild(stored.work, "push", name)
    assert pushed.returncode == 0, pushed.stderr
    theirs = subprocess.run([buildx, "imagetools", "inspect", name, "--format", template], capture_output=True,
                            text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path),
                                                             DOCKER_CONFIG=str(tmp_path / "docker")))
    assert theirs.returncode == 0, theirs.stderr
    ours = stored.inspect(name, template)
    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)
    # Byte for byte: Go's field order, map keys sorted, its escapes, no newline after.
    assert ours.stdout == theirs.stdout
