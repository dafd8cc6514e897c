"""Registry faults met by real builds: FROM an image behind the fault proxy
(in front of the real registry), a fresh root each time so that every blob
crosses the proxy."""

from __future__ import annotations

import time

import pytest

from builder.errors import RegistryError, StepFailed
from builder.root.doctor import check
from builder.registry.reference import Reference
from builder.registry.client import RegistryClient
from builder.root.worker import Worker
from e2e.helpers import build_image


def _ref(proxy) -> str:
    return f"{proxy.host}/busybox:latest"


def _layer_gets(proxy, digest) -> list[dict]:
    return [headers for method, path, headers in proxy.requests
            if method == "GET" and path.endswith(f"/blobs/{digest}")]


def _assert_consistent(root) -> None:
    worker = Worker.open(root, "builtin")
    try:
        problems = check(worker)
    finally:
        worker.close()
    assert problems == []


def _resolve_first(tmp_path, proxy) -> None:
    """Fetch manifest and config into the root, so that the next blob GET
    through the proxy is the layer's."""
    worker = Worker.open(tmp_path / "root", "builtin")
    try:
        RegistryClient(worker.store).resolve(Reference.parse(_ref(proxy)), "linux/amd64")
    finally:
        worker.close()


def _build(tmp_path, proxy, **kwargs):
    return build_image(tmp_path, tmp_path / "root", f"FROM {_ref(proxy)}\nRUN echo ok > /ok\n",
                       export=False, **kwargs)


def test_connection_dropped_mid_blob_is_resumed(tmp_path, fault_proxy, busybox_image):
    (layer,) = busybox_image.layers
    _resolve_first(tmp_path, fault_proxy)
    fault_proxy.faults.cut_blob_after = 64 * 1024
    built = _build(tmp_path, fault_proxy)
    assert built.read_text("/ok") == "ok\n"
    gets = _layer_gets(fault_proxy, layer)
    assert len(gets) == 2
    assert gets[1].get("Range") == f"bytes={64 * 1024}-"
    _assert_consistent(tmp_path / "root")


def test_dropped_blob_with_range_ignored_is_still_verified(tmp_path, fault_proxy, busybox_image):
    _resolve_first(tmp_path, fault_proxy)
    fault_proxy.faults.cut_blob_after = 64 * 1024
    fault_proxy.faults.ignore_range = True  # the registry resends all: the held bytes are skipped
    built = _build(tmp_path, fault_proxy)
    assert built.read_text("/ok") == "ok\n"
    assert len(_layer_gets(fault_proxy, busybox_image.layers[0])) == 2
    _assert_consistent(tmp_path / "root")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(tmp_path, fault_proxy, busybox_image, status):
    fault_proxy.fail_next(status, times=2)
    built = _build(tmp_path, fault_proxy)
    assert built.read_text("/ok") == "ok\n"
    assert len(fault_proxy.requests) >= 3


def test_429_honours_retry_after(tmp_path, fault_proxy, busybox_image):
    fault_proxy.fail_next(429, times=1, headers={"Retry-After": "2"})
    started = time.monotonic()
    built = _build(tmp_path, fault_proxy)
    assert built.read_text("/ok") == "ok\n"
    assert time.monotonic() - started >= 2.0


def test_429_forever_gives_a_clear_error(tmp_path, fault_proxy, busybox_image):
    fault_proxy.fail_next(429, times=10, headers={"Retry-After": "0"})
    with pytest.raises(RegistryError) as failed:
        _build(tmp_path, fault_proxy)
    assert "429" in str(failed.value) or "toomanyrequests" in str(failed.value).lower()
    assert failed.value.transient


def test_stalled_blob_times_out_with_a_clear_error(tmp_path, fault_proxy, busybox_image, monkeypatch):
    monkeypatch.setenv("PYBUILD_REGISTRY_TIMEOUT", "1")
    fault_proxy.faults.stall_blob_after = 1000
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:  # the layer is fetched by the FROM step
        _build(tmp_path, fault_proxy)
    assert isinstance(failed.value.cause, RegistryError)
    assert time.monotonic() - started < 15
    message = str(failed.value)
    assert "failed to fetch sha256:" in message and "timed out" in message
    assert list((tmp_path / "root" / "content" / "ingest").iterdir()) == []
    _assert_consistent(tmp_path / "root")


def test_blob_not_matching_its_digest_is_refused_and_not_stored(tmp_path, fault_proxy, busybox_image):
    fault_proxy.faults.corrupt_blobs = True
    with pytest.raises(RegistryError) as failed:
        _build(tmp_path, fault_proxy)
    assert "digest" in str(failed.value)
    store = tmp_path / "root" / "content"
    blobs = {p.name for p in (store / "blobs").rglob("*") if p.is_file()}
    assert busybox_image.layers[0].hex not in blobs and busybox_image.config.hex not in blobs
    assert list((store / "ingest").iterdir()) == []
    _assert_consistent(tmp_path / "root")
