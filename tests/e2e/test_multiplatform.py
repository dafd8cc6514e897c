"""Issue 17, several platforms: `--platform linux/amd64,linux/arm64` solves
one graph per platform and the images form one image index, for every
output: the OCI layout (tar and directory), the registry (push), the local
store; local and tar outputs get a directory per platform (buildx's names);
a docker archive is refused. A `FROM --platform=$BUILDPLATFORM` stage has
the same cache keys for both targets and runs once.

The base is the busybox_index fixture's index (amd64 and Debian's arm64
busybox); arm64's RUN goes through qemu (test_emulation's `emulator`).
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from e2e.test_emulation import emulator  # noqa: F401 (a fixture)
from fixtures.pybuild import pybuild_env

pytestmark = pytest.mark.e2e

PLATFORMS = "linux/amd64,linux/arm64"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKERFILE = """\
FROM --platform=$BUILDPLATFORM {base} AS tool
RUN echo "tool built on $(uname -m)" > /tool
FROM {base}
ARG TARGETARCH
ARG BUILDARCH
COPY --from=tool /tool /tool
RUN uname -m > /arch && echo "$TARGETARCH on $BUILDARCH" > /args
"""


def pybuild(*args: str, tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["pybuild", *args], capture_output=True, text=True, timeout=600,
                          env=pybuild_env(tmp_path))
    if check and done.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def _context(tmp_path: Path, base: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    return context


def _executed(stderr: str) -> list[str]:
    """The steps that ran, once each (a step's events: started, then
    completed; a cache hit's say cached), from rawjson progress."""
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    # A push is a step of its own (`pushing REF`), as BuildKit's export
    # vertex is: it is output, not a build step.
    return [v["name"] for e in events for v in e.get("vertexes", [])
            if v.get("completed") and not v.get("cached") and not v["name"].startswith("pushing ")]


class Layout:
    """An OCI layout directory, or a tar of one, read back."""

    def __init__(self, path: Path):
        self.files: dict[str, bytes] = {}
        if path.is_dir():
            for file in path.rglob("*"):
                if file.is_file():
                    self.files[str(file.relative_to(path))] = file.read_bytes()
        else:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.isfile():
                        self.files[member.name] = tar.extractfile(member).read()

    def blob(self, digest: str) -> bytes:
        return self.files["blobs/" + digest.replace(":", "/")]

    def json(self, digest: str) -> dict:
        return json.loads(self.blob(digest))

    def file_of(self, manifest: dict, path: str) -> str:
        """A file from the image's layers, the last one to hold it."""
        for layer in reversed(manifest["layers"]):
            data = self.blob(layer["digest"])
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar:
                    if member.name.lstrip("./") == path:
                        return tar.extractfile(member).read().decode()
        raise AssertionError(f"{path} in no layer")


def _images(index: dict, attested: bool = True) -> list[dict]:
    """The index's image entries; `attested`: each is followed, after all
    of them, by the attestation manifest of the default provenance
    (docs/attestations.md)."""
    entries = index["manifests"]
    images = [m for m in entries if m["platform"]["os"] != "unknown"]
    assert [m.get("annotations", {}).get("vnd.docker.reference.digest") for m in entries[len(images):]] == \
        ([m["digest"] for m in images] if attested else [])
    return images


def _platforms(index: dict, attested: bool = True) -> list[tuple[str, str]]:
    return [(m["platform"]["os"], m["platform"]["architecture"]) for m in _images(index, attested)]


@pytest.fixture(scope="module")
def built(emulator, busybox_index, registry, tmp_path_factory):  # noqa: F811
    """One build for both platforms, writing every output at once."""
    tmp_path = tmp_path_factory.mktemp("multi")
    context = _context(tmp_path, busybox_index.ref)
    ref = f"{registry.host}/multi:1"
    out = tmp_path / "out"
    done = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"), "--progress", "rawjson",
                   "-t", ref, "--push", "--metadata-file", str(tmp_path / "meta.json"),
                   "-o", f"type=oci,dest={out / 'layout.tar'}", "-o", f"type=oci,dest={out / 'layout'},tar=false",
                   "-o", f"type=local,dest={out / 'local'}", "-o", f"type=tar,dest={out / 'files.tar'}",
                   "-o", "type=image", str(context), tmp_path=tmp_path)
    return tmp_path, ref, out, done


def test_tool_stage_runs_once(built):
    _, _, _, done = built
    started = _executed(done.stderr)
    assert [name for name in started if "RUN echo" in name] == [
        '[linux/amd64 tool 2/2] RUN echo "tool built on $(uname -m)" > /tool'], started
    assert sorted(name.split("]")[0] for name in started if "RUN uname" in name) == [
        "[linux/amd64 stage-1 3/3", "[linux/arm64 stage-1 3/3"], started


@pytest.mark.parametrize("layout", ["layout.tar", "layout"])
def test_oci_layout_holds_one_index(built, layout):
    _, ref, out, _ = built
    read = Layout(out / layout)
    top = json.loads(read.files["index.json"])
    assert [m["mediaType"] for m in top["manifests"]] == [OCI_INDEX]  # as BuildKit's oci exporter
    assert top["manifests"][0]["annotations"]["io.containerd.image.name"] == ref
    assert top["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1"
    index = read.json(top["manifests"][0]["digest"])
    assert index["mediaType"] == OCI_INDEX
    assert _platforms(index) == [("linux", "amd64"), ("linux", "arm64")]
    files = {}
    for entry in _images(index):
        manifest = read.json(entry["digest"])
        config = read.json(manifest["config"]["digest"])
        assert config["architecture"] == entry["platform"]["architecture"]
        files[config["architecture"]] = (read.file_of(manifest, "arch"), read.file_of(manifest, "args"),
                                         read.file_of(manifest, "tool"))
    assert files == {"amd64": ("x86_64\n", "amd64 on amd64\n", "tool built on x86_64\n"),
                     "arm64": ("aarch64\n", "arm64 on amd64\n", "tool built on x86_64\n")}


def test_pushed_index_lists_both_platforms(built):
    tmp_path, ref, _, _ = built
    meta = json.loads((tmp_path / "meta.json").read_text())
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                                    check=True, capture_output=True, text=True).stdout)
    assert raw["mediaType"] == OCI_INDEX
    assert _platforms(raw) == [("linux", "amd64"), ("linux", "arm64")]
    assert meta["pybuild.pushed"][ref] == meta["containerimage.digest"]
    for arch in ("amd64", "arm64"):
        info = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--override-arch", arch,
                                          f"docker://{ref}"], check=True, capture_output=True, text=True).stdout)
        assert info["Architecture"] == arch


def test_docker_media_types_push_a_manifest_list(built, registry):
    tmp_path, _, _, _ = built
    ref = f"{registry.host}/multi:docker"
    again = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"), "--progress", "rawjson",
                    "-o", f"type=registry,name={ref},oci-mediatypes=false", "--provenance=false",
                    str(tmp_path / "ctx"), tmp_path=tmp_path)  # an attestation would turn OCI media types on
    assert _executed(again.stderr) == []
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                                    check=True, capture_output=True, text=True).stdout)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert _platforms(raw, attested=False) == [("linux", "amd64"), ("linux", "arm64")]
    assert {m["mediaType"] for m in raw["manifests"]} == {"application/vnd.docker.distribution.manifest.v2+json"}


def test_local_and_tar_have_a_directory_per_platform(built):
    _, _, out, _ = built
    assert (out / "local" / "linux_amd64" / "arch").read_text() == "x86_64\n"
    assert (out / "local" / "linux_arm64" / "arch").read_text() == "aarch64\n"
    with tarfile.open(out / "files.tar") as tar:
        assert tar.extractfile("linux_amd64/arch").read() == b"x86_64\n"
        assert tar.extractfile("linux_arm64/arch").read() == b"aarch64\n"
        assert tar.getmember("linux_arm64/bin/busybox").isfile()


def test_store_keeps_the_index(built):
    tmp_path, ref, _, _ = built
    root = str(tmp_path / "root")
    listed = pybuild("images", "--root", root, tmp_path=tmp_path).stdout
    assert sum(ref in line for line in listed.splitlines()) == 1, listed
    inspected = json.loads(pybuild("inspect", "--root", root, ref, tmp_path=tmp_path).stdout)
    # The pushed index, with the attestation manifests of its provenance.
    assert [m["Config"]["architecture"] for m in inspected["Manifests"]
            if m["Config"]["architecture"] != "unknown"] == ["amd64", "arm64"]
    again = pybuild("build", "--platform", PLATFORMS, "--root", root, "--progress", "rawjson", "-t", ref,
                    str(tmp_path / "ctx"), tmp_path=tmp_path)
    assert _executed(again.stderr) == []


def test_no_cache_still_runs_the_shared_stage_once(built):
    tmp_path, _, _, _ = built
    again = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"), "--progress", "rawjson",
                    "--no-cache", "-o", f"type=local,dest={tmp_path / 'nocache'}", str(tmp_path / "ctx"),
                    tmp_path=tmp_path)
    assert sum("RUN echo" in name for name in _executed(again.stderr)) == 1
    assert sum("RUN uname" in name for name in _executed(again.stderr)) == 2
    assert (tmp_path / "nocache" / "linux_arm64" / "arch").read_text() == "aarch64\n"


def _vertex_times(stderr: str, needle: str) -> list[tuple[str, str]]:
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [(v["started"], v["completed"]) for e in events for v in e.get("vertexes", [])
            if needle in v["name"] and v.get("completed") and not v.get("cached")]


def test_platforms_are_solved_at_once(built, busybox_index):
    tmp_path, _, _, _ = built
    context = tmp_path / "sleepy"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_index.ref}\nARG TARGETARCH\n"
                                        "RUN sleep 2 && echo $TARGETARCH > /slept\n")
    done = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"), "--progress", "rawjson",
                   "-o", f"type=local,dest={tmp_path / 'slept'}", str(context), tmp_path=tmp_path)
    runs = _vertex_times(done.stderr, "RUN sleep")
    assert len(runs) == 2
    # RFC 3339 with the same zone: as strings, they sort as times do.
    assert max(started for started, _ in runs) < min(completed for _, completed in runs), runs


def test_a_failing_platform_fails_the_build_once(built, busybox_index):
    tmp_path, _, _, _ = built
    context = tmp_path / "failing"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_index.ref}\nARG TARGETARCH\n"
                                        'RUN [ "$TARGETARCH" = amd64 ] && sleep 3 || exit 7\n')
    done = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"),
                   "-o", f"type=local,dest={tmp_path / 'failed'}", str(context), tmp_path=tmp_path, check=False)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "exit code: 7" in errors[0], done.stderr
    assert not (tmp_path / "failed").exists()


def test_docker_output_is_refused(busybox_index, tmp_path):
    context = _context(tmp_path, busybox_index.ref)
    done = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"),
                   "-o", f"type=docker,dest={tmp_path / 'd.tar'}", str(context), tmp_path=tmp_path, check=False)
    assert done.returncode != 0
    assert "docker exporter does not currently support exporting manifest lists" in done.stderr
    assert not (tmp_path / "d.tar").exists()
