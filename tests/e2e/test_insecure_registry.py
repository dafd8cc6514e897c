"""`--insecure-registry`: plain HTTP for a registry whose name is not a
loopback name (docker's rule: only localhost and 127.0.0.0/8 get HTTP by
default)."""

import ipaddress
import socket
import subprocess

import pytest


def _loopback_alias() -> str:
    """This machine's host name, when it resolves to a loopback address: a
    name that is not loopback by its spelling but reaches the fixture."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = ""
    if not address or not ipaddress.ip_address(address).is_loopback or address != "127.0.0.1":
        pytest.skip(f"host name {name!r} does not resolve to 127.0.0.1 here")
    return name


def test_insecure_registry_flag_allows_http(busybox_image, tmp_path):
    port = busybox_image.registry.host.rsplit(":", 1)[1]
    host = f"{_loopback_alias()}:{port}"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {host}/busybox:latest\nRUN echo ok > /ok\n")
    root = tmp_path / "root"
    refused = subprocess.run(["pybuild", "--root", str(root), "-q", str(context)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert host in refused.stderr
    allowed = subprocess.run(["pybuild", "--root", str(root), "-q", "--insecure-registry", host, str(context)],
                             capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip().startswith("sha256:")
