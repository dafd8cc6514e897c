"""A registry over HTTPS whose certificate a private CA signed: pybuild
trusts it through the config file's `[registry."HOST"] ca`, and without
that gives one clear error. Real TLS, real docker-registry."""

from __future__ import annotations

import subprocess

import pytest

from fixtures.busybox import skopeo_inspect, skopeo_push
from fixtures.registry import remove_registry, start_registry
from fixtures.tls import address_on_loopback, make_certificates


@pytest.fixture(scope="module")
def tls_registry(busybox_image, tmp_path_factory):
    root = tmp_path_factory.mktemp("tls-registry")
    with address_on_loopback() as address:
        registry = start_registry(root / "registry", address=address,
                                  tls=make_certificates(root / "certs", address))
        try:
            skopeo_push(busybox_image.layout, "latest", f"{registry.host}/busybox:latest")
            yield registry
        finally:
            remove_registry(registry)


def _pybuild(*args, config=None):
    extra = ["--config", str(config)] if config else []
    return subprocess.run(["pybuild", *args, *extra], capture_output=True, text=True, timeout=180)


def _context(tmp_path, registry):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {registry.host}/busybox:latest\nRUN echo over-tls > /tls\n")
    return context


def test_a_build_pulls_and_pushes_over_https_trusting_the_configured_ca(tls_registry, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[registry."{tls_registry.host}"]\nca = "{tls_registry.ca}"\n')
    target = f"{tls_registry.host}/app:tls"
    done = _pybuild("build", "--root", str(tmp_path / "root"), "--progress", "plain", "-t", target, "--push",
                    str(_context(tmp_path, tls_registry)), config=config)
    assert done.returncode == 0, done.stderr
    index = skopeo_inspect(f"docker://{target}", raw=True)  # the image and its provenance
    image = index["manifests"][0]
    assert index["manifests"][1]["annotations"]["vnd.docker.reference.digest"] == image["digest"]
    pushed = skopeo_inspect(f"docker://{tls_registry.host}/app@{image['digest']}", raw=True)
    assert len(pushed["layers"]) == 2 and all(layer["mediaType"].endswith("+gzip") for layer in pushed["layers"])
    # `pybuild pull` and `pybuild push` read the same file the same way.
    pulled = _pybuild("pull", "--root", str(tmp_path / "fresh"), target, config=config)
    assert pulled.returncode == 0 and "digest: sha256:" in pulled.stdout, pulled.stderr
    again = _pybuild("push", "--root", str(tmp_path / "fresh"), target, config=config)
    assert again.returncode == 0, again.stderr


def test_a_certificate_nobody_vouched_for_is_one_clear_error(tls_registry, tmp_path):
    done = _pybuild("build", "--root", str(tmp_path / "root"), "--progress", "plain",
                    str(_context(tmp_path, tls_registry)))
    assert done.returncode == 1
    assert "certificate" in done.stderr and tls_registry.host in done.stderr
    assert "Traceback" not in done.stderr


def test_the_build_cache_travels_through_an_https_registry(tls_registry, tmp_path):
    """--cache-to/--cache-from use the same client, and so the same CA."""
    config = tmp_path / "config.toml"
    config.write_text(f'[registry."{tls_registry.host}"]\nca = "{tls_registry.ca}"\n')
    cache = f"{tls_registry.host}/cache:tls"
    context = _context(tmp_path, tls_registry)
    first = _pybuild("build", "--root", str(tmp_path / "one"), "--progress", "plain",
                     "--cache-to", f"type=registry,ref={cache},mode=max", str(context), config=config)
    assert first.returncode == 0, first.stderr
    second = _pybuild("build", "--root", str(tmp_path / "two"), "--progress", "plain",
                      "--cache-from", f"type=registry,ref={cache}", str(context), config=config)
    assert second.returncode == 0, second.stderr
    run_step = second.stderr.split("RUN echo over-tls > /tls\n", 1)[1].split("\n", 1)[0]
    assert run_step.endswith("CACHED"), second.stderr  # the RUN came from the registry, not from running
