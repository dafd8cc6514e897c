"""Image configs, manifests and indexes that parse as JSON but have fields
of the wrong type (issue 14 follow-up, red-team finding): `FROM` such an
image is one `ERROR:` line naming the field, exit status 1, no traceback,
and the root stays clean for `doctor`. The bad configs are pushed raw to
the real registry fixture (which checks digests, not config types); the
bad indexes, which the registry would refuse on push, are served by a
hostile server on loopback.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
from pathlib import Path

import pytest

from fixtures import busybox
from fixtures.servers import LoopbackServer
from fixtures.pybuild import pybuild_env
from security.hostile import push_blob, push_manifest

PYBUILD = ["pybuild"]


def _pybuild(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PYBUILD, *args], capture_output=True, text=True, timeout=180,
                          env=env or pybuild_env(tmp_path))


def _build(tmp_path: Path, root: Path, dockerfile: str, *args: str, env: dict | None = None):
    context = tmp_path / f"ctx-{len(list(tmp_path.glob('ctx-*')))}"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return _pybuild(tmp_path, "build", "--root", str(root), "--progress", "plain", *args, str(context), env=env)


def _refused(done: subprocess.CompletedProcess, *words: str) -> None:
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, out
    for word in words:
        assert word in errors[0], errors[0]


def _doctor_clean(tmp_path: Path, root: Path) -> None:
    done = _pybuild(tmp_path, "doctor", "--root", str(root))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def busybox_parts(tmp_path_factory):
    """busybox's gzip layer and its diff_id."""
    layout = tmp_path_factory.mktemp("malformed-busybox")
    image = busybox.build_busybox_layout(layout)
    layer = (layout / "blobs" / "sha256" / image.layers[0].hex).read_bytes()
    return layer, str(image.diff_ids[0])


def _push_config(registry, repo: str, config: bytes, layer: bytes) -> str:
    """Push an image of busybox's layer whose config blob is `config`, as is."""
    layers = [{"mediaType": busybox.OCI_LAYER_GZIP, **push_blob(registry.url, repo, lambda: [layer])}]
    return push_manifest(registry.url, repo, push_blob(registry.url, repo, lambda: [config]), layers)


def _config(diff_id: str, **fields) -> bytes:
    body = {"architecture": busybox.host_arch(), "os": "linux",
            "config": {"Env": [busybox.PATH_ENV], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "history": [{"created_by": "busybox"}]}
    for name, value in fields.items():
        if name in ("Env", "User", "WorkingDir", "Cmd"):
            body["config"][name] = value
        else:
            body[name] = value
    return json.dumps(body).encode()


CONFIG_CASES = {
    "env-ints": ({"Env": [1, 2]}, "config.Env[0] must be a string"),
    "env-string": ({"Env": "A=B"}, "config.Env must be a list"),
    "rootfs-string": ({"rootfs": "x"}, "rootfs must be an object"),
    "diff-ids-int": ({"rootfs": {"type": "layers", "diff_ids": 5}}, "rootfs.diff_ids must be a list"),
    "user-object": ({"User": {}}, "config.User must be a string"),
    "workdir-int": ({"WorkingDir": 5}, "config.WorkingDir must be a string"),
    "history-string": ({"history": "x"}, "history must be a list"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_config_field_of_the_wrong_type(tmp_path, registry, busybox_parts, case):
    layer, diff_id = busybox_parts
    fields, message = CONFIG_CASES[case]
    ref = _push_config(registry, f"malformed-{case}", _config(diff_id, **fields), layer)
    root = tmp_path / "root"
    _refused(_build(tmp_path, root, f"FROM {ref}\nRUN echo $A; pwd\n"), ref.rsplit(":", 1)[0], message)
    _doctor_clean(tmp_path, root)


def test_a_lone_surrogate_in_a_config_string(tmp_path, registry, busybox_parts):
    layer, diff_id = busybox_parts
    config = _config(diff_id).replace(busybox.PATH_ENV.encode(), b"A=\\ud800")
    assert b"\\ud800" in config
    ref = _push_config(registry, "malformed-surrogate", config, layer)
    root = tmp_path / "root"
    _refused(_build(tmp_path, root, f"FROM {ref}\nRUN true\n"), "config.Env[0] is not valid UTF-8")
    _doctor_clean(tmp_path, root)


def test_a_well_typed_config_still_builds(tmp_path, registry, busybox_parts):
    """The control: the same pushes with the right types build."""
    layer, diff_id = busybox_parts
    ref = _push_config(registry, "malformed-control", _config(diff_id, Env=["A=B", busybox.PATH_ENV]), layer)
    done = _build(tmp_path, tmp_path / "root", f"FROM {ref}\nRUN test \"$A\" = B\n")
    assert done.returncode == 0, done.stdout + done.stderr


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        parts = self.path.split("?")[0].split("/")
        body, media_type = b"", "application/json"
        if self.path == "/v2/":
            status = 200
        elif len(parts) == 5 and parts[3] == "manifests" and parts[2] in self.server.manifests:
            status, body, media_type = 200, self.server.manifests[parts[2]], busybox.OCI_INDEX
        else:
            status = 404
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        if body:
            self.send_header("Docker-Content-Digest", _digest(body))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)


@pytest.fixture
def hostile_registry():
    """A registry serving the manifests its `httpd.manifests` holds by tag."""
    with LoopbackServer(_Handler) as server:
        server.httpd.manifests = {}
        yield server


_ENTRY = {"mediaType": busybox.OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 100}
INDEX_CASES = {
    "manifests-object": ({"a": 1}, "manifests must be a list"),
    "platform-string": ([{**_ENTRY, "platform": "linux/amd64"}], "manifests[0].platform must be an object"),
    "entry-int": ([5], "manifests[0] must be an object"),
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_an_index_of_the_wrong_shape(tmp_path, hostile_registry, case):
    manifests, message = INDEX_CASES[case]
    name = f"index-{case}"
    hostile_registry.httpd.manifests[name] = json.dumps(
        {"schemaVersion": 2, "mediaType": busybox.OCI_INDEX, "manifests": manifests}).encode()
    host = hostile_registry.host
    root = tmp_path / "root"
    _refused(_build(tmp_path, root, f"FROM {host}/{name}\nRUN true\n"), f"{host}/{name}", message)
    _doctor_clean(tmp_path, root)


@pytest.mark.parametrize("uid", ["-5", "99999999999", "4294967295", "12ab", ""])
def test_a_sudo_uid_chown_cannot_give(tmp_path, busybox_image, uid):
    """A local export's owner comes from SUDO_UID/SUDO_GID: one that is no
    uid (negative, past 32 bits, (uid_t)-1 which chown takes for "keep
    root") is refused before the build, and nothing is written."""
    dest = tmp_path / "out"
    for name in ("SUDO_UID", "SUDO_GID"):
        env = pybuild_env(tmp_path, SUDO_UID="1000", SUDO_GID="1000")
        env[name] = uid
        done = _build(tmp_path, tmp_path / "root", f"FROM {busybox_image.ref}\nRUN true\n",
                      "-o", f"type=local,dest={dest}", env=env)
        _refused(done, name, "not a valid id")
        assert not dest.exists()


def test_a_sudo_uid_owns_the_local_export(tmp_path, busybox_image):
    """The control: a valid SUDO_UID/SUDO_GID owns what the export wrote."""
    dest = tmp_path / "out"
    done = _build(tmp_path, tmp_path / "root", f"FROM {busybox_image.ref}\nRUN true\n",
                  "-o", f"type=local,dest={dest}", env=pybuild_env(tmp_path, SUDO_UID="4294967294", SUDO_GID="1234"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (os.stat(dest).st_uid, os.stat(dest).st_gid) == (4294967294, 1234)
    assert os.stat(dest / "bin" / "busybox").st_uid == 4294967294


def test_an_oci_layout_context_whose_index_is_of_the_wrong_shape(tmp_path):
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [5]}))
    root = tmp_path / "root"
    done = _build(tmp_path, root, "FROM base\nRUN true\n", "--build-context", f"base=oci-layout://{layout}:latest")
    _refused(done, "manifests[0] must be an object")
    _doctor_clean(tmp_path, root)


def test_an_oci_layout_context_whose_config_is_of_the_wrong_type(tmp_path, busybox_parts):
    """A layout's image reaches the build through the store, not the
    registry client: its config is checked there too."""
    layer, diff_id = busybox_parts
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict:
        (blobs / _digest(data)[7:]).write_bytes(data)
        return {"digest": _digest(data), "size": len(data)}

    manifest = json.dumps({"schemaVersion": 2, "mediaType": busybox.OCI_MANIFEST,
                           "config": {"mediaType": busybox.OCI_CONFIG, **put(_config(diff_id, Env=[1, 2]))},
                           "layers": [{"mediaType": busybox.OCI_LAYER_GZIP, **put(layer)}]}).encode()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": busybox.OCI_MANIFEST, **put(manifest),
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    root = tmp_path / "root"
    done = _build(tmp_path, root, "FROM base\nRUN true\n", "--build-context", f"base=oci-layout://{layout}:latest")
    _refused(done, "config.Env[0] must be a string")
    _doctor_clean(tmp_path, root)
