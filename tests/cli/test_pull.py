"""`pybuild pull` of a tag the registry has moved: what the root builds from
afterwards is the image just pulled, as a fresh root would build."""

from __future__ import annotations

import io
import tarfile
import time

from cli_helpers import Cli, write_context
from fixtures import busybox


def _push_marked(layout, ref: str, marker: bytes):
    """busybox plus /etc/marker holding `marker`, pushed as `ref`."""
    extra = io.BytesIO()
    with tarfile.open(fileobj=extra, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/marker")
        info.size, info.mode = len(marker), 0o644
        tar.addfile(info, io.BytesIO(marker))
    image = busybox.write_image(layout, [busybox.busybox_layer_tar(), extra.getvalue()], arch=busybox.host_arch())
    busybox.write_index(layout, busybox.OCI_MANIFEST, image.manifest, image.manifest_size, "latest")
    busybox.skopeo_push(layout, "latest", ref)
    return image.manifest


def test_a_pulled_tag_is_what_later_builds_use(cli, busybox_image, tmp_path):
    ref = f"{busybox_image.registry.host}/pull-moves:latest"
    _push_marked(tmp_path / "layout-a", ref, b"A")
    # FROM and COPY --from both name the tag.
    context = write_context(tmp_path / "ctx", f"FROM {ref}\nCOPY --from={ref} /etc/marker /copied\nLABEL x=1\n")
    time.sleep(0.3)  # settled: the build may write its memo
    root = Cli(tmp_path / "root", cli.env)
    epoch = {"SOURCE_DATE_EPOCH": "0"}

    def build(*args, root=root, **env):
        done = root.build("-q", *args, str(context), env={**epoch, **env})
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode().split()[-1]

    first = build()
    assert build() == first
    assert list((tmp_path / "root" / "memo").iterdir())  # the next identical build may replay a memo

    moved = _push_marked(tmp_path / "layout-b", ref, b"B")
    pulled = root.build("pull", ref)
    assert pulled.returncode == 0 and str(moved) in pulled.stdout.decode(), pulled.stderr.decode()

    fresh = build(root=Cli(tmp_path / "fresh", cli.env))
    assert fresh != first
    assert build() == fresh  # a memo'd build whose base moved must not replay
    assert build(PYBUILD_NO_MEMO="1") == fresh
    out = tmp_path / "out"
    build("-o", f"type=local,dest={out}", PYBUILD_NO_MEMO="1")
    assert (out / "etc" / "marker").read_bytes() == b"B"
    assert (out / "copied").read_bytes() == b"B"
