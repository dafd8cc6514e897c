"""Issue 6: the `[registry."HOST"]` tables of pybuild's config file —
pull mirrors (the fixture registry mirroring a name that does not resolve)
and CA/insecure settings reaching the registry client."""

from __future__ import annotations

from builder.build import build
from builder.config import load_config
from builder.registry.hosts import RegistryHosts


def test_base_image_is_pulled_from_a_mirror(busybox_image, tmp_path, monkeypatch):
    registry = busybox_image.registry
    config = tmp_path / "config.toml"
    config.write_text(f'[registry."mirrored.invalid"]\nmirrors = ["{registry.host}"]\n')
    monkeypatch.setenv("PYBUILD_CONFIG", str(config))
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM mirrored.invalid/busybox:latest\nRUN echo via-mirror > /m\n")
    result = build(context, root=tmp_path / "root", outputs=[f"type=local,dest={tmp_path / 'out'}"])
    assert (tmp_path / "out" / "m").read_text() == "via-mirror\n"
    assert result.executed_steps >= 1
    worker_config = load_config(config)
    assert RegistryHosts.from_config(worker_config).mirrors_of("mirrored.invalid") == (registry.host,)


def test_registry_hosts_from_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[registry."docker.io"]\nmirrors = ["m1.example", "m2.example:5000"]\n'
                      '[registry."m2.example:5000"]\ninsecure = true\n'
                      '[registry."corp.example"]\nca = "/etc/pybuild/corp-ca.pem"\n')
    hosts = RegistryHosts.from_config(load_config(config))
    assert hosts.mirrors_of("docker.io") == ("m1.example", "m2.example:5000")
    assert hosts.mirrors_of("quay.io") == ()
    assert hosts.insecure == {"m2.example:5000"}
    assert hosts.verify("corp.example") == "/etc/pybuild/corp-ca.pem"
    assert hosts.verify("docker.io") is True
