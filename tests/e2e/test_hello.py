"""Issue 2 end to end: testdata/hello built by the real `pybuild` command,
stored, exported, pushed, checked by independent tools, rebuilt from cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "testdata" / "hello"


def pybuild(*args, root: Path, check: bool = True, timeout: float = 120, **kwargs):
    done = subprocess.run(["pybuild", *args, "--root", str(root)] if args and args[0] in ("build",) or
                          (args and args[0].startswith("-")) else ["pybuild", *args, "--root", str(root)],
                          capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


@pytest.fixture(scope="module")
def hello_build(busybox_image, tmp_path_factory):
    """One cold build of testdata/hello with every output of issue 2."""
    work = tmp_path_factory.mktemp("hello")
    root = work / "root"
    # No provenance: umoci 0.4 cannot pick the image out of an index that
    # also lists an attestation manifest ("tag is ambiguous"), BuildKit's
    # layouts included; issue 2's outputs are the image alone.
    done = pybuild("-t", "hello", "--build-arg", f"BASE={busybox_image.ref}", "--provenance=false",
                   "-o", "type=image", "-o", f"type=oci,dest={work / 'hello-oci.tar'}",
                   "-o", f"type=docker,dest={work / 'hello-docker.tar'}",
                   "-o", f"type=oci,dest={work / 'layout'},tar=false",
                   "--iidfile", str(work / "iid"), "--progress", "plain", str(HELLO), root=root)
    yield work, root, done
    shutil.rmtree(work, ignore_errors=True)


def test_build_stores_the_image(hello_build):
    work, root, done = hello_build
    image_id = (work / "iid").read_text()
    assert image_id.startswith("sha256:")
    listed = pybuild("images", root=root).stdout
    assert "docker.io/library/hello:latest" in listed
    inspect = json.loads(pybuild("inspect", "hello", root=root).stdout)
    assert inspect["Id"] == image_id
    config = inspect["Config"]["config"]
    assert config["Cmd"] == ["/app/bin/greet"]
    assert config["User"] == "appuser"
    assert config["WorkingDir"] == "/app"
    assert "APP_HOME=/app" in config["Env"]
    assert len(inspect["Config"]["rootfs"]["diff_ids"]) == len(inspect["Manifest"]["layers"])
    # Plain progress shows each step with BuildKit's names.
    assert "[build 4/4] RUN mkdir -p /out" in done.stderr
    assert "[stage-1 3/5] COPY --from=build /out/greet ./bin/greet" in done.stderr


def test_oci_archive_passes_skopeo_and_runs_under_runc(hello_build, tmp_path):
    work, _, _ = hello_build
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{work / 'hello-oci.tar'}"],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    with tarfile.open(work / "hello-oci.tar") as archive:
        index = json.load(archive.extractfile("index.json"))
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{work / 'layout'}:latest", str(bundle)],
                   check=True, capture_output=True)
    try:
        config_path = bundle / "config.json"
        config = json.loads(config_path.read_text())
        config["process"]["terminal"] = False
        config_path.write_text(json.dumps(config))
        run = subprocess.run(["runc", "run", "--bundle", str(bundle), f"pybuild-test-{os.getpid()}"],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines() == ["hello from pybuild", "built by a Dockerfile, without a daemon"]
        # .dockerignore kept README.md out of the context, and the image.
        assert not (bundle / "rootfs" / "app" / "README.md").exists()
    finally:
        shutil.rmtree(bundle, ignore_errors=True)


def test_docker_archive_is_loadable(hello_build):
    work, _, _ = hello_build
    with tarfile.open(work / "hello-docker.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        names = set(archive.getnames())
    assert manifest[0]["RepoTags"] == ["hello:latest"]
    assert manifest[0]["Config"] in names
    assert all(layer in names for layer in manifest[0]["Layers"])
    info = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{work / 'hello-docker.tar'}"],
                                     check=True, capture_output=True, text=True).stdout)
    assert len(info["Layers"]) == len(manifest[0]["Layers"])


def test_second_build_is_fully_cached(hello_build, busybox_image):
    work, root, _ = hello_build
    again = pybuild("-t", "hello", "--build-arg", f"BASE={busybox_image.ref}", "--progress", "rawjson",
                    "--metadata-file", str(work / "meta.json"), str(HELLO), root=root)
    assert _started(again.stderr) == [], "a step ran again"
    meta = json.loads((work / "meta.json").read_text())
    assert meta["containerimage.config.digest"] == (work / "iid").read_text()
    assert meta["pybuild.executed"] == 0


def _started(stderr: str) -> list[str]:
    """Steps that ran (not served from the cache), from rawjson progress:
    BuildKit's SolveStatus objects, one per line."""
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [v["name"] for e in events for v in e.get("vertexes", [])
            if v.get("started") and not v.get("cached")]


def test_cache_follows_content_not_mtimes(busybox_image, tmp_path):
    context = tmp_path / "ctx"
    shutil.copytree(HELLO, context)
    root = tmp_path / "root"
    args = ("--progress", "rawjson", "--build-arg", f"BASE={busybox_image.ref}", str(context))
    pybuild(*args, root=root)
    # Touched without a change, and a new file no COPY selects: all cached.
    os.utime(context / "src" / "message.txt", (1, 1))
    (context / "notes.txt").write_text("not part of any COPY\n")
    assert _started(pybuild(*args, root=root).stderr) == []
    # A changed file reruns the COPYs that select it and what follows them.
    (context / "src" / "greet.sh.in").write_text("#!/bin/sh\necho '@GREETING@!'\n")
    started = _started(pybuild(*args, root=root).stderr)
    assert any("[build 3/4] COPY src/ ./" in name for name in started)
    assert any("[build 4/4] RUN" in name for name in started)
    assert not any("WORKDIR" in name for name in started), "steps before the change stay cached"


def test_build_subcommand_is_the_default(busybox_image, tmp_path):
    root = tmp_path / "root"
    a = pybuild("build", "-q", "--build-arg", f"BASE={busybox_image.ref}", str(HELLO), root=root)
    b = pybuild("-q", "--build-arg", f"BASE={busybox_image.ref}", str(HELLO), root=root)
    assert a.stdout.strip() == b.stdout.strip()


def test_push_and_pull_back_with_skopeo(hello_build, busybox_image, registry):
    work, root, _ = hello_build
    target = f"{registry.host}/pushed/hello:v1"
    pybuild("-t", target, "--push", "--build-arg", f"BASE={busybox_image.ref}", str(HELLO), root=root)
    def raw(reference: str) -> dict:
        return json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", reference],
                                         check=True, capture_output=True, text=True).stdout)

    # The push carries the default provenance: the index's first entry is the image.
    index = raw(f"docker://{target}")
    image, attestation = index["manifests"]
    assert attestation["annotations"]["vnd.docker.reference.digest"] == image["digest"]
    assert raw(f"docker://{target.rsplit(':', 1)[0]}@{image['digest']}")["config"]["digest"] == \
        (work / "iid").read_text()
    copy_dir = work / "pulled"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{copy_dir}:v1"],
                   check=True, capture_output=True)
    assert (copy_dir / "index.json").exists()


def test_platform_selects_from_an_index(busybox_index, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_index.ref}\nRUN echo ok > /ok\n")
    done = pybuild("-q", str(context), root=tmp_path / "root")
    assert done.stdout.strip().startswith("sha256:")
    # Each platform's busybox is its own machine's executable (e_machine
    # 0x3e x86-64, 0xb7 aarch64); no RUN, so no emulator is needed
    # (tests/e2e/test_emulation.py runs the arm64 one).
    (context / "Dockerfile").write_text(f"FROM {busybox_index.ref}\n")
    for requested, machine in (("linux/amd64", b"\x3e\x00"), ("linux/arm64/v8", b"\xb7\x00")):
        out = tmp_path / requested.replace("/", "-")
        pybuild("--platform", requested, "-o", f"type=local,dest={out}", str(context), root=tmp_path / "root")
        assert (out / "bin/busybox").read_bytes()[18:20] == machine


@pytest.mark.parametrize("dockerfile, expected", [
    ("FROM {base}\nRUNN echo\n", "Dockerfile:2: unknown instruction: RUNN"),
    ("FROM {registry}/does-not-exist:1\n", "does-not-exist"),
    ("FROM 127.0.0.1:1/busybox\n", "127.0.0.1:1"),
    ("FROM {base}\nRUN echo about to fail; echo last words >&2; exit 3\n",
     'did not complete successfully: exit code: 3'),
    ("FROM {base}\nCOPY missing.txt /\n", "missing.txt"),
])
def test_errors_are_one_clear_message(busybox_image, registry, tmp_path, dockerfile, expected):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile.format(base=busybox_image.ref, registry=registry.host))
    root = tmp_path / "root"
    done = pybuild("--progress", "plain", str(context), root=root, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert expected in done.stderr
    if "exit 3" in dockerfile:
        assert "last words" in done.stderr.split("ERROR:")[-1]
    assert mounts_under(root) == []
    assert not any((root / "tmp").iterdir()) if (root / "tmp").exists() else True
