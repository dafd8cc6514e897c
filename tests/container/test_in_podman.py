"""pybuild's own image inside an unprivileged container (issue 16): podman
runs it as root on the host but as uid 1000 in the container, without
--privileged, with only the relaxations rootless BuildKit documents
(seccomp, AppArmor, the /proc masks). pybuild enters its user namespace
there, builds testdata/hello (a RUN in each stage) and pushes it.

Where user namespaces are unavailable too (kaniko's case: root of a
container with the default confinement, no capability to mount), the same
image builds with `--isolation chroot`.

Each pushed image is the one root's pybuild builds on the host from the
same context, to the digest (SOURCE_DATE_EPOCH and rewrite-timestamp)."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from container_helpers import CONTEXT, EPOCH, hello_args, manifest_digest

pytestmark = pytest.mark.e2e

# What docs/ci.md gives podman: rootless BuildKit's relaxations, nothing more.
RELAXED = ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
           "--security-opt", "unmask=ALL"]


def _build_in_podman(podman, image: str, *options: str, args: list[str]) -> None:
    done = podman("run", "--rm", "--tls-verify=false", "--network", "host", *options,
                  "--env", f"SOURCE_DATE_EPOCH={EPOCH}", "--volume", f"{CONTEXT}:/context:ro",
                  image, *args, "/context", check=False)
    assert done.returncode == 0, f"pybuild in podman failed:\n{done.stdout}\n{done.stderr}"


def test_own_image_builds_and_pushes_as_non_root_in_podman(pybuild_image, busybox_image, registry,
                                                          hello_on_host, podman_clean):
    podman = podman_clean
    in_podman = f"{registry.host}/hello:in-podman"
    _build_in_podman(podman, pybuild_image.ref, "--user", "1000", *RELAXED,
                     args=hello_args(busybox_image.ref, in_podman))
    assert manifest_digest(in_podman) == hello_on_host

    config = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config",
                                        f"docker://{in_podman}"], check=True, capture_output=True,
                                       timeout=60).stdout)["config"]
    assert (config["User"], config["Cmd"]) == ("appuser", ["/app/bin/greet"])
    ran = podman("run", "--rm", "--tls-verify=false", "--network", "none", in_podman)
    assert ran.stdout == "hello from pybuild\nbuilt by a Dockerfile, without a daemon\n"


def test_own_image_pushes_with_the_users_docker_config_mounted(pybuild_image, busybox_image, auth_registry,
                                                               podman_clean, tmp_path):
    """docs/ci.md's credentials: config.json bound at the user's
    ~/.docker/config.json, read by pybuild inside its user namespace."""
    token = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode()).decode()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    config.chmod(0o644)
    dest = f"{auth_registry.host}/private/hello:1"
    _build_in_podman(podman_clean, pybuild_image.ref, "--user", "1000", *RELAXED,
                     "--volume", f"{config}:/home/pybuild/.docker/config.json:ro",
                     args=["build", "--progress", "plain", "--build-arg", f"BASE={busybox_image.ref}",
                           "-t", dest, "--push"])
    done = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", "--creds",
                           f"{auth_registry.username}:{auth_registry.password}", f"docker://{dest}"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    index = json.loads(done.stdout)  # the image and its provenance's attestation manifest
    assert [entry["platform"]["os"] for entry in index["manifests"]] == ["linux", "unknown"]


def test_own_image_builds_as_container_root_without_namespaces_with_chroot_isolation(
        pybuild_image, busybox_image, registry, hello_on_host, podman_clean):
    """podman's default confinement: no capability to mount or unshare, the
    default seccomp filter, /proc masked; pybuild runs as the container's
    root, so it enters no user namespace either. The root is on the
    container's own filesystem: podman mounts volumes nodev, and the device
    nodes a chroot step gets in its copied rootfs would not open there."""
    in_chroot = f"{registry.host}/hello:in-chroot"
    _build_in_podman(podman_clean, pybuild_image.ref, "--user", "0",
                     args=["--root", "/tmp/pybuild", *hello_args(busybox_image.ref, in_chroot),
                           "--isolation", "chroot"])
    assert manifest_digest(in_chroot) == hello_on_host
