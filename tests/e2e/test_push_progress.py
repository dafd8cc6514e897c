"""Issue 20: a push shows each layer's bytes while it runs, in `build
--push`, `-o type=registry` and `pybuild push`, in every progress mode.

The registry sits behind tests/fixtures/proxy.py reading uploads at
RATE, so the image's incompressible 12 MiB layer takes about three
seconds to go. pybuild's stderr is read as it comes, each line stamped
with the time it arrived: the layer's progress must be on screen while
the push runs (lines that arrived well before the layer's `done`), grow,
and name the layer's real size; every layer has its status; `pushing
manifest for REF@sha256:...` names the digest the registry holds. A layer
the registry has already shows done, with no bytes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.registry.auth import no_credentials
from builder.registry.client import RegistryClient
from builder.registry.pushing import BlobState, PushProgress, reporting_to
from builder.registry.reference import Reference
from builder.solver.tasks import human_size
from fixtures.images import make_image
from fixtures.pybuild import pybuild_env
from fixtures.tools import require_tools

pytestmark = pytest.mark.e2e

LAYER_BYTES = 12 << 20
RATE = 4 << 20  # bytes per second through the proxy: about 3 s for the big layer
VISIBLE_BEFORE_DONE = 1.0  # seconds a first progress line must precede the layer's end by


@dataclass(frozen=True)
class Line:
    at: float  # time.monotonic() when the test read it
    text: str


@dataclass(frozen=True)
class Watched:
    returncode: int
    lines: list[Line]
    stdout: str
    ended: float

    @property
    def stderr(self) -> str:
        return "".join(line.text for line in self.lines)


def watch(work: Path, *args: str) -> Watched:
    """Run pybuild, reading its stderr while it runs."""
    process = subprocess.Popen(["pybuild", *args, "--root", str(work / "root")], cwd=work,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=pybuild_env(work))
    killer = threading.Timer(300, process.kill)
    killer.start()
    try:
        lines = [Line(time.monotonic(), raw.decode(errors="replace")) for raw in iter(process.stderr.readline, b"")]
        stdout = process.stdout.read().decode()
        process.wait()
    finally:
        killer.cancel()
        process.stdout.close()
        process.stderr.close()
    return Watched(process.returncode, lines, stdout, time.monotonic())


@dataclass(frozen=True)
class Work:
    path: Path
    context: Path
    registry: object


@pytest.fixture(scope="module")
def work(busybox_image, registry, tmp_path_factory) -> Work:
    """An image `big` in the root: busybox plus a layer of 12 MiB of random bytes."""
    require_tools("skopeo")
    path = tmp_path_factory.mktemp("push-progress")
    context = path / "context"
    context.mkdir()
    (context / "big.bin").write_bytes(os.urandom(LAYER_BYTES))
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY big.bin /big.bin\n")
    built = watch(path, "build", "--progress=plain", "-t", "big", str(context))
    assert built.returncode == 0, built.stderr
    return Work(path, context, registry)


@pytest.fixture
def slow(fault_proxy):
    fault_proxy.faults.throttle_bytes_per_second = RATE
    return fault_proxy


def registry_manifest(name: str, proxy=None) -> tuple[str, dict]:
    """The digest and manifest the tag names, as skopeo reads them from
    the registry itself (the proxy keeps one of skopeo's Accept headers);
    an index's first image for an index."""
    if proxy is not None:
        name = name.replace(proxy.host, proxy.upstream, 1)

    def raw(ref: str) -> bytes:
        return subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                              check=True, capture_output=True, timeout=60).stdout

    import hashlib

    body = raw(name)
    top = json.loads(body)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if "manifests" in top:
        repository = name.rsplit(":", 1)[0]
        child = next(m for m in top["manifests"] if m.get("platform", {}).get("os") != "unknown")
        return digest, json.loads(raw(f"{repository}@{child['digest']}"))
    return digest, top


def big_layer(manifest: dict) -> dict:
    layer = max(manifest["layers"], key=lambda entry: entry["size"])
    assert layer["size"] > LAYER_BYTES  # random bytes do not compress
    return layer


_PLAIN = re.compile(r"^#(\d+) pushing layer ([0-9a-f]{12})(?: (\S+) / (\S+))?(?: [\d.]+s)?( done)?$")


def plain_statuses(watched: Watched, short: str) -> list[tuple[Line, str | None, str | None, bool]]:
    found = []
    for line in watched.lines:
        match = _PLAIN.match(line.text.rstrip("\n"))
        if match and match.group(2) == short:
            found.append((line, match.group(3), match.group(4), bool(match.group(5))))
    return found


def _size(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(B|kB|MB|GB)", text).groups()
    return float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def test_pybuild_push_plain_shows_each_layer_while_it_goes(work, slow):
    name = f"{slow.host}/progress/plain:1"
    assert watch(work.path, "tag", "big", name).returncode == 0
    pushed = watch(work.path, "push", "--progress=plain", name)
    assert pushed.returncode == 0, pushed.stderr
    digest, manifest = registry_manifest(name, slow)
    assert pushed.stdout.strip() == f"{name}: digest: {digest}"

    layer = big_layer(manifest)
    statuses = plain_statuses(pushed, layer["digest"][7:19])
    moving = [(line, current) for line, current, total, done in statuses if not done and current is not None]
    done = [line for line, _, _, finished in statuses if finished]
    assert len(done) == 1 and statuses[-1][3], pushed.stderr
    assert len(moving) >= 3, pushed.stderr  # BuildKit's rule: a line per 5% moved
    sizes = [_size(current) for _, current in moving]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0], pushed.stderr
    assert {total for _, _, total, finished in statuses if total} == {human_size(layer["size"])}
    # On screen while it ran, not printed at the end.
    assert done[0].at - moving[0][0].at >= VISIBLE_BEFORE_DONE, pushed.stderr
    assert pushed.ended - moving[0][0].at >= VISIBLE_BEFORE_DONE

    for entry in manifest["layers"]:
        assert any(finished for *_, finished in plain_statuses(pushed, entry["digest"][7:19])), entry
    text = pushed.stderr
    step = re.search(r"^#(\d+) pushing " + re.escape(name) + "$", text, re.MULTILINE)
    assert step, text
    n = step.group(1)
    layers_done = text.index(f"#{n} pushing layers ")
    manifest_line = f"#{n} pushing manifest for {name}@{digest}"
    assert layers_done < text.index(manifest_line + "\n") < text.index(f"#{n} DONE ")


def _rawjson(watched: Watched) -> list[tuple[Line, dict]]:
    return [(line, json.loads(line.text)) for line in watched.lines if line.text.startswith("{")]


def test_build_push_rawjson_sends_buildkit_statuses_as_the_bytes_go(work, slow):
    name = f"{slow.host}/progress/rawjson:1"
    built = watch(work.path, "build", "--progress=rawjson", "--push", "-t", name, str(work.context))
    assert built.returncode == 0, built.stderr
    digest, manifest = registry_manifest(name, slow)
    events = _rawjson(built)
    vertexes = [v for _, event in events for v in event.get("vertexes", []) if v["name"] == f"pushing {name}"]
    assert vertexes and "completed" in vertexes[-1] and "error" not in vertexes[-1]
    vertex = vertexes[0]["digest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", vertex)
    statuses = [(line, s) for line, event in events for s in event.get("statuses", []) if s["vertex"] == vertex]
    ids = {s["id"] for _, s in statuses}
    assert {"pushing layers", f"pushing manifest for {name}@{digest}"} <= ids
    assert all(s.keys() >= {"id", "vertex", "current", "timestamp", "started"} for _, s in statuses)

    layer = big_layer(manifest)
    mine = [(line, s) for line, s in statuses if s["id"] == f"pushing layer {layer['digest'][7:19]}"]
    moving = [(line, s) for line, s in mine if "completed" not in s and s["current"] > 0]
    assert len(moving) >= 5, built.stderr  # every 100 ms for about 3 s
    assert all(s["total"] == layer["size"] for _, s in mine if "total" in s)
    currents = [s["current"] for _, s in moving]
    assert currents == sorted(currents) and currents[0] < layer["size"]
    completed = [(line, s) for line, s in mine if "completed" in s]
    assert len(completed) == 1 and completed[0][1]["current"] == layer["size"] == completed[0][1]["total"]
    assert completed[0][0].at - moving[0][0].at >= VISIBLE_BEFORE_DONE
    for entry in manifest["layers"]:
        assert any(s["id"] == f"pushing layer {entry['digest'][7:19]}" and "completed" in s for _, s in statuses)


def test_output_registry_tty_redraws_the_layer_as_it_grows(work, slow):
    name = f"{slow.host}/progress/tty:1"
    built = watch(work.path, "build", "--progress=tty", "-o", f"type=registry,name={name}", str(work.context))
    assert built.returncode == 0, built.stderr
    _, manifest = registry_manifest(name, slow)
    layer = big_layer(manifest)
    shown = re.findall(rf"=> => pushing layer {layer['digest'][7:19]} (\S+) / (\S+)", built.stderr)
    assert {total for _, total in shown} == {human_size(layer["size"])}
    sizes = [_size(current) for current, _ in shown]
    assert sizes == sorted(sizes) and len(set(sizes)) >= 3, built.stderr
    assert f" => pushing {name}" in built.stderr


def test_quiet_prints_nothing(work, registry):
    name = f"{registry.host}/progress/quiet:1"
    assert watch(work.path, "tag", "big", name).returncode == 0
    pushed = watch(work.path, "push", "--progress=quiet", name)
    assert pushed.returncode == 0 and pushed.stderr == ""
    assert pushed.stdout.startswith(f"{name}: digest: sha256:")
    built = watch(work.path, "build", "--progress=quiet", "--push", "-t", f"{registry.host}/progress/quiet:2",
                  str(work.context))
    assert built.returncode == 0 and "pushing" not in built.stderr, built.stderr


def test_cache_to_registry_is_a_push_step_with_its_layers(work, registry):
    """--cache-to type=registry pushes as an image push shows: the step
    `pushing REF`, a status per layer the cache holds (the 12 MiB one
    with its bytes), then the cache manifest."""
    ref = f"{registry.host}/progress/cache:1"
    built = watch(work.path, "build", "--progress=rawjson", "--cache-to", f"type=registry,ref={ref},mode=max",
                  str(work.context))
    assert built.returncode == 0, built.stderr
    events = _rawjson(built)
    vertexes = [v for _, event in events for v in event.get("vertexes", []) if v["name"] == f"pushing {ref}"]
    assert vertexes and "completed" in vertexes[-1] and "error" not in vertexes[-1], built.stderr
    statuses = [s for _, event in events for s in event.get("statuses", []) if s["vertex"] == vertexes[0]["digest"]]
    done = {s["id"] for s in statuses if "completed" in s}
    assert "pushing layers" in done and any(i.startswith(f"pushing manifest for {ref}@sha256:") for i in done)
    sent = [s for s in statuses if s["id"].startswith("pushing layer ") and "completed" in s]
    assert max(s["current"] for s in sent) > LAYER_BYTES, statuses


def test_layers_the_registry_has_show_done_without_bytes(work, registry):
    name = f"{registry.host}/progress/again:1"
    assert watch(work.path, "tag", "big", name).returncode == 0
    first = watch(work.path, "push", "--progress=rawjson", name)
    assert first.returncode == 0, first.stderr
    again = watch(work.path, "push", "--progress=rawjson", name)
    assert again.returncode == 0, again.stderr
    _, manifest = registry_manifest(name)
    layer_statuses = [s for _, event in _rawjson(again) for s in event.get("statuses", [])
                      if s["id"].startswith("pushing layer ")]
    assert {s["id"] for s in layer_statuses} == {f"pushing layer {e['digest'][7:19]}" for e in manifest["layers"]}
    assert all(s["current"] == 0 and "total" not in s and "completed" in s for s in layer_statuses), layer_statuses
    sent = [s for _, event in _rawjson(first) for s in event.get("statuses", [])
            if s["id"].startswith("pushing layer ") and "completed" in s]
    assert max(s["current"] for s in sent) == big_layer(manifest)["size"]


def test_index_push_shows_every_platforms_layers_then_the_index(busybox_index, registry, tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello").write_bytes(os.urandom(4096))
    (context / "Dockerfile").write_text(f"FROM {busybox_index.ref}\nCOPY hello /hello\n")
    name = f"{registry.host}/progress/index:1"
    built = watch(tmp_path, "build", "--progress=rawjson", "--platform", "linux/amd64,linux/arm64", "--push",
                  "-t", name, str(context))
    assert built.returncode == 0, built.stderr
    index_digest, _ = registry_manifest(name)
    index = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{name}"],
                                      check=True, capture_output=True, timeout=60).stdout)
    layers = set()
    for entry in index["manifests"]:  # the platforms' images and their attestation manifests
        child = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                                f"docker://{name.rsplit(':', 1)[0]}@{entry['digest']}"],
                               check=True, capture_output=True, timeout=60).stdout
        layers |= {layer["digest"][7:19] for layer in json.loads(child)["layers"]}
    statuses = [s for _, event in _rawjson(built) for s in event.get("statuses", [])]
    done = {s["id"] for s in statuses if "completed" in s}
    assert {f"pushing layer {short}" for short in layers} <= done
    assert {s["id"] for s in statuses if s["id"].startswith("pushing layer ")} == {
        f"pushing layer {short}" for short in layers}
    # The layers of both platforms before any manifest, as BuildKit's `pushing layers`.
    order = [s["id"] for s in statuses if "completed" in s]
    assert order.index("pushing layers") > max(order.index(f"pushing layer {short}") for short in layers)
    assert f"pushing manifest for {name}@{index_digest}" in done


def test_a_refused_push_is_an_error_of_its_step_and_one_line(work, fault_proxy):
    name = f"{fault_proxy.host}/progress/refused:1"
    assert watch(work.path, "tag", "big", name).returncode == 0
    fault_proxy.fail_next(403, times=50)
    pushed = watch(work.path, "push", "--progress=plain", name)
    assert pushed.returncode == 1
    text = pushed.stderr
    step = re.search(r"^#(\d+) pushing " + re.escape(name) + "$", text, re.MULTILINE)
    assert step, text
    assert re.search(rf"^#{step.group(1)} ERROR: .*denied", text, re.MULTILINE), text
    assert text.splitlines()[-1].startswith("ERROR: ") and "Traceback" not in text
    assert f"#{step.group(1)} DONE" not in text


class Recorded(PushProgress):
    def __init__(self):
        self.events: list[tuple[str, int, BlobState]] = []
        self.blobs_done = 0

    def blob(self, desc, sent, state):
        self.events.append((str(desc.digest), sent, state))

    def blobs_pushed(self):
        self.blobs_done += 1


def test_chunked_upload_reports_its_offset_across_chunks(store, fault_proxy):
    fault_proxy.faults.throttle_bytes_per_second = RATE
    image = make_image(store, [{"random": os.urandom(3 << 20)}])
    layer = image.layers[0]
    client = RegistryClient(store, auth=no_credentials, chunk_size=1 << 20)
    recorded = Recorded()
    with reporting_to(recorded):
        client.push(Reference.parse(f"{fault_proxy.host}/progress/chunked:1"), image)
    client.push(Reference.parse(f"{fault_proxy.host}/progress/unseen:1"), image)  # outside the block
    mine = [(sent, state) for digest, sent, state in recorded.events if digest == str(layer.digest)]
    sending = [sent for sent, state in mine if state is BlobState.SENDING]
    assert sending == sorted(sending) and sending[0] == 0 and max(sending) == layer.size
    # Each chunk's end is reported: the offset carries across PATCH requests.
    boundaries = {n << 20 for n in range(1, (layer.size >> 20) + 1) if n << 20 < layer.size}
    assert len(boundaries) == 3
    assert boundaries <= set(sending)
    assert mine[-1] == (layer.size, BlobState.PUSHED)
    assert recorded.blobs_done == 1
    assert len([path for method, path, _ in fault_proxy.requests if method == "PATCH"]) >= 2 * 4


def test_a_mounted_blob_is_reported_as_sent_nothing(store, busybox_image, fault_proxy):
    client = RegistryClient(store, auth=no_credentials)
    resolved = client.resolve(Reference.parse(f"{fault_proxy.host}/busybox:latest"))
    for layer in resolved.layers:
        client.fetch_blob(resolved.ref, layer)
    recorded = Recorded()
    with reporting_to(recorded):
        client.push(Reference.parse(f"{fault_proxy.host}/progress/mounted-{os.urandom(4).hex()}:1"),
                    resolved.image)
    states = {digest: state for digest, _, state in recorded.events}
    assert states[str(resolved.layers[0].digest)] is BlobState.MOUNTED
    assert all(sent == 0 for digest, sent, _ in recorded.events if digest == str(resolved.layers[0].digest))


def test_an_interrupted_push_stops_its_uploads_and_shows_canceled(work, fault_proxy):
    """SIGINT while the big layer crawls up at 1 MiB/s: the upload stops at
    its next piece rather than sending the other ~10 s of it first."""
    fault_proxy.faults.throttle_bytes_per_second = 1 << 20
    name = f"{fault_proxy.host}/progress/interrupted:1"
    assert watch(work.path, "tag", "big", name).returncode == 0
    process = subprocess.Popen(["pybuild", "push", "--progress=plain", name, "--root", str(work.path / "root")],
                               cwd=work.path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=pybuild_env(work.path))
    killer = threading.Timer(120, process.kill)
    killer.start()
    try:
        lines = []
        for raw in iter(process.stderr.readline, b""):
            lines.append(raw.decode())
            if re.match(r"^#\d+ pushing layer [0-9a-f]{12} [1-9][\d.]*MB / 1\d\.\d+MB", lines[-1]):
                break  # the big layer is on its way
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        lines += [raw.decode() for raw in iter(process.stderr.readline, b"")]
        process.wait()
        took = time.monotonic() - interrupted
    finally:
        killer.cancel()
        process.stdout.close()
        process.stderr.close()
    text = "".join(lines)
    assert process.returncode == 130, text
    assert took < 4, text  # the rest of the layer would take ~10 s
    assert re.search(r"^#\d+ CANCELED$", text, re.MULTILINE) and text.splitlines()[-1] == "ERROR: interrupted"
