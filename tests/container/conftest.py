"""Fixtures of the in-container tests (issue 16): pybuild's own image, built
from the repository's Dockerfile by root's pybuild on a Debian base made
here; root's build of testdata/hello on the host, whose digest every build
in a container must give; and podman with a store of its own.

The image is built once a session, in 30-50 s (apt-get in the build
reaches Debian's mirror, as setup does; pip gets a wheelhouse made on the
host, so no RUN needs PyPI or its certificates)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # container_helpers

from container_helpers import CONTEXT, EPOCH, hello_args, manifest_digest, run_pybuild  # noqa: E402
from fixtures import debian_base  # noqa: E402
from fixtures.podman import Podman  # noqa: E402
from fixtures.pybuild import SOURCE  # noqa: E402
from fixtures.tools import require_tools  # noqa: E402


@dataclass(frozen=True)
class OwnImage:
    """pybuild's image as pushed: `ref` is "127.0.0.1:PORT/pybuild:test"."""

    ref: str
    base: str         # the Debian base it was built FROM
    build_log: str


@pytest.fixture(scope="session")
def debian_base_ref(registry, tmp_path_factory) -> str:
    """A Debian 12 minbase image in the registry: the Dockerfile's BASE."""
    require_tools("mmdebstrap", "skopeo")
    ref = f"{registry.host}/debian:bookworm"
    debian_base.push_debian_base(tmp_path_factory.mktemp("debian-layout"), ref)
    return ref


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """Wheels of pybuild's dependencies and of its build backend, made by
    the host's pip (its index and certificates) for the image's pip."""
    project = tomllib.loads((SOURCE / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"], "wheel"]
    directory = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                    "--wheel-dir", str(directory), *wanted], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=300)
    return directory


@pytest.fixture(scope="session")
def pybuild_image(registry, debian_base_ref, wheelhouse, tmp_path_factory) -> OwnImage:
    """pybuild builds its own image from the repository root and pushes it."""
    work = tmp_path_factory.mktemp("own-image")
    ref = f"{registry.host}/pybuild:test"
    done = run_pybuild(work / "root", "build", "--progress", "plain",
                       "--build-arg", f"BASE={debian_base_ref}",
                       "--build-context", f"wheels={wheelhouse}",
                       "--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/wheels",
                       "-t", ref, "--push", str(SOURCE), env_home=work)
    # The root holds ~300 MB of snapshots and nothing the tests read.
    shutil.rmtree(work / "root", ignore_errors=True)
    assert done.returncode == 0, f"pybuild could not build its own image:\n{done.stdout}\n{done.stderr}"
    return OwnImage(ref, debian_base_ref, done.stdout + done.stderr)


@pytest.fixture(scope="session")
def hello_on_host(busybox_image, registry, tmp_path_factory) -> str:
    """testdata/hello built and pushed by root's pybuild on the host: the
    manifest digest every in-container build must give."""
    work = tmp_path_factory.mktemp("hello-on-host")
    dest = f"{registry.host}/hello:root-on-host"
    done = run_pybuild(work / "root", *hello_args(busybox_image.ref, dest), str(CONTEXT),
                       env_home=work, extra_env={"SOURCE_DATE_EPOCH": EPOCH})
    assert done.returncode == 0, done.stderr
    return manifest_digest(dest)


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """podman with a store of this module's own; the module fails if any
    container, pod, volume, image, conmon or cgroup of it is left."""
    require_tools("podman", "runc")
    engine = Podman(tmp_path_factory.mktemp("podman"))
    yield engine
    problems = engine.close()
    if problems:
        pytest.fail("podman left behind: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def podman_clean(podman):
    """The module's podman; this test must leave no container, pod, volume
    or process (conmon) of it."""
    yield podman
    left = podman.leftovers("containers", "pods", "volumes")
    processes = podman.lasting_processes()
    if left or processes:
        pytest.fail(f"the test left podman objects: {left}, processes: {processes}", pytrace=False)
