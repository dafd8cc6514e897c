"""pybuild's provenance against docker 26's (BuildKit 0.13, buildx 0.13 on
the containerd image store), field by field, for the same Dockerfile, base
image, build args, secret, ADD URL and git context: docker 26 builds and
pushes to the registry fixture, and pybuild's statement about docker 26's
own image manifest must say what docker 26's says, but for the differences
builder/attest/provenance.py lists (timestamps, invocation id, the local
Dockerfile's digest, pybuild's ops instead of LLB, no layer map)."""

from __future__ import annotations

import json
import subprocess
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from attest.provenance_graphs import git, make_repository, observed_record, real_definition
from builder.attest.manifests import Statement, attestations_by_subject, read_statements, store_attestation_manifest
from builder.attest.options import ProvenanceMode, ProvenanceOptions
from builder.attest.provenance import PREDICATE_V0_2, provenance_statement
from builder.attest.record import BuildRecord, frontend_args
from builder.image import Descriptor
from builder.ops.source.git import resolve_commit
from cache.digest import Digest
from cache.store import ContentStore
from fixtures.servers import LoopbackServer
from fixtures.tools import require_tools
from frontend.ops import Platform

pytestmark = pytest.mark.e2e

SECRET_VALUE = "s3cr3t-of-the-oracle"
ADDED = b"added over http\n"
METADATA = "https://mobyproject.org/buildkit@v1#metadata"


class _File(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(ADDED)))
        self.end_headers()
        self.wfile.write(ADDED)


def _pulled(ref: str, where: Path) -> tuple[dict, ContentStore]:
    """The index docker 26 pushed, and every blob of it in a store."""
    subprocess.run(["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false", f"docker://{ref}",
                    f"oci:{where}:x"], check=True, capture_output=True, timeout=120)
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], check=True,
                         capture_output=True, timeout=60).stdout
    return json.loads(raw), ContentStore(where)


def _theirs(ref: str, where: Path) -> tuple[Descriptor, Descriptor, dict, ContentStore]:
    index, store = _pulled(ref, where)
    (image,) = [Descriptor.from_json(m) for m in index["manifests"] if m["platform"]["os"] == "linux"]
    attestation = attestations_by_subject(index)[str(image.digest)]
    (statement,) = read_statements(store, attestation)
    assert statement.predicate_type == PREDICATE_V0_2
    return image, attestation, json.loads(statement.body), store


@pytest.fixture(scope="module")
def oracle(docker26_multiplatform, busybox_image, registry, tmp_path_factory):  # noqa: F811
    require_tools("skopeo")
    docker = docker26_multiplatform
    tmp = tmp_path_factory.mktemp("oracle")
    context = tmp / "context"
    context.mkdir()
    (tmp / "secret").write_text(SECRET_VALUE)
    with LoopbackServer(_File) as server:
        url = f"{server.url}/file.txt"
        dockerfile = (f"FROM {busybox_image.ref}\nARG FOO=default\nADD {url} /file.txt\n"
                      "RUN --mount=type=secret,id=mysecret cat /run/secrets/mysecret > /dev/null; echo $FOO > /foo\n")
        (context / "Dockerfile").write_text(dockerfile)
        refs = {mode: f"{registry.host}/oracle:{mode}" for mode in ("max", "min")}
        common = ["buildx", "build", "--network", "host", "--build-arg", "FOO=barvalue",
                  "--secret", f"id=mysecret,src={tmp / 'secret'}", "--push"]
        docker.run(*common, "--provenance=mode=max", "-t", refs["max"], str(context))
        docker.run(*common, "-t", refs["min"], str(context))  # buildx's default: min
    return {"dockerfile": dockerfile, "url": url, "refs": refs, "tmp": tmp}


def _ours(oracle, busybox_image, mode: ProvenanceMode, image: Descriptor, tmp: Path) -> dict:
    record = observed_record(oracle["dockerfile"], ContentStore(tmp / "ours"), build_args={"FOO": "barvalue"},
                             network="host")
    record.add_http(oracle["url"], Digest.of_bytes(ADDED))  # what the ADD's download reports
    return json.loads(provenance_statement(record, ProvenanceOptions(mode=mode), names=[oracle["refs"][mode.value]],
                                           manifest=image.digest, platform="linux/amd64"))


def _same_but_documented(ours: dict, theirs: dict) -> None:
    assert ours["_type"] == theirs["_type"] and ours["predicateType"] == theirs["predicateType"]
    assert ours["subject"] == theirs["subject"]
    mine, other = ours["predicate"], theirs["predicate"]
    for key in ("builder", "buildType", "materials"):
        assert mine[key] == other[key], key
    assert mine["invocation"]["parameters"] == other["invocation"]["parameters"]
    assert mine["invocation"]["environment"] == other["invocation"]["environment"]
    # BuildKit names no digest for a local context's Dockerfile; pybuild does.
    source = dict(mine["invocation"]["configSource"])
    assert "digest" not in other["invocation"]["configSource"] and source.pop("digest")
    assert source == other["invocation"]["configSource"]
    assert set(mine["metadata"]) == set(other["metadata"])
    for key in ("completeness", "reproducible"):
        assert mine["metadata"][key] == other["metadata"][key], key
    assert set(mine) == set(other)


def test_min_says_what_docker26_says(oracle, busybox_image, tmp_path):
    image, _, theirs, _ = _theirs(oracle["refs"]["min"], tmp_path / "theirs")
    ours = _ours(oracle, busybox_image, ProvenanceMode.MIN, image, tmp_path)
    _same_but_documented(ours, theirs)
    assert ours["predicate"]["metadata"][METADATA] == theirs["predicate"]["metadata"][METADATA] == {}
    assert ours["predicate"]["invocation"]["configSource"]["digest"] == {
        "sha256": Digest.of_bytes(oracle["dockerfile"].encode()).hex}


def test_max_says_what_docker26_says(oracle, busybox_image, tmp_path):
    image, _, theirs, _ = _theirs(oracle["refs"]["max"], tmp_path / "theirs")
    ours = _ours(oracle, busybox_image, ProvenanceMode.MAX, image, tmp_path)
    _same_but_documented(ours, theirs)
    mine, other = ours["predicate"]["metadata"][METADATA], theirs["predicate"]["metadata"][METADATA]
    assert set(other) - set(mine) == {"layers"}
    info, their_info = mine["source"]["infos"][0], other["source"]["infos"][0]
    assert {k: info[k] for k in ("filename", "language", "data")} == \
        {k: their_info[k] for k in ("filename", "language", "data")}
    # The same steps in the same order, so the same source map.
    assert mine["source"]["locations"] == other["source"]["locations"]
    their_steps = theirs["predicate"]["buildConfig"]["llbDefinition"]
    assert their_steps[-1]["op"] == {"Op": None}  # BuildKit's marker of the result, not a step of pybuild's
    shape = lambda steps: [(step["id"], step.get("inputs")) for step in steps]  # noqa: E731
    assert shape(ours["predicate"]["buildConfig"]["llbDefinition"]) == shape(their_steps[:-1])
    for statement in (ours, theirs):
        assert SECRET_VALUE not in json.dumps(statement)


def test_the_attestation_manifest_is_docker26s(oracle, busybox_image, tmp_path):
    image, attestation, theirs, their_store = _theirs(oracle["refs"]["max"], tmp_path / "theirs")
    store = ContentStore(tmp_path / "store")
    body = json.dumps(theirs).encode()
    entry = store_attestation_manifest(store, [Statement(body, PREDICATE_V0_2)], image)
    assert (entry.media_type, entry.annotations, entry.platform) == \
        (attestation.media_type, attestation.annotations, attestation.platform)
    mine, other = store.read_json(entry.digest), their_store.read_json(attestation.digest)
    assert set(mine) == set(other) and mine["mediaType"] == other["mediaType"]
    assert mine["config"]["mediaType"] == other["config"]["mediaType"]
    strip = lambda layer: {k: v for k, v in layer.items() if k not in ("digest", "size")}  # noqa: E731
    assert [strip(layer) for layer in mine["layers"]] == [strip(layer) for layer in other["layers"]]
    their_config = their_store.read_json(Digest.parse(other["config"]["digest"]))
    assert their_config["rootfs"]["diff_ids"] == [layer["digest"] for layer in other["layers"]]
    assert {**store.read_json(Digest.parse(mine["config"]["digest"])), "rootfs": None} == \
        {**their_config, "rootfs": None}


def test_a_git_context_says_what_docker26_says(docker26_multiplatform, busybox_image, registry, git_daemon,
                                               tmp_path):
    require_tools("git", "skopeo")
    served, base_url = git_daemon
    dockerfile = f"FROM {busybox_image.ref}\nCOPY a /a\n"
    commit = make_repository(tmp_path / "work", {"Dockerfile": dockerfile, "a": "x"})
    git(served, "clone", "-q", "--bare", str(tmp_path / "work"), "repo.git")
    ref = f"{registry.host}/oracle:git"
    url = f"{base_url}/repo.git#master"
    docker26_multiplatform.run("buildx", "build", "--network", "host", "-t", ref, "--push", url)
    found = resolve_commit(f"{base_url}/repo.git", "master", tmp_path)
    assert found == commit
    image, _, theirs, _ = _theirs(ref, tmp_path / "theirs")
    record = BuildRecord(dockerfile=dockerfile.encode(), args=frontend_args(network="host"))
    record.set_git_context(url, found)  # what the context's clone reports
    record.observe_graph(real_definition(dockerfile, ContentStore(tmp_path / "ours")))
    record.finish()
    ours = json.loads(provenance_statement(record, ProvenanceOptions(mode=ProvenanceMode.MIN), names=[ref],
                                           manifest=image.digest, platform="linux/amd64"))
    mine, other = ours["predicate"], theirs["predicate"]
    assert ours["subject"] == theirs["subject"]
    for key in ("builder", "buildType", "materials"):
        assert mine[key] == other[key], key
    assert mine["invocation"] == other["invocation"]
    assert {k: v for k, v in mine["metadata"].items() if k not in ("buildInvocationID", "buildStartedOn",
                                                                   "buildFinishedOn")} == \
        {k: v for k, v in other["metadata"].items() if k not in ("buildInvocationID", "buildStartedOn",
                                                                 "buildFinishedOn")}


def test_a_multi_platform_build_says_what_docker26_says(docker26_multiplatform, busybox_index, registry,  # noqa: F811
                                                        tmp_path):
    require_tools("skopeo")
    dockerfile = f"FROM {busybox_index.ref}\nCOPY Dockerfile /\n"
    (tmp_path / "context").mkdir()
    (tmp_path / "context/Dockerfile").write_text(dockerfile)
    ref = f"{registry.host}/oracle:two"
    docker26_multiplatform.run("buildx", "build", "--platform", "linux/amd64,linux/arm64", "-t", ref, "--push",
                               str(tmp_path / "context"))
    index, their_store = _pulled(ref, tmp_path / "theirs")
    attestations = attestations_by_subject(index)
    images = [Descriptor.from_json(m) for m in index["manifests"] if m["platform"]["os"] == "linux"]
    assert [image.platform["architecture"] for image in images] == ["amd64", "arm64"]
    for image in images:
        arch = image.platform["architecture"]
        (statement,) = read_statements(their_store, attestations[str(image.digest)])
        theirs = json.loads(statement.body)
        record = observed_record(dockerfile, ContentStore(tmp_path / "ours"), platform=Platform("linux", arch))
        ours = json.loads(provenance_statement(record, ProvenanceOptions(mode=ProvenanceMode.MIN), names=[ref],
                                               manifest=image.digest, platform=f"linux/{arch}"))
        _same_but_documented(ours, theirs)
        # Both name the base by its index's digest, for this platform.
        assert ours["predicate"]["materials"][0]["digest"] == {"sha256": busybox_index.digest.hex}
