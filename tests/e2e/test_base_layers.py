"""A base image of several layers: pulled in parallel, applied in order."""

import io
import tarfile

from e2e.helpers import build_image
from fixtures import busybox
from builder.image import OCI_MANIFEST


def _layer(files: dict[str, bytes], whiteouts=()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
        for name in whiteouts:
            archive.addfile(tarfile.TarInfo(name))
    return buffer.getvalue()


def test_layers_apply_in_order(registry, tmp_path, root):
    layout = tmp_path / "layout"
    layout.mkdir()
    layers = [
        busybox.busybox_layer_tar(),
        _layer({"data/a": b"first", "data/b": b"gone soon"}),
        _layer({"data/a": b"second"}, whiteouts=["data/.wh.b"]),
        _layer({"data/c": b"third"}),
    ]
    image = busybox.write_image(layout, layers, arch=busybox.host_arch())
    busybox.write_index(layout, OCI_MANIFEST, image.manifest, image.manifest_size, "layers")
    ref = f"{registry.host}/layered:latest"
    busybox.skopeo_push(layout, "layers", ref)
    built = build_image(tmp_path, root, f"""\
FROM {ref}
RUN [ "$(cat /data/a)" = second ] && [ ! -e /data/b ] && [ "$(cat /data/c)" = third ] && echo ok > /checked
""")
    assert built.read_text("/checked") == "ok\n"
    assert len(built.manifest["layers"]) == len(layers) + 1


def test_the_same_layer_gzipped_anew_elsewhere_claims_no_blob_it_lacks(registry, tmp_path):
    # One layer, two blobs: the image pushed again with another gzip level.
    # The second build reuses the layer extracted from the first blob and
    # never fetches the second; the store must not claim it has it.
    from builder.root.doctor import check
    from builder.root.worker import Worker

    root = tmp_path / "root"  # its own: doctor checks the whole root
    layers = [busybox.busybox_layer_tar(), _layer({"data/a": b"same"})]
    refs = []
    for level, tag in ((9, "a"), (1, "b")):
        layout = tmp_path / f"layout-{tag}"
        layout.mkdir()
        image = busybox.write_image(layout, layers, arch=busybox.host_arch(), compresslevel=level)
        busybox.write_index(layout, OCI_MANIFEST, image.manifest, image.manifest_size, tag)
        refs.append(f"{registry.host}/regzipped:{tag}")
        busybox.skopeo_push(layout, tag, refs[-1])
    for ref in refs:
        built = build_image(tmp_path, root, f"FROM {ref}\nRUN cat /data/a > /seen\n")
        assert built.read_text("/seen") == "same"
    worker = Worker.open(root)
    try:
        assert check(worker) == []
    finally:
        worker.close()
