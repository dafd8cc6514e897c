"""Names and URLs that urllib cannot use (`http://[::1/x`, a port past
65535), from the command line, a Dockerfile or a hostile server, and
--cpus values that are no number: exit 1, one ERROR line, no traceback."""

from __future__ import annotations

import json

import pytest

from cli_helpers import write_context
from fixtures.servers import RecordingServer, send

BAD_V6 = "http://[::1/x"
BAD_PORT = "http://127.0.0.1:99999/x"


def _fails_cleanly(done, expected: str) -> str:
    text = done.stderr.decode()
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    assert done.returncode == 1 and len(errors) == 1, text
    assert expected in errors[0], errors
    return errors[0]


def _build(cli, tmp_path, dockerfile: str, *args: str, context: str | None = None):
    directory = write_context(tmp_path / "ctx", dockerfile)
    return cli.run("build", "--root", str(tmp_path / "root"), "--progress", "plain", *args,
                   context or str(directory))


@pytest.mark.parametrize("args", [
    ("-t", "127.0.0.1:99999/x", "--push"),
    ("-o", "type=registry,name=127.0.0.1:99999/x"),
    ("--cache-from", "type=registry,ref=127.0.0.1:99999/x"),
    ("--cache-to", "type=registry,ref=127.0.0.1:99999/x"),
    ("-t", "[:::::]:5000/x"),
], ids=["push", "registry-output", "cache-from", "cache-to", "not-ipv6"])
def test_a_reference_with_an_unusable_registry_is_an_invalid_reference(cli, tmp_path, args):
    done = _build(cli, tmp_path, "FROM scratch\nLABEL a=b\n", *args)
    _fails_cleanly(done, "invalid reference format")


def test_from_and_pull_of_a_port_out_of_range(cli, tmp_path):
    _fails_cleanly(_build(cli, tmp_path, "FROM 127.0.0.1:99999/busybox\n"), "invalid reference format")
    pulled = cli.run("pull", "--root", str(tmp_path / "root"), "127.0.0.1:0/busybox")
    _fails_cleanly(pulled, "invalid reference format")


def test_add_and_context_url_that_do_not_parse(cli, tmp_path):
    _fails_cleanly(_build(cli, tmp_path, f"FROM scratch\nADD {BAD_V6} /x\n"), "invalid URL")
    _fails_cleanly(_build(cli, tmp_path, "FROM scratch\n", context=BAD_V6), "invalid URL")


@pytest.mark.parametrize("location", [BAD_V6, BAD_PORT])
def test_add_url_redirected_to_a_url_that_does_not_parse(cli, tmp_path, location):
    with RecordingServer(lambda h: send(h, 302, headers={"Location": location})) as server:
        done = _build(cli, tmp_path, f"FROM scratch\nADD {server.url}/file /x\n")
    _fails_cleanly(done, f"failed to fetch {server.url}/file: invalid URL")


def _hostile_registry(busybox_image, mode: str, location: str):
    """A registry serving busybox's manifest, whose challenge realm, or
    manifest or blob redirect, is `location`."""
    layout = busybox_image.layout / "blobs" / "sha256"
    manifest = (layout / busybox_image.digest.hex).read_bytes()

    def answer(handler):
        path = handler.path
        if mode == "realm" and path.startswith("/v2/"):
            send(handler, 401, headers={"WWW-Authenticate": f'Bearer realm="{location}",service="x"'})
        elif mode == "manifest" and "/manifests/" in path:
            send(handler, 307, headers={"Location": location})
        elif mode == "blob" and "/blobs/" in path:
            send(handler, 307, headers={"Location": location})
        elif "/manifests/" in path:
            send(handler, 200, manifest, {"Content-Type": json.loads(manifest)["mediaType"],
                                          "Docker-Content-Digest": str(busybox_image.digest)})
        else:
            send(handler, 200 if path == "/v2/" else 404)

    return RecordingServer(answer)


@pytest.mark.parametrize("mode, location, expected", [
    ("realm", BAD_V6, "invalid token realm"),
    ("realm", BAD_PORT, "invalid token realm"),
    ("manifest", BAD_V6, "invalid URL"),
    ("blob", BAD_V6, "invalid URL"),
    ("blob", "//[::1]:99999999/x", "invalid URL"),
])
def test_registry_sending_a_url_that_does_not_parse(cli, tmp_path, busybox_image, mode, location, expected):
    with _hostile_registry(busybox_image, mode, location) as server:
        done = _build(cli, tmp_path, f"FROM {server.host}/busybox\nRUN true\n")
    error = _fails_cleanly(done, expected)
    assert error.startswith(f"ERROR: failed to resolve {server.host}/busybox:latest: "), error


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "abc"])
def test_cpus_that_is_no_finite_number(cli, tmp_path, value):
    done = _build(cli, tmp_path, "FROM scratch\nLABEL a=b\n", "--cpus", value)
    _fails_cleanly(done, f"invalid --cpus {value!r}: failed to parse {value} as a rational number")


def test_push_to_an_upload_location_that_does_not_parse(cli, tmp_path):
    def answer(handler):
        if handler.command == "POST" and handler.path.endswith("/blobs/uploads/"):
            send(handler, 202, headers={"Location": BAD_V6})
        else:
            send(handler, 200 if handler.path == "/v2/" else 404)

    with RecordingServer(answer) as server:
        done = _build(cli, tmp_path, "FROM scratch\nLABEL a=b\n", "-t", f"{server.host}/x", "--push")
    _fails_cleanly(done, "the registry sent an invalid upload location: invalid URL")
