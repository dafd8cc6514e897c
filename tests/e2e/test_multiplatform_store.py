"""Issue 17, a build for several platforms in the local store and the
registry: `pybuild push` of a stored index sends every platform's image and
then the index (the digest `build --push` gives), `inspect` shows the index
and each platform's image, `history` one platform's, `tag` names the whole
index and `rmi` only removes a name. And FROM an index, as BuildKit chooses
(containerd's rules): linux/arm/v7 takes the index's arm/v6 image when it
has no v7 (v6 before v5, whatever their order), and a platform the index
lacks is one error naming the ones it has.

No step runs a foreign binary (FROM, COPY, LABEL): no emulator is needed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from e2e.test_multiplatform import Layout
from fixtures import busybox
from fixtures.pybuild import pybuild_env

pytestmark = pytest.mark.e2e

PLATFORMS = "linux/amd64,linux/arm64"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EPOCH = "1700000000"  # the same image from two roots


def pybuild(*args: str, tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["pybuild", *args], capture_output=True, text=True, timeout=600,
                          env=pybuild_env(tmp_path, SOURCE_DATE_EPOCH=EPOCH))
    if check and done.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def _errors(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


def _context(tmp_path: Path, base: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "hello.txt").write_text("hello\n")
    (context / "Dockerfile").write_text(f"FROM {base}\nARG TARGETARCH\nLABEL arch=$TARGETARCH\n"
                                        "COPY hello.txt /hello.txt\n")
    return context


def _raw(ref: str) -> tuple[str, dict]:
    data = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                          check=True, capture_output=True, timeout=60).stdout
    return "sha256:" + hashlib.sha256(data).hexdigest(), json.loads(data)


@pytest.fixture(scope="module")
def stored(busybox_index, registry, tmp_path_factory):
    """A two-platform build kept in a root's store (nothing pushed)."""
    tmp_path = tmp_path_factory.mktemp("mpstore")
    context = _context(tmp_path, busybox_index.ref)
    root = tmp_path / "root"
    ref = f"{registry.host}/mpstore:1"
    pybuild("build", "--platform", PLATFORMS, "--root", str(root), "-t", ref,
            "--metadata-file", str(tmp_path / "meta.json"), str(context), tmp_path=tmp_path)
    index = json.loads((tmp_path / "meta.json").read_text())["containerimage.digest"]
    return tmp_path, root, ref, index


def test_push_sends_the_index_as_build_push_does(stored, registry):
    tmp_path, root, ref, _ = stored
    pushed = pybuild("push", "--root", str(root), ref, tmp_path=tmp_path).stdout
    digest = pushed.strip().rsplit("digest: ", 1)[1]
    served, raw = _raw(ref)
    assert served == digest
    assert raw["mediaType"] == OCI_INDEX
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in raw["manifests"]] == [
        ("linux", "amd64"), ("linux", "arm64")]
    for entry in raw["manifests"]:  # every platform's image is there, by digest, its layers gzipped
        manifest_digest, manifest = _raw(f"{ref.rsplit(':', 1)[0]}@{entry['digest']}")
        assert manifest_digest == entry["digest"]
        assert all(layer["mediaType"].endswith("+gzip") for layer in manifest["layers"])
    # A fresh root's build --push of the same Dockerfile and epoch: the same index.
    again = f"{registry.host}/mpstore:again"
    # No provenance: the stored index has none (the store keeps no default one).
    pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "fresh"), "-t", again, "--push",
            "--provenance=false", "--metadata-file", str(tmp_path / "again.json"), str(tmp_path / "ctx"),
            tmp_path=tmp_path)
    assert json.loads((tmp_path / "again.json").read_text())["pybuild.pushed"][again] == digest
    assert _raw(again)[0] == digest


def test_push_of_a_docker_manifest_list_keeps_docker_media_types(stored, registry):
    tmp_path, root, _, _ = stored
    ref = f"{registry.host}/mpstore:docker"
    pybuild("build", "--platform", PLATFORMS, "--root", str(root), "-o",
            f"type=image,name={ref},oci-mediatypes=false", str(tmp_path / "ctx"), tmp_path=tmp_path)
    digest = pybuild("push", "--root", str(root), ref, tmp_path=tmp_path).stdout.strip().rsplit("digest: ", 1)[1]
    served, raw = _raw(ref)
    assert served == digest
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    for entry in raw["manifests"]:
        assert entry["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        manifest = _raw(f"{ref.rsplit(':', 1)[0]}@{entry['digest']}")[1]
        assert {layer["mediaType"] for layer in manifest["layers"]} == {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"}


def test_inspect_shows_the_index_and_each_platform(stored):
    tmp_path, root, ref, index = stored
    shown = json.loads(pybuild("inspect", "--root", str(root), ref, tmp_path=tmp_path).stdout)
    assert shown["Name"] == ref
    assert shown["Digest"] == index
    assert shown["MediaType"] == OCI_INDEX
    assert [m["platform"]["architecture"] for m in shown["Index"]["manifests"]] == ["amd64", "arm64"]
    rows = shown["Manifests"]
    assert [row["Platform"] for row in rows] == ["linux/amd64", "linux/arm64"]
    assert [row["Digest"] for row in rows] == [m["digest"] for m in shown["Index"]["manifests"]]
    for row, arch in zip(rows, ("amd64", "arm64")):
        assert row["Config"]["architecture"] == arch
        assert row["Config"]["config"]["Labels"] == {"arch": arch}
        assert row["Id"].startswith("sha256:") and row["Size"] > 0
    assert rows[0]["Id"] != rows[1]["Id"]


def test_history_shows_the_host_image_or_the_one_asked_for(stored):
    tmp_path, root, ref, _ = stored
    host = pybuild("history", "--root", str(root), ref, tmp_path=tmp_path).stdout
    arm64 = pybuild("history", "--root", str(root), "--platform", "linux/arm64", ref, tmp_path=tmp_path).stdout
    assert "LABEL arch=amd64" in host and "arch=arm64" not in host
    assert "LABEL arch=arm64" in arm64 and "arch=amd64" not in arm64
    missing = pybuild("history", "--root", str(root), "--platform", "linux/s390x", ref, tmp_path=tmp_path,
                      check=False)
    assert missing.returncode == 1
    assert _errors(missing) == [f"ERROR: {ref}: no match for platform linux/s390x in manifest list; "
                                "it has linux/amd64, linux/arm64"]


def test_tag_names_the_index_and_rmi_only_a_name(stored, registry):
    tmp_path, root, ref, index = stored
    other = f"{registry.host}/mpstore:other"
    pybuild("tag", "--root", str(root), ref, other, tmp_path=tmp_path)
    assert json.loads(pybuild("inspect", "--root", str(root), other, tmp_path=tmp_path).stdout)["Digest"] == index
    listed = pybuild("images", "--root", str(root), tmp_path=tmp_path).stdout.splitlines()
    assert sum(line.startswith(ref + " ") for line in listed) == 1
    assert sum(line.startswith(other + " ") for line in listed) == 1
    assert "Untagged: " + other in pybuild("rmi", "--root", str(root), other, tmp_path=tmp_path).stdout
    listed = pybuild("images", "--root", str(root), tmp_path=tmp_path).stdout
    assert other not in listed and ref in listed
    assert json.loads(pybuild("inspect", "--root", str(root), ref, tmp_path=tmp_path).stdout)["Digest"] == index
    gone = pybuild("inspect", "--root", str(root), other, tmp_path=tmp_path, check=False)
    assert gone.returncode == 1 and _errors(gone) == [f"ERROR: image not found: {other}"]


@pytest.fixture(scope="module")
def arm_index(registry, tmp_path_factory) -> str:
    """An index with linux/arm/v5 and linux/arm/v6 images (v6 first), each
    its own Cmd; their layer is the host busybox, which nothing runs."""
    layout = tmp_path_factory.mktemp("arm-index")
    entries = []
    for variant in ("v6", "v5"):
        image = busybox.write_image(layout, [busybox.busybox_layer_tar()], arch="arm", cmd=("echo", variant))
        entries.append({"mediaType": busybox.OCI_MANIFEST, "digest": str(image.manifest),
                        "size": image.manifest_size,
                        "platform": {"os": "linux", "architecture": "arm", "variant": variant}})
    body = busybox._json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries[::-1]})
    digest = busybox.put_blob(layout, body)["digest"]
    busybox.write_index(layout, OCI_INDEX, digest, len(body), "1")
    ref = f"{registry.host}/arm-only:1"
    busybox.skopeo_push(layout, "1", ref, all_images=True)
    return ref


def test_arm_v7_builds_from_the_arm_v6_image(arm_index, tmp_path):
    context = _context(tmp_path, arm_index)
    out = tmp_path / "out.tar"
    pybuild("build", "--platform", "linux/arm/v7", "--root", str(tmp_path / "root"),
            "-o", f"type=oci,dest={out}", str(context), tmp_path=tmp_path)
    layout = Layout(out)
    index = layout.json(json.loads(layout.files["index.json"])["manifests"][0]["digest"])
    image, attestation = index["manifests"]  # the image, then its provenance's manifest
    assert attestation["annotations"]["vnd.docker.reference.digest"] == image["digest"]
    assert image["platform"] == {"architecture": "arm", "os": "linux", "variant": "v7"}
    manifest = layout.json(image["digest"])
    config = layout.json(manifest["config"]["digest"])
    assert config["config"]["Cmd"] == ["echo", "v6"]  # v6 before v5, though v5 comes first
    # the image is the build's platform's, as BuildKit 0.13 labels it (measured: arm, v7)
    assert (config["architecture"], config.get("variant")) == ("arm", "v7")
    assert config["config"]["Labels"] == {"arch": "arm"}
    assert layout.file_of(manifest, "hello.txt") == "hello\n"


def test_a_platform_the_index_lacks_is_one_error_naming_its_platforms(arm_index, tmp_path):
    context = _context(tmp_path, arm_index)
    done = pybuild("build", "--platform", "linux/s390x", "--root", str(tmp_path / "root"),
                   "-o", f"type=oci,dest={tmp_path / 'out.tar'}", str(context), tmp_path=tmp_path, check=False)
    assert done.returncode == 1
    errors = [line for line in _errors(done) if line.startswith("ERROR")]
    assert errors == [f"ERROR: failed to resolve {arm_index}: no match for platform linux/s390x in manifest "
                      "list; it has linux/arm/v5, linux/arm/v6"], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.tar").exists()
