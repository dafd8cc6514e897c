"""The local store's export takes the layers that EarlyLayers made while
later steps ran (builder/build.py wires the solver's on_result hook to it),
and no layer is tarred twice."""

from __future__ import annotations

import threading

import pytest

from builder.build import build
from builder.export.layers import LayerMaker
from e2e.helpers import write_context

pytestmark = pytest.mark.e2e


@pytest.fixture
def tarred(monkeypatch):
    """(snapshot, thread name) for each layer tarred from a snapshot."""
    seen: list[tuple[str, str]] = []
    original = LayerMaker._from_snapshot

    def recording(self, snapshot, *args, **kwargs):
        seen.append((snapshot, threading.current_thread().name))
        return original(self, snapshot, *args, **kwargs)

    monkeypatch.setattr(LayerMaker, "_from_snapshot", recording)
    return seen


def test_the_export_takes_the_layer_made_while_the_next_step_ran(busybox_image, tmp_path, tarred):
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    build(context, root=root, tags=["early:1"], dockerfile_text=f"""\
FROM {busybox_image.ref} AS helper
RUN echo helper > /helper
FROM {busybox_image.ref}
COPY a.txt /a.txt
RUN echo one > /one
RUN sleep 1 && echo two > /two
""")
    names = [name for _, name in tarred]
    snapshots = [snapshot for snapshot, _ in tarred]
    # One tar per layer of the image's own steps (COPY and two RUNs); the
    # other stage's snapshot is never made into a layer.
    assert len(snapshots) == 3 == len(set(snapshots)), tarred
    # The COPY's and the first RUN's layers were made while `sleep 1` ran,
    # on the helper thread, and the export waited for or reused them.
    assert names[:2] == ["pybuild-early-layers"] * 2, tarred


def test_an_oci_output_makes_its_layers_at_export(busybox_image, tmp_path, tarred):
    # Early layers serve the local store only: an -o export's layers are
    # gzipped there, once each, on the build's own thread.
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    build(context, root=root, outputs=[f"type=oci,dest={tmp_path / 'out.tar'}"], dockerfile_text=f"""\
FROM {busybox_image.ref}
COPY a.txt /a.txt
RUN echo one > /one
""")
    assert len(tarred) == 2 == len({snapshot for snapshot, _ in tarred}), tarred
    assert all(name != "pybuild-early-layers" for _, name in tarred), tarred
