"""Building a case's inputs with each builder, into one record: the image
(tests/compat/layers.py) or the error.

A build's record is {"image": {...}} or {"error": {"message": ..., "line": N
or None}}; pybuild's error record also keeps what its stderr showed, for the
checks docker's message cannot make (exit status, traceback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compat.cases import Inputs
from compat.layers import Base, image_record, layout_reader
from fixtures.pybuild import pybuild_env

BASE_NAME = "busybox"
# docker's error excerpt starts with "Dockerfile:N" alone on its line;
# pybuild's message says "at Dockerfile:N:".
_DOCKER_LINE = re.compile(r"^(?:\S*Dockerfile):(\d+)$", re.M)
_PYBUILD_LINE = re.compile(r"Dockerfile:(\d+)")
# BuildKit names the context's snapshot by random ids in some messages.
_RANDOM_REF = re.compile(r"failed to calculate checksum of ref [^ ]+?::[a-z0-9]+: ")


@dataclass(frozen=True)
class BaseImage:
    """The image `busybox` names in a case, for both builders."""

    ref: str
    base: Base


def _common_args(inputs: Inputs, base_ref: str) -> list[str]:
    args = ["-f", str(inputs.dockerfile), "--build-context", f"{BASE_NAME}=docker-image://{base_ref}"]
    for name, folder in inputs.build_contexts.items():
        args += ["--build-context", f"{name}={folder}"]
    for key, value in inputs.args.items():
        args += ["--build-arg", f"{key}={value}"]
    if inputs.target:
        args += ["--target", inputs.target]
    return args


def pybuild_record(inputs: Inputs, image: BaseImage, root: Path, work: Path) -> dict:
    """Build with this tree's pybuild CLI into an OCI layout under `work`,
    the store at `root` (shared by cases: a cache hit must give the same
    image)."""
    out = work / "pybuild-oci"
    argv = [sys.executable, "-m", "builder.cli", "build", "--root", str(root),
            *_common_args(inputs, image.ref), "-o", f"type=oci,dest={out},tar=false", str(inputs.context)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=pybuild_env(work),
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        found = _PYBUILD_LINE.findall(done.stderr)
        return {"error": {"message": done.stderr.strip(), "line": int(found[0]) if found else None},
                "exit": done.returncode, "traceback": "Traceback (most recent call last)" in done.stderr}
    return {"image": image_record(layout_reader(out), image.base)}


def docker_error(output: str) -> dict:
    """The error record of a failed `docker buildx build --progress plain`."""
    errors = [line.removeprefix("ERROR: ") for line in output.splitlines() if line.startswith("ERROR: ")]
    message = _RANDOM_REF.sub("", errors[-1] if errors else output.strip().splitlines()[-1])
    found = _DOCKER_LINE.findall(output)
    return {"message": message, "line": int(found[-1]) if found else None}


def docker_record(inputs: Inputs, image: BaseImage, docker_argv: list[str], env: dict, work: Path) -> dict:
    """Build with docker 26 (buildx, loaded into the daemon), `docker save`
    the image, remove it from the daemon."""
    iidfile = work / "docker-iid"
    argv = [*docker_argv, "buildx", "build", "--network", "host", "--progress", "plain", "--load",
            "--iidfile", str(iidfile), *_common_args(inputs, image.ref), str(inputs.context)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        return {"error": docker_error(done.stderr)}
    image_id = iidfile.read_text().strip()
    saved = work / "docker-save.tar"
    try:
        _docker(docker_argv, env, "save", "-o", str(saved), image_id)
        return {"image": image_record(layout_reader(saved), image.base)}
    finally:
        _docker(docker_argv, env, "rmi", "--force", image_id)
        saved.unlink(missing_ok=True)


def _docker(docker_argv: list[str], env: dict, *args: str) -> str:
    done = subprocess.run([*docker_argv, *args], capture_output=True, text=True, timeout=300, env=env,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


class GraphDriverDaemon(Exception):
    """A docker daemon on a graph driver: moby's own exporter writes its
    images, not BuildKit's (a RUN's layer also holds /etc, changed by the
    mount points of /etc/hosts and /etc/resolv.conf)."""


def docker_version(docker_argv: list[str], env: dict) -> str:
    """Which docker this is; raises GraphDriverDaemon unless it keeps
    images in containerd's store, as the oracle must."""
    server = _docker(docker_argv, env, "version", "--format", "{{.Server.Version}}").strip()
    driver = _docker(docker_argv, env, "info", "--format", "{{.Driver}}").strip()
    status = _docker(docker_argv, env, "info", "--format", "{{json .DriverStatus}}")
    if "io.containerd.snapshotter" not in status:
        raise GraphDriverDaemon(f"docker at {docker_argv[-1]} stores images with the {driver} graph driver, "
                                "not containerd's store (daemon.json features.containerd-snapshotter)")
    buildx = _docker(docker_argv, env, "buildx", "version").split()
    return f"docker {server} ({driver}), buildx {buildx[1] if len(buildx) > 1 else '?'}"


def buildx_config(home: Path) -> Path:
    """A docker config directory under `home` whose CLI plugins hold buildx
    (docker 26's; the 20.10 client's `build` takes no --build-context)."""
    from fixtures.tools import TRIXIE_TOOLS
    prefix = os.environ.get("PYBUILD_TRIXIE_PREFIX", "/opt/pybuild-trixie")
    plugins = home / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-buildx"
    if not link.exists():
        os.symlink(os.path.join(prefix, TRIXIE_TOOLS["buildx"]), link)
    return home


def scratch(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def base_image(ref: str) -> BaseImage:
    """`ref` (HOST/NAME:TAG in a plain-HTTP registry) and what its image
    holds, read from the registry."""
    import json
    import urllib.request
    host, _, rest = ref.partition("/")
    name, _, tag = rest.rpartition(":")
    accept = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json"])

    def get(path: str) -> dict:
        request = urllib.request.Request(f"http://{host}/v2/{name}/{path}", headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)
    manifest = get(f"manifests/{tag}")
    config = get(f"blobs/{manifest['config']['digest']}")
    return BaseImage(ref, Base(tuple(config["rootfs"]["diff_ids"]), len(config.get("history", []))))
