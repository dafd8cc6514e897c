"""Issue 18 in real builds: `pybuild build` attaches provenance (buildx's
default min, or what --provenance/--sbom/--attest ask) where BuildKit's
exporters put it: an attestation manifest beside each platform's image in
an OCI index (push, type=oci), files beside the root filesystem
(type=local, type=tar), the local store only when asked; type=docker
refuses an explicit request. Read back from the real registry fixture."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import requests

from fixtures.pybuild import pybuild_env
from fixtures.registry import Remote

pytestmark = pytest.mark.e2e

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
SLSA_02 = "https://slsa.dev/provenance/v0.2"
SLSA_1 = "https://slsa.dev/provenance/v1"
SPDX = "https://spdx.dev/Document"

def pybuild(tmp_path: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(["pybuild", *args], capture_output=True, text=True, timeout=600,
                          env=pybuild_env(tmp_path, **env))
    if check and done.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir(exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


def statements(read_json, read_bytes, index: dict) -> dict[str, list[dict]]:
    """image manifest digest -> its attestation's statements (in layer order)."""
    found = {}
    for entry in index["manifests"]:
        if (entry.get("annotations") or {}).get("vnd.docker.reference.type") == "attestation-manifest":
            manifest = read_json(entry["digest"])
            found[entry["annotations"]["vnd.docker.reference.digest"]] = [
                dict(json.loads(read_bytes(layer["digest"])), layer=layer) for layer in manifest["layers"]]
    return found


@pytest.fixture(scope="module")
def base(busybox_image):
    return busybox_image.ref


def test_push_of_one_platform_is_an_index_with_its_attestation(base, registry, tmp_path):
    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "hello\n"})
    ref = f"{registry.host}/att-one:1"
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-t", ref, "--push", str(ctx))
    remote = Remote(registry.host, "att-one")
    _, index = remote.manifest("1")
    assert index["mediaType"] == OCI_INDEX
    image, attestation = index["manifests"]
    assert image["platform"] == {"architecture": "amd64", "os": "linux"}
    assert attestation["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert attestation["annotations"] == {"vnd.docker.reference.digest": image["digest"],
                                          "vnd.docker.reference.type": "attestation-manifest"}
    found = statements(lambda d: remote.manifest(d)[1], remote.blob, index)
    [statement] = found[image["digest"]]
    assert statement["layer"]["mediaType"] == IN_TOTO
    assert statement["layer"]["annotations"] == {"in-toto.io/predicate-type": SLSA_02}
    assert statement["predicateType"] == SLSA_02
    assert statement["subject"] == [{"name": f"pkg:docker/{registry.host.replace(':', '%3A')}/att-one@1"
                                             "?platform=linux%2Famd64",
                                     "digest": {"sha256": image["digest"].split(":")[1]}}]
    predicate = statement["predicate"]
    assert "args" not in predicate["invocation"]["parameters"]  # min: no build args
    assert [m["uri"] for m in predicate["materials"]] == [
        f"pkg:docker/{registry.host.replace(':', '%3A')}/busybox@latest?platform=linux%2Famd64"]
    # The image itself is the one docker would pull for linux/amd64.
    _, manifest = remote.manifest(image["digest"])
    assert manifest["mediaType"] == OCI_MANIFEST and len(manifest["layers"]) == 2


def test_provenance_false_pushes_the_plain_manifest(base, registry, tmp_path):
    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "plain\n"})
    ref = f"{registry.host}/att-off:1"
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-t", ref, "--push", "--provenance=false", str(ctx))
    _, body = Remote(registry.host, "att-off").manifest("1")
    assert body["mediaType"] == OCI_MANIFEST
    # The environment's switch does the same, as buildx's.
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-t", ref, "--push", str(ctx),
            BUILDX_NO_DEFAULT_ATTESTATIONS="1")
    assert Remote(registry.host, "att-off").manifest("1")[1]["mediaType"] == OCI_MANIFEST


def test_max_v1_has_the_build_args_and_no_secret_value(base, registry, tmp_path):
    ctx = context(tmp_path, f"FROM {base}\nARG FLAVOUR\n"
                            "RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /n\n")
    ref = f"{registry.host}/att-max:1"
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-t", ref, "--push", "--build-arg",
            "FLAVOUR=mint", "--secret", "id=token,env=TOKEN", "--provenance=mode=max,version=v1", str(ctx),
            TOKEN="s3cr3t-value-never-shown")
    remote = Remote(registry.host, "att-max")
    _, index = remote.manifest("1")
    [[statement]] = statements(lambda d: remote.manifest(d)[1], remote.blob, index).values()
    assert statement["predicateType"] == SLSA_1
    request = statement["predicate"]["buildDefinition"]["externalParameters"]["request"]
    assert request["args"]["build-arg:FLAVOUR"] == "mint"
    assert request["secrets"] == [{"id": "token", "optional": True}]  # not required=true
    for entry in index["manifests"]:
        manifest = remote.manifest(entry["digest"])[1]
        for layer in manifest["layers"]:
            assert b"s3cr3t-value-never-shown" not in remote.blob(layer["digest"])


def test_oci_archive_holds_the_index_and_attestation(base, tmp_path):
    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "oci\n"})
    out = tmp_path / "image.tar"
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-t", "example.com/app:2",
            "-o", f"type=oci,dest={out}", str(ctx))
    with tarfile.open(out) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}

    def read(digest: str) -> bytes:
        return files["blobs/" + digest.replace(":", "/")]

    [top] = json.loads(files["index.json"])["manifests"]
    assert top["mediaType"] == OCI_INDEX
    index = json.loads(read(top["digest"]))
    image = index["manifests"][0]
    [statement] = statements(lambda d: json.loads(read(d)), read, index)[image["digest"]]
    assert statement["subject"][0]["name"] == "pkg:docker/example.com/app@2?platform=linux%2Famd64"


def test_two_platforms_get_an_attestation_each(busybox_index, registry, tmp_path):
    ctx = context(tmp_path, f"FROM {busybox_index.ref}\nCOPY a /a\n", {"a": "two\n"})
    ref = f"{registry.host}/att-two:1"
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "--platform", "linux/amd64,linux/arm64",
            "-t", ref, "--push", str(ctx))
    remote = Remote(registry.host, "att-two")
    _, index = remote.manifest("1")
    entries = index["manifests"]
    assert [e["platform"]["architecture"] for e in entries] == ["amd64", "arm64", "unknown", "unknown"]
    assert [e["annotations"]["vnd.docker.reference.digest"] for e in entries[2:]] == \
        [e["digest"] for e in entries[:2]]
    found = statements(lambda d: remote.manifest(d)[1], remote.blob, index)
    for entry in entries[:2]:
        [statement] = found[entry["digest"]]
        assert statement["subject"][0]["digest"]["sha256"] == entry["digest"].split(":")[1]
        assert statement["subject"][0]["name"].endswith(
            "platform=linux%2F" + entry["platform"]["architecture"])
        # The base named by its index's digest, as BuildKit names a multi-platform base.
        assert statement["predicate"]["materials"][0]["digest"] == {"sha256": busybox_index.digest.hex}


def test_local_store_keeps_no_default_and_the_asked_index(base, tmp_path):
    from builder.root.worker import Worker

    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "store\n"})
    root = tmp_path / "root"
    pybuild(tmp_path, "build", "--root", str(root), "-t", "app:plain", "--metadata-file",
            str(tmp_path / "plain.json"), str(ctx))
    pybuild(tmp_path, "build", "--root", str(root), "-t", "app:attested", "--provenance=true", "--metadata-file",
            str(tmp_path / "attested.json"), str(ctx))
    from cache.digest import Digest

    worker = Worker.open(root, "builtin")
    try:
        plain = json.loads((tmp_path / "plain.json").read_text())["containerimage.digest"]
        assert "config" in worker.store.read_json(Digest.parse(plain))  # a manifest: no attestation
        digest = json.loads((tmp_path / "attested.json").read_text())["containerimage.digest"]
        index = worker.store.read_json(Digest.parse(digest))
        assert [e["platform"]["os"] for e in index["manifests"]] == ["linux", "unknown"]
        # The same image (config), its layers gzipped as a push sends them.
        attested = worker.store.read_json(Digest.parse(index["manifests"][0]["digest"]))
        assert attested["config"] == worker.store.read_json(Digest.parse(plain))["config"]
        assert {layer["mediaType"] for layer in attested["layers"]} == {OCI_MANIFEST.replace(
            "manifest.v1+json", "layer.v1.tar+gzip")}
        assert str(worker.index.get_image("docker.io/library/app:attested")) == digest
    finally:
        worker.close()


def test_push_of_a_stored_attested_index_sends_what_its_attestations_name(busybox_index, registry, tmp_path):
    """`pybuild push NAME` of an index a build kept with its attestations:
    the pushed images are the ones the attestation entries and subjects
    name (the store keeps them with a push's gzip layers)."""
    ctx = context(tmp_path, f"FROM {busybox_index.ref}\nCOPY a /a\n", {"a": "stored\n"})
    root = str(tmp_path / "root")
    for platforms in ("linux/amd64", "linux/amd64,linux/arm64"):
        ref = f"{registry.host}/att-stored-{platforms.count(',') + 1}:1"
        pybuild(tmp_path, "build", "--root", root, "--platform", platforms, "-t", ref, "--provenance=mode=min",
                str(ctx))
        pybuild(tmp_path, "push", "--root", root, ref)
        remote = Remote(registry.host, ref.split("/", 1)[1].split(":")[0])
        _, index = remote.manifest("1")
        images = [e for e in index["manifests"] if e["platform"]["os"] != "unknown"]
        assert len(images) == platforms.count(",") + 1
        found = statements(lambda d: remote.manifest(d)[1], remote.blob, index)
        assert set(found) == {e["digest"] for e in images}
        for entry in images:
            [statement] = found[entry["digest"]]
            assert statement["subject"][0]["digest"] == {"sha256": entry["digest"].split(":")[1]}
            remote.manifest(entry["digest"])  # pushed


def test_docker_archive_refuses_an_explicit_request_and_drops_the_default(base, tmp_path):
    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "docker\n"})
    out = tmp_path / "d.tar"
    done = pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "--provenance=true",
                   "-o", f"type=docker,dest={out}", str(ctx), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("ERROR: Attestation is not supported")
    assert "Traceback" not in done.stderr and not out.exists()
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-o", f"type=docker,dest={out}", str(ctx))
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))
    assert index["manifests"][0]["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"


def test_local_and_tar_write_files_only_when_asked(base, tmp_path):
    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "files\n"})
    root = str(tmp_path / "root")
    pybuild(tmp_path, "build", "--root", root, "-o", f"type=local,dest={tmp_path / 'l0'}", str(ctx))
    assert not (tmp_path / "l0" / "provenance.json").exists()  # the inline-only default
    pybuild(tmp_path, "build", "--root", root, "--provenance=mode=min",
            "-o", f"type=local,dest={tmp_path / 'l1'}", "-o", f"type=tar,dest={tmp_path / 't1.tar'}", str(ctx))
    written = tmp_path / "l1" / "provenance.json"
    assert written.stat().st_mode & 0o777 == 0o600
    statement = json.loads(written.read_text())
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    import hashlib

    assert subjects["a"] == hashlib.sha256(b"files\n").hexdigest()
    assert "bin/busybox" in subjects and "provenance.json" not in subjects
    with tarfile.open(tmp_path / "t1.tar") as tar:
        member = tar.getmember("provenance.json")
        assert member.mode == 0o600
        assert json.load(tar.extractfile(member))["subject"] == statement["subject"]


def test_sbom_lists_a_python_package(base, registry, tmp_path):
    metadata = "Metadata-Version: 2.1\nName: tiny-wheel\nVersion: 1.2.3\n"
    ctx = context(tmp_path, f"FROM {base}\nCOPY site /usr/lib/python3/site-packages\n",
                  {"site/tiny_wheel-1.2.3.dist-info/METADATA": metadata})
    ref = f"{registry.host}/att-sbom:1"
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-t", ref, "--push", "--sbom=true", str(ctx))
    remote = Remote(registry.host, "att-sbom")
    _, index = remote.manifest("1")
    [found] = statements(lambda d: remote.manifest(d)[1], remote.blob, index).values()
    assert [s["predicateType"] for s in found] == [SPDX, SLSA_02]  # the SBOM first, as BuildKit
    packages = {p["name"]: p for p in found[0]["predicate"]["packages"]}
    assert packages["tiny-wheel"]["versionInfo"] == "1.2.3"
    assert packages["tiny-wheel"]["externalRefs"][0]["referenceLocator"] == "pkg:pypi/tiny-wheel@1.2.3"


def test_git_context_provenance_names_the_commit(base, registry, git_daemon, tmp_path):
    exported, url = git_daemon
    repo = exported / "app.git"
    work = tmp_path / "work"
    work.mkdir()
    (work / "Dockerfile").write_text(f"FROM {base}\nCOPY a /a\n")
    (work / "a").write_text("from git\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "one"]):
        subprocess.run([*git, *command], cwd=work, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, check=True, capture_output=True,
                            text=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(repo)], check=True)
    ref = f"{registry.host}/att-git:1"
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-t", ref, "--push", f"{url}/app.git#main")
    remote = Remote(registry.host, "att-git")
    _, index = remote.manifest("1")
    [[statement]] = statements(lambda d: remote.manifest(d)[1], remote.blob, index).values()
    invocation = statement["predicate"]["invocation"]
    assert invocation["configSource"]["uri"] == f"{url}/app.git#main"
    assert invocation["configSource"]["digest"] == {"sha1": commit}
    assert {"uri": f"{url}/app.git#main", "digest": {"sha1": commit}} in statement["predicate"]["materials"]


def test_skopeo_copies_the_attested_image(base, registry, tmp_path):
    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "copied\n"})
    ref = f"{registry.host}/att-copy:1"
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-t", ref, "--push", str(ctx))
    subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{ref}", f"docker://{registry.host}/att-copy:2"], check=True, capture_output=True)
    first, second = Remote(registry.host, "att-copy").manifest("1"), Remote(registry.host, "att-copy").manifest("2")
    assert first[0] == second[0]  # the index and both its manifests, unchanged


def test_docker26_pulls_and_runs_the_attested_image(base, registry, docker26, tmp_path):  # noqa: F811
    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\nCMD [\"cat\", \"/a\"]\n", {"a": "ran by docker 26\n"})
    ref = f"{registry.host}/att-run:1"
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-t", ref, "--push", str(ctx))
    try:
        docker26.run("pull", "-q", ref)
        done = docker26.run("run", "--rm", "--network", "none", ref)
        assert done.stdout == "ran by docker 26\n"
    finally:
        docker26.run("image", "rm", "-f", ref, check=False)


def test_prune_forgets_the_sbom_facts_of_layers_gone(base, tmp_path):
    import sqlite3

    ctx = context(tmp_path, f"FROM {base}\nCOPY site /usr/lib/python3/site-packages\n",
                  {"site/gone-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: gone\nVersion: 1.0\n"})
    root = tmp_path / "root"
    pybuild(tmp_path, "build", "--root", str(root), "-t", "scanned:1", "--sbom=true", str(ctx))

    def facts() -> int:
        with sqlite3.connect(root / "index.db") as db:
            return db.execute("SELECT count(*) FROM sbom_layer_facts").fetchone()[0]

    assert facts() == 2  # busybox's layer and the COPY's
    pybuild(tmp_path, "prune", "--all", "--root", str(root))
    assert facts() == 2  # the named image keeps its layers, and their facts
    pybuild(tmp_path, "rmi", "--root", str(root), "scanned:1")
    pybuild(tmp_path, "prune", "--all", "--root", str(root))
    assert facts() == 0


def test_registry_output_signs_what_it_pushed_and_a_wrong_password_uploads_nothing(base, registry, tmp_path):
    from fixtures.signing import PASSWORD, cosign_key_pair, cosign_verify
    from fixtures.tools import trixie_tool

    cosign = trixie_tool("cosign")
    key, pub = cosign_key_pair(cosign, tmp_path)
    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "signed\n"})
    ref = f"{registry.host}/att-signed:1"
    refused = pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-o",
                      f"type=registry,name={ref},sign={key}", str(ctx), check=False, COSIGN_PASSWORD="wrong")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr  # before any step or upload
    assert requests.get(f"http://{registry.host}/v2/att-signed/tags/list", timeout=30).status_code == 404
    done = pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "--metadata-file", str(tmp_path / "m.json"),
                   "-o", f"type=registry,name={ref},sign={key}", str(ctx), COSIGN_PASSWORD=PASSWORD)
    digest = json.loads((tmp_path / "m.json").read_text())["containerimage.digest"]
    _, index = Remote(registry.host, "att-signed").manifest("1")
    assert index["mediaType"] == OCI_INDEX  # the index of the image and its provenance is what is signed
    assert f"sha256-{digest.split(':')[1]}.sig" in done.stderr
    verified = cosign_verify(cosign, tmp_path, pub, ref)
    assert verified.returncode == 0, verified.stderr
    assert digest in verified.stdout


def test_an_explicit_attestation_is_never_replayed_from_the_memo(base, tmp_path, monkeypatch, capsys):
    from builder.root.replay import replay

    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "memo\n"})
    monkeypatch.chdir(tmp_path)  # the working directory is part of a memo's key
    env = pybuild_env(tmp_path)
    monkeypatch.setattr(os, "environ", env)
    outcomes = {}
    for flags in ((), ("--provenance=true",), ("--sbom=true",)):
        argv = ["--root", str(tmp_path / "root"), "--progress=plain", "-t", "memo-att", *flags, str(ctx)]
        done = subprocess.run(["pybuild", *argv], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        time.sleep(0.3)  # settled: a memo is written once the files it saw are older than this
        subprocess.run(["pybuild", *argv], capture_output=True, timeout=300, env=env, check=True)
        capsys.readouterr()
        outcomes[flags] = replay(argv) == 0
    # The default build to the store attests nothing: memoised as before;
    # BuildKit makes a fresh provenance every build.
    assert outcomes == {(): True, ("--provenance=true",): False, ("--sbom=true",): False}


def test_scan_stage_scans_the_stages_the_image_reads(base, registry, tmp_path):
    metadata = "Metadata-Version: 2.1\nName: build-only\nVersion: 0.9\n"
    ctx = context(tmp_path, f"FROM {base} AS deps\nCOPY site /usr/lib/python3/site-packages\n"
                            f"FROM {base}\nCOPY --from=deps /usr/lib/python3/site-packages/build_only-0.9.dist-info "
                            "/copied\n",
                  {"site/build_only-0.9.dist-info/METADATA": metadata})
    ref = f"{registry.host}/att-stages:1"
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "-t", ref, "--push",
            "--sbom=scan-stage=true", str(ctx))
    remote = Remote(registry.host, "att-stages")
    _, index = remote.manifest("1")
    [found] = statements(lambda d: remote.manifest(d)[1], remote.blob, index).values()
    assert [s["predicateType"] for s in found] == [SPDX, SPDX, SLSA_02]
    image, stage = found[0]["predicate"], found[1]["predicate"]
    assert image["name"] == "/run/src/core/sbom" and stage["name"] == "/run/src/extras/sbom-deps"
    assert "build-only" not in {p["name"] for p in image["packages"]}
    assert {p["name"]: p.get("versionInfo") for p in stage["packages"]}["build-only"] == "0.9"


def test_a_scanner_image_is_refused(base, tmp_path):
    ctx = context(tmp_path, f"FROM {base}\n")
    done = pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "--sbom=generator=docker/scout-sbom",
                   str(ctx), check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "ERROR: sbom generator=docker/scout-sbom: pybuild scans the image itself and runs no scanner image "
        "(docs/attestations.md)"]


def test_an_epoch_build_gives_the_same_attested_index_in_two_roots(base, tmp_path):
    ctx = context(tmp_path, f"FROM {base}\nARG FLAVOUR\nRUN echo $FLAVOUR > /f\n")
    digests = []
    for name in ("one", "two"):
        out = tmp_path / f"{name}.tar"
        pybuild(tmp_path, "build", "--root", str(tmp_path / name), "-t", "example.com/same:1", "--build-arg",
                "FLAVOUR=x", "--provenance=mode=max", "-o", f"type=oci,dest={out},rewrite-timestamp=true",
                str(ctx), SOURCE_DATE_EPOCH="1700000000")
        with tarfile.open(out) as tar:
            [top] = json.load(tar.extractfile("index.json"))["manifests"]
            index = json.load(tar.extractfile("blobs/" + top["digest"].replace(":", "/")))
        assert len(index["manifests"]) == 2
        digests.append(top["digest"])
    assert digests[0] == digests[1]  # provenance included: times are the epoch, the id derived


def test_the_python_api_attests_only_when_asked(base, registry, tmp_path):
    from builder.build import BuildRequest, build

    ctx = context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "api\n"})
    ref = f"{registry.host}/att-api:1"
    request = BuildRequest(ctx, tags=(ref,), push=True, root=tmp_path / "root")
    plain = build(request)
    assert Remote(registry.host, "att-api").manifest("1")[1]["mediaType"] == OCI_MANIFEST
    assert plain.index is None and plain.manifest_digest == str(plain.image.manifest.digest)
    attested = build(request, attest=("type=provenance,mode=max",))
    digest, index = Remote(registry.host, "att-api").manifest("1")
    assert attested.manifest_digest == digest == str(attested.index.digest)
    assert index["manifests"][0]["digest"] == str(plain.image.manifest.digest)


def test_two_platforms_write_their_files_in_their_directories(busybox_index, tmp_path):
    ctx = context(tmp_path, f"FROM {busybox_index.ref}\nCOPY a /a\n", {"a": "per platform\n"})
    pybuild(tmp_path, "build", "--root", str(tmp_path / "root"), "--platform", "linux/amd64,linux/arm64",
            "--provenance=true", "-o", f"type=local,dest={tmp_path / 'l'}",
            "-o", f"type=tar,dest={tmp_path / 't.tar'},attestation-prefix=att.", str(ctx))
    for platform in ("linux_amd64", "linux_arm64"):
        statement = json.loads((tmp_path / "l" / platform / "provenance.json").read_text())
        assert "a" in {s["name"] for s in statement["subject"]}
        assert "provenance.json" not in {s["name"] for s in statement["subject"]}
    with tarfile.open(tmp_path / "t.tar") as tar:
        names = set(tar.getnames())
    assert {"linux_amd64/att.provenance.json", "linux_arm64/att.provenance.json"} <= names
