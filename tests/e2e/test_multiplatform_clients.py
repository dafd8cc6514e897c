"""Issue 17 with real clients: what pybuild pushes and exports for two
platforms is read by skopeo, umoci and docker 26 (BuildKit 0.13), and the
cross-compilation pattern runs its build stage once, as docker 26 does.

The Dockerfile is BuildKit's cross-compilation pattern: a build stage on
$BUILDPLATFORM makes every target's file in one RUN (natively, here amd64),
and each target's final stage copies its own file by $TARGETARCH and runs a
RUN of its own platform (arm64's through qemu). test_multiplatform.py checks
the layouts and indexes themselves; these tests check that the tools people
use take them.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from e2e.test_emulation import emulator  # noqa: F401 (a fixture)
from e2e.test_multiplatform import PLATFORMS, _images, _platforms, pybuild
from fixtures import leaks
from fixtures.docker26 import rawjson_statuses, ran_steps, start_docker26, stop_docker26
from fixtures.tools import require_tools, trixie_tool

pytestmark = pytest.mark.e2e

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
CROSS = """\
FROM --platform=$BUILDPLATFORM {base} AS build
RUN mkdir /out && for arch in amd64 arm64; do echo "built on $(uname -m) for $arch" > /out/$arch; done
FROM {base}
ARG TARGETARCH
COPY --from=build /out/$TARGETARCH /built
RUN uname -m > /arch
"""
SHARED_RUN = "RUN mkdir /out"
# What each platform's image holds: its own RUN's `uname -m`, and the file
# the build stage made natively for it.
EXPECTED = {"amd64": ("x86_64\n", "built on x86_64 for amd64\n"),
            "arm64": ("aarch64\n", "built on x86_64 for arm64\n")}


def _ran(statuses: list[dict], needle: str) -> list[str]:
    return [status["name"] for status in ran_steps(statuses, needle).values()]


def _ran_then_cached(statuses: list[dict]) -> list[str]:
    """RUN and COPY steps reported as run and, later, as cached: a reader
    that keeps a step's last status (progress printers do) shows them as
    never run."""
    seen_run: set[str] = set()
    found = []
    for status in statuses:
        if not status["name"].split("] ", 1)[-1].startswith(("RUN ", "COPY ")):
            continue
        if status.get("completed") and not status.get("cached"):
            seen_run.add(status["digest"])
        elif status.get("cached") and status["digest"] in seen_run:
            found.append(status["name"])
    return found


@pytest.fixture(scope="module")
def pushed(emulator, busybox_index, registry, tmp_path_factory):  # noqa: F811
    """The cross-compilation build for both platforms, pushed as an OCI
    index (and exported as an OCI tar), then pushed again with docker's media
    types: a manifest list."""
    require_tools("skopeo", "umoci")
    tmp_path = tmp_path_factory.mktemp("clients")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(CROSS.format(base=busybox_index.ref))
    oci_ref, list_ref = f"{registry.host}/clients:oci", f"{registry.host}/clients:list"
    done = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"), "--progress", "rawjson",
                   "-t", oci_ref, "--push", "-o", f"type=oci,dest={tmp_path / 'image.tar'}", str(context),
                   tmp_path=tmp_path)
    pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"),
            "-o", f"type=registry,name={list_ref},oci-mediatypes=false", "--provenance=false", str(context),
            tmp_path=tmp_path)  # a manifest list has no room for an attestation
    return {"tmp": tmp_path, "context": context, "oci": oci_ref, "list": list_ref, "progress": done.stderr}


def _skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True, timeout=120).stdout


def _umoci_files(layout: Path, tag: str, into: Path) -> tuple[str, str]:
    """/arch and /built of the image `tag` of an OCI layout, as umoci unpacks it."""
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(into)], check=True,
                   capture_output=True, timeout=120)
    return (into / "rootfs/arch").read_text(), (into / "rootfs/built").read_text()


def _copied(ref: str, arch: str, tmp_path: Path) -> tuple[str, tuple[str, str]]:
    """`skopeo copy --override-arch` of a pushed image into a layout of its
    own, then umoci: the copied manifest's digest and its /arch and /built."""
    layout = tmp_path / f"copied-{arch}"
    _skopeo("copy", "--quiet", "--src-tls-verify=false", "--override-arch", arch, f"docker://{ref}",
            f"oci:{layout}:{arch}")
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    return entry["digest"], _umoci_files(layout, arch, tmp_path / f"unpacked-{arch}")


@pytest.mark.parametrize("kind, media_type", [("oci", OCI_INDEX), ("list", DOCKER_LIST)])
def test_skopeo_copies_each_platform_out_of_the_pushed_index(pushed, kind, media_type, tmp_path):
    raw = json.loads(_skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{pushed[kind]}"))
    assert raw["mediaType"] == media_type
    assert _platforms(raw, attested=kind == "oci") == [("linux", "amd64"), ("linux", "arm64")]
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in raw["manifests"]}
    for arch, files in EXPECTED.items():
        digest, copied = _copied(pushed[kind], arch, tmp_path)
        if kind == "oci":  # a manifest list's entries are converted to OCI manifests on the way
            assert digest == by_arch[arch]
        assert copied == files


def test_umoci_unpacks_each_platform_of_the_oci_tar(pushed, tmp_path):
    layout = tmp_path / "layout"
    with tarfile.open(pushed["tmp"] / "image.tar") as tar:
        tar.extractall(layout, filter="tar")
    top = json.loads((layout / "index.json").read_text())
    tag = top["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    assert tag == "oci"
    # umoci 0.4 resolves a name to every manifest under it: with an index
    # there (as BuildKit's oci exporter writes too), the name is ambiguous.
    refused = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(tmp_path / "all")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "ambiguous" in refused.stderr, refused.stderr
    index = json.loads((layout / "blobs/sha256" / top["manifests"][0]["digest"].split(":")[1]).read_text())
    for entry in _images(index):
        arch = entry["platform"]["architecture"]
        # One platform's manifest, named, in a layout of its own: skopeo
        # selects it from the tar's index, digest kept.
        _skopeo("copy", "--quiet", "--override-arch", arch, f"oci-archive:{pushed['tmp'] / 'image.tar'}:{tag}",
                f"oci:{tmp_path / 'one'}:{arch}")
        named = json.loads((tmp_path / "one/index.json").read_text())["manifests"]
        assert entry["digest"] in [m["digest"] for m in named]
        assert _umoci_files(tmp_path / "one", arch, tmp_path / f"unpacked-{arch}") == EXPECTED[arch]


@pytest.mark.parametrize("kind", ["oci", "list"])
def test_docker26_pulls_and_runs_both_platforms(pushed, docker26_multiplatform, kind):  # noqa: F811
    docker = docker26_multiplatform
    ref = pushed[kind]
    try:
        docker.run("pull", "-q", ref)
        assert docker.run("image", "inspect", "--format", "{{.Architecture}}", ref).stdout.strip() == "amd64"
        native = docker.run("run", "--rm", "--network", "none", ref, "sh", "-c", "uname -m; cat /arch /built")
        assert native.stdout == "x86_64\n" + "".join(EXPECTED["amd64"])
        # arm64 through the qemu handler that setup.sh (or `emulator`) registered.
        foreign = docker.run("run", "--rm", "--network", "none", "--platform", "linux/arm64", ref,
                             "sh", "-c", "uname -m; cat /arch /built")
        assert foreign.stdout == "aarch64\n" + "".join(EXPECTED["arm64"])
    finally:
        docker.run("image", "rm", "-f", ref, check=False)
    assert docker.run("ps", "-a", "-q").stdout.split() == []


@pytest.fixture(scope="module")
def theirs(pushed, docker26_multiplatform, registry):  # noqa: F811
    """The same context built by docker 26 for both platforms and pushed,
    with buildx's default min provenance as pybuild's: its ref and its
    rawjson progress."""
    ref = f"{registry.host}/clients:docker26"
    built = docker26_multiplatform.run("buildx", "build", "--network", "host", "--platform", PLATFORMS,
                                       "--progress", "rawjson",
                                       "-o", f"type=registry,name={ref}", str(pushed["context"]))
    return {"ref": ref, "statuses": rawjson_statuses(built.stderr)}


def test_build_stage_runs_once_as_in_docker26(pushed, theirs, tmp_path):
    ours = rawjson_statuses(pushed["progress"])
    # The build stage's RUN: one vertex, run once, for both platforms.
    assert _ran(theirs["statuses"], SHARED_RUN) == [
        f'[linux/amd64 build 2/2] {CROSS.splitlines()[1]}'], theirs["statuses"]
    assert _ran(ours, SHARED_RUN) == _ran(theirs["statuses"], SHARED_RUN)
    # The same steps ran, by name: the two final stages' COPY and RUN too.
    steps = ("RUN ", "COPY ")
    assert sorted(n for n in _ran(ours, "") if n.split("] ", 1)[-1].startswith(steps)) == \
        sorted(n for n in _ran(theirs["statuses"], "") if n.split("] ", 1)[-1].startswith(steps))
    # docker 26's images hold what pybuild's do.
    assert {arch: _copied(theirs["ref"], arch, tmp_path)[1] for arch in EXPECTED} == EXPECTED
    # Its progress reports a step that ran once, never again as cached.
    assert _ran_then_cached(theirs["statuses"]) == []


def _platform_fields(ref: str) -> list[dict]:
    """Each entry's platform in the index, with the fields of its image's
    config that name the platform."""
    raw = json.loads(_skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}"))
    fields = []
    for entry in raw["manifests"]:
        repository = ref.rsplit(":", 1)[0]
        config = json.loads(_skopeo("inspect", "--tls-verify=false", "--config",
                                    f"docker://{repository}@{entry['digest']}"))
        fields.append({"index": entry["platform"],
                       "config": {k: config.get(k) for k in ("os", "architecture", "variant")}})
    return fields


def test_platforms_are_named_as_docker26_names_them(pushed, theirs):
    assert _platform_fields(pushed["oci"]) == _platform_fields(theirs["ref"])


def test_a_shared_step_that_ran_is_not_reported_cached_afterwards(pushed):
    """As docker 26 reports it (bc48bf2's multiplatform.ShownOnce; before it,
    each platform's solve found the shared RUN in the cache and reported its
    digest again as cached, and plain progress printed `#2 DONE 0.1s`, then
    `#2 CACHED` once per platform)."""
    assert _ran_then_cached(rawjson_statuses(pushed["progress"])) == []


def test_a_stopped_docker26_leaves_nothing(busybox_image):
    """The fixture's promise, on its default daemon (graph driver): a pull
    and a run, then the stop ends every process and mount and the directory."""
    require_tools("docker")
    docker = start_docker26(trixie_tool("dockerd26"))
    try:
        docker.run("pull", "-q", busybox_image.ref)
        assert docker.run("run", "--rm", "--network", "none", busybox_image.ref, "uname", "-m").stdout == "x86_64\n"
        spawned = leaks.descendants(docker.daemon.pid)
        assert any(name.startswith("containerd") for name in spawned.values()), spawned
    finally:
        problems = stop_docker26(docker)
    assert problems == []
    assert not docker.home.exists()
    assert [m for m in leaks.mounts() if str(docker.home) in m] == []
    assert [pid for pid in spawned if Path(f"/proc/{pid}").exists()] == []
