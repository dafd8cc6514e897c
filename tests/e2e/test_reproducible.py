"""Issue 6: reproducible images. SOURCE_DATE_EPOCH sets `created` and the
history times; `rewrite-timestamp=true` clamps file mtimes in new layers, so
the same inputs built in two fresh roots give the same image digest."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from builder.build import build
from e2e.helpers import write_context

EPOCH = 1_700_000_000
STAMP = "2023-11-14T22:13:20Z"

DOCKERFILE = """\
FROM {base}
RUN mkdir -p /app && echo built > /app/out && ln -s out /app/link
COPY input.txt /app/
COPY <<EOF /app/inline.txt
inline
EOF
WORKDIR /srv
"""


def _context(work: Path, base: str) -> Path:
    context = work / "context"
    write_context(context, {"Dockerfile": DOCKERFILE.format(base=base), "input.txt": "input\n"})
    return context


def _layout(dest: Path) -> tuple[dict, dict, list[list[tarfile.TarInfo]]]:
    index = json.loads((dest / "index.json").read_text())
    blob = lambda d: dest / "blobs/sha256" / d.removeprefix("sha256:")  # noqa: E731
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    layers = []
    for layer in manifest["layers"]:
        with tarfile.open(blob(layer["digest"])) as tar:
            layers.append(tar.getmembers())
    return manifest, config, layers


def test_same_inputs_in_fresh_roots_give_the_same_digest(busybox_image, tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    digests, results = [], []
    for n, how in enumerate(("build-arg", "env")):
        work = tmp_path / f"b{n}"
        context = _context(work, busybox_image.ref)
        args = {}
        if how == "env":
            monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
        else:
            args["SOURCE_DATE_EPOCH"] = str(EPOCH)
        # A context file's mtime is whatever the checkout gave it.
        (context / "input.txt").touch()
        result = build(context, root=work / "root", build_args=args,
                       outputs=[f"type=oci,dest={work / 'layout'},tar=false,rewrite-timestamp=true"])
        digests.append(result.manifest_digest)
        results.append(work / "layout")
    assert digests[0] == digests[1]

    manifest, config, layers = _layout(results[0])
    assert config["created"] == STAMP
    new_history = config["history"][-5:]
    assert [h["created"] for h in new_history] == [STAMP] * 5
    base_layers = len(busybox_image.layers)
    for members in layers[base_layers:]:
        assert members and all(m.mtime <= EPOCH for m in members)
    names = {m.name for members in layers[base_layers:] for m in members}
    assert {"app/out", "app/link", "app/input.txt", "app/inline.txt", "srv"} <= names
    for path in results:
        shutil.rmtree(path.parent)


def test_epoch_without_rewrite_sets_times_but_keeps_file_mtimes(busybox_image, tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    context = _context(tmp_path, busybox_image.ref)
    build(context, root=tmp_path / "root", build_args={"SOURCE_DATE_EPOCH": str(EPOCH)},
          outputs=[f"type=oci,dest={tmp_path / 'layout'},tar=false"])
    _, config, layers = _layout(tmp_path / "layout")
    assert config["created"] == STAMP
    out = next(m for members in layers for m in members if m.name == "app/out")
    assert out.mtime > EPOCH  # written now, by RUN; BuildKit too leaves it without rewrite-timestamp


def test_fully_cached_rebuild_gives_the_same_digest(busybox_image, tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    context = _context(tmp_path, busybox_image.ref)
    first = build(context, root=tmp_path / "root", tags=["repro:1"])
    second = build(context, root=tmp_path / "root", tags=["repro:1"])
    assert second.executed_steps == 0
    assert second.manifest_digest == first.manifest_digest
    assert second.image_id == first.image_id


def test_invalid_epoch_is_refused(busybox_image, tmp_path):
    from builder.errors import PybuildError

    context = _context(tmp_path, busybox_image.ref)
    with pytest.raises(PybuildError, match="invalid SOURCE_DATE_EPOCH"):
        build(context, root=tmp_path / "root", build_args={"SOURCE_DATE_EPOCH": "yesterday"})
