"""Building a case's inputs with each builder, into one record: the image
(tests/compat/layers.py) or the error.

A build's record is {"image": {...}} or {"error": {"message": ..., "line": N
or None}}; pybuild's error record also keeps what its stderr showed, for the
checks docker's message cannot make (exit status, traceback)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compat.cases import Inputs
from compat.layers import Base, image_record, layout_reader
from fixtures.docker26 import ran_steps, rawjson_statuses
from fixtures.pybuild import pybuild_env

BASE_NAME = "busybox"
# docker's error excerpt starts with "Dockerfile:N" alone on its line;
# pybuild's message says "at Dockerfile:N:" (a warning before it may name another).
_DOCKER_LINE = re.compile(r"^(?:\S*Dockerfile):(\d+)$", re.M)
_PYBUILD_LINE = re.compile(r"Dockerfile:(\d+)")
# BuildKit names the context's snapshot by random ids in some messages.
_RANDOM_REF = re.compile(r"failed to calculate checksum of ref [^ ]+?::[a-z0-9]+: ")
# The daemon's own paths in a message: its data root (a temp directory) and
# the numbered mount points BuildKit makes under it.
_DAEMON_PATH = re.compile(r"/\S*?/data/(?:tmp/buildkit-mount\d+|buildkit/\S*?/buildkit\d+)")
# A Dockerfile step's progress name: "[2/4] COPY a /", "[deps 1/2] RUN ...".
_STEP_NAME = re.compile(r"^\[(?:(\S+) )?\d+/\d+\] (.*)$", re.S)


@dataclass(frozen=True)
class BaseImage:
    """The image `busybox` names in a case, for both builders."""

    ref: str
    base: Base


@dataclass(frozen=True)
class DockerClient:
    """How to run docker's client against the oracle (as fixtures.docker26.Docker26 has it)."""

    argv: list
    env: dict


@dataclass(frozen=True)
class Flags:
    """A build's flags beyond the case's own: a rebuild's (compat.rebuilds)."""

    no_cache: bool = False
    no_cache_filter: str = ""
    steps: bool = False  # also report which steps ran ("ran"), read from --progress rawjson


def _common_args(inputs: Inputs, base_ref: str, flags: Flags) -> list[str]:
    args = ["-f", str(inputs.dockerfile), "--build-context", f"{BASE_NAME}=docker-image://{base_ref}"]
    for name, folder in inputs.build_contexts.items():
        args += ["--build-context", f"{name}={folder}"]
    for key, value in inputs.args.items():
        args += ["--build-arg", f"{key}={value}"]
    if inputs.target:
        args += ["--target", inputs.target]
    if flags.no_cache:
        args.append("--no-cache")
    if flags.no_cache_filter:
        args += ["--no-cache-filter", flags.no_cache_filter]
    return args


def pybuild_record(inputs: Inputs, image: BaseImage, root: Path, work: Path, flags: Flags = Flags()) -> dict:
    """Build with this tree's pybuild CLI into an OCI layout under `work`,
    the store at `root`."""
    out = work / "pybuild-oci"
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-m", "builder.cli", "build", "--root", str(root),
            "--progress", "rawjson" if flags.steps else "plain",
            *_common_args(inputs, image.ref, flags), "-o", f"type=oci,dest={out},tar=false", str(inputs.context)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=pybuild_env(work),
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        found = _PYBUILD_LINE.findall(done.stderr)
        # The last: the error comes after any warning naming a line.
        return {"error": {"message": done.stderr.strip(), "line": int(found[-1]) if found else None},
                "exit": done.returncode, "traceback": "Traceback (most recent call last)" in done.stderr}
    record = {"image": image_record(layout_reader(out), image.base)}
    if flags.steps:
        record["ran"] = steps_that_ran(done.stderr)
    return record


def steps_that_ran(progress: str) -> list[str]:
    """The Dockerfile steps a --progress rawjson stream shows run (not
    cached), as "INSTRUCTION" or "STAGE: INSTRUCTION" for a named stage,
    FROM left out: the two builders number steps differently (BuildKit
    counts a FROM of a named context out), so the numbers are left out."""
    names = set()
    for status in ran_steps(rawjson_statuses(progress)).values():
        found = _STEP_NAME.match(status["name"])
        # BuildKit shows FROM of a named context as the context's vertex, not a step.
        if found and not found.group(2).startswith("FROM "):
            stage, text = found.groups()
            names.add(text if stage is None or re.fullmatch(r"stage-\d+", stage) else f"{stage}: {text}")
    return sorted(names)


def docker_error(output: str) -> dict:
    """The error record of a failed `docker buildx build --progress plain`."""
    errors = [line.removeprefix("ERROR: ") for line in output.splitlines() if line.startswith("ERROR: ")]
    message = errors[-1] if errors else output.strip().splitlines()[-1]
    message = _DAEMON_PATH.sub("<mount>", _RANDOM_REF.sub("", message))
    found = _DOCKER_LINE.findall(output)
    return {"message": message, "line": int(found[-1]) if found else None}


def docker_record(inputs: Inputs, image: BaseImage, docker, work: Path, flags: Flags = Flags()) -> dict:
    """Build with docker 26 (buildx, loaded into the daemon), `docker save`
    the image, remove it from the daemon. `docker` has the client's `argv`
    and `env` (a fixtures.docker26.Docker26, or record.py's)."""
    iidfile = work / "docker-iid"
    iidfile.unlink(missing_ok=True)
    argv = [*docker.argv, "buildx", "build", "--network", "host", "--load", "--iidfile", str(iidfile),
            "--progress", "rawjson" if flags.steps else "plain",
            *_common_args(inputs, image.ref, flags), str(inputs.context)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=docker.env,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        return {"error": docker_error(done.stderr)}
    image_id = iidfile.read_text().strip()
    saved = work / "docker-save.tar"
    try:
        _docker(docker.argv, docker.env, "save", "-o", str(saved), image_id)
        record = {"image": image_record(layout_reader(saved), image.base)}
    finally:
        _docker(docker.argv, docker.env, "rmi", "--force", image_id)
        saved.unlink(missing_ok=True)
    if flags.steps:
        record["ran"] = steps_that_ran(done.stderr)
    return record


def docker_prune(docker) -> None:
    """Empty docker's build cache: a rebuild's cache hits must be the case's own."""
    _docker(docker.argv, docker.env, "builder", "prune", "--all", "--force")


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
    """A new temporary directory (under $TMPDIR): its maker removes it."""
    return Path(tempfile.mkdtemp(prefix=prefix))


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
