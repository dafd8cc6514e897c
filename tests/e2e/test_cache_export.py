"""Issue 5: --cache-to / --cache-from between two fresh roots, through the
real registry fixture and an OCI layout directory.

A CI fleet's second machine (root B, empty) must get the first machine's
(root A) results without running a single RUN, and the same layer blobs.
"""

from __future__ import annotations

import json

import pytest

from builder.build import build
from builder.remotecache.spec import CacheSpecError, parse_cache_spec
from e2e.cache_helpers import Recorder
from e2e.helpers import write_context
from fixtures import busybox

DOCKERFILE = """\
FROM {base} AS tools
RUN echo tool > /tool
FROM {base}
WORKDIR /app
COPY app.txt ./
COPY --from=tools /tool /usr/bin/tool
RUN cat app.txt > /app/copy && echo built > /app/built
"""


def _build(tmp_path, name, root, dockerfile, **kwargs):
    recorder = Recorder()
    layout = tmp_path / f"{name}-layout"
    result = build(tmp_path / "ctx", dockerfile_text=dockerfile, root=root, reporter=recorder,
                   outputs=[f"type=oci,dest={layout},tar=false"], **kwargs)
    index = json.loads((layout / "index.json").read_text())
    manifest_blob = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_blob).read_text())
    return result, recorder, [l["digest"] for l in manifest["layers"]]


@pytest.fixture
def context(tmp_path):
    write_context(tmp_path / "ctx", {"app.txt": "app\n"})
    return tmp_path / "ctx"


def test_registry_cache_min_then_max(busybox_image, registry, tmp_path, context):
    dockerfile = DOCKERFILE.format(base=busybox_image.ref)
    min_ref = f"{registry.host}/cachetest/app:min"
    max_ref = f"{registry.host}/cachetest/app:max"
    a, rec_a, layers_a = _build(tmp_path, "a", tmp_path / "root-a", dockerfile,
                                cache_to=[f"type=registry,ref={min_ref}",
                                          f"type=registry,ref={max_ref},mode=max"])
    assert rec_a.runs

    # The cache is an OCI manifest whose config is pybuild's cache config.
    raw = busybox.skopeo_inspect(f"docker://{min_ref}", raw=True)
    assert raw["config"]["mediaType"] == "application/vnd.pybuild.cache.config.v1+json"

    # A fresh root with only the cache: nothing runs, same layers, same image.
    b, rec_b, layers_b = _build(tmp_path, "b", tmp_path / "root-b", dockerfile,
                                cache_from=[f"type=registry,ref={min_ref}"])
    assert rec_b.runs == []
    assert layers_b == layers_a and b.image_id == a.image_id

    # mode=min holds the final image's steps only; mode=max the tools stage too.
    _, rec_c, _ = _build(tmp_path, "c", tmp_path / "root-c", dockerfile, target="tools",
                         cache_from=[min_ref])
    assert [n.split("] ", 1)[1] for n in rec_c.runs] == ["RUN echo tool > /tool"]
    _, rec_d, _ = _build(tmp_path, "d", tmp_path / "root-d", dockerfile, target="tools",
                         cache_from=[f"type=registry,ref={max_ref}"])
    assert rec_d.runs == []


def test_changed_step_reuses_the_imported_steps_below_it(busybox_image, registry, tmp_path, context):
    dockerfile = DOCKERFILE.format(base=busybox_image.ref)
    ref = f"{registry.host}/cachetest/partial:max"
    _build(tmp_path, "a", tmp_path / "root-a", dockerfile, cache_to=[f"type=registry,ref={ref},mode=max"])
    (context / "app.txt").write_text("app, changed\n")
    _, rec, _ = _build(tmp_path, "b", tmp_path / "root-b", dockerfile, cache_from=[ref])
    assert [n.split("] ", 1)[1].split(" ")[0] for n in rec.runs] == ["COPY", "COPY", "RUN"]


def test_local_cache_carries_cache_mounts(busybox_image, registry, tmp_path, context):
    dockerfile = (f"FROM {busybox_image.ref}\n"
                  "RUN --mount=type=cache,target=/var/cache/app,id=appcache "
                  "echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /runs\n")
    cache_dir = tmp_path / "cache-dir"
    ref = f"{registry.host}/cachetest/mounts:1"
    _build(tmp_path, "a", tmp_path / "root-a", dockerfile,
           cache_to=[f"type=local,dest={cache_dir},cache-mounts=true", f"type=registry,ref={ref},cache-mounts=true"])
    assert (cache_dir / "index.json").is_file() and (cache_dir / "oci-layout").is_file()
    # The registry stores the cache mount blobs too.
    _, rec, _ = _build(tmp_path, "r", tmp_path / "root-r", dockerfile, cache_from=[ref])
    assert rec.runs == [] and any("restored 1 cache mount" in m for m in rec.messages)

    root_b = tmp_path / "root-b"
    _, rec, _ = _build(tmp_path, "b", root_b, dockerfile, cache_from=[f"type=local,src={cache_dir}"])
    assert rec.runs == []
    assert any("restored 1 cache mount" in m for m in rec.messages)
    # The restored cache mount is what the next run of the step sees.
    build(context, dockerfile_text=dockerfile, root=root_b, no_cache=True, reporter=Recorder(),
          outputs=[f"type=local,dest={tmp_path / 'out'}"])
    assert (tmp_path / "out" / "runs").read_text().strip() == "2"


def test_inline_cache_in_the_pushed_image(busybox_image, registry, tmp_path, context):
    dockerfile = DOCKERFILE.format(base=busybox_image.ref)
    image_ref = f"{registry.host}/cachetest/inline:1"
    a, _, layers_a = _build(tmp_path, "a", tmp_path / "root-a", dockerfile, tags=[image_ref], push=True,
                            cache_to=["type=inline"])
    manifest = busybox.skopeo_inspect(f"docker://{image_ref}", raw=True)
    config_blob = tmp_path / "a-layout" / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]
    assert json.loads(config_blob.read_text())["pybuild.cache.v1"]["records"]
    b, rec, layers_b = _build(tmp_path, "b", tmp_path / "root-b", dockerfile, cache_from=[image_ref],
                              cache_to=["type=inline"])
    assert rec.runs == [] and layers_b == layers_a and b.image_id == a.image_id


def test_unusable_cache_sources(busybox_image, registry, tmp_path, context):
    dockerfile = f"FROM {busybox_image.ref}\nRUN echo x > /x\n"
    # A cache that does not exist is a warning, as in BuildKit; the build runs.
    _, rec, _ = _build(tmp_path, "a", tmp_path / "root", dockerfile,
                       cache_from=[f"{registry.host}/cachetest/missing:none", f"type=local,src={tmp_path / 'no'}"])
    assert len([w for w in rec.warnings if "failed to import cache" in w]) == 2
    assert rec.runs
    for bad in ("type=s3,ref=x", "type=registry", "type=local", "type=registry,ref=r/x,mode=all",
                "type=inline,mode=max", "type=registry,ref=r/x,colour=blue"):
        with pytest.raises(CacheSpecError):
            parse_cache_spec(bad, export=True)


def _rewrite_layout_config(layout, change) -> None:
    """Edit the cache config of a local cache layout, keeping it well-formed."""
    import hashlib

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest).write_bytes(data)
        return "sha256:" + digest

    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    manifest = json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    change(config)
    config_bytes = json.dumps(config).encode()
    manifest["config"].update(digest=put(config_bytes), size=len(config_bytes))
    manifest_bytes = json.dumps(manifest).encode()
    entry.update(digest=put(manifest_bytes), size=len(manifest_bytes))
    (layout / "index.json").write_text(json.dumps(index))


def test_a_cache_lying_about_a_diff_id_is_not_trusted(busybox_image, tmp_path, context):
    dockerfile = f"FROM {busybox_image.ref}\nRUN echo x > /x\n"
    cache_dir = tmp_path / "cache-dir"
    _build(tmp_path, "a", tmp_path / "root-a", dockerfile, cache_to=[f"type=local,dest={cache_dir}"])

    def lie(config):
        config["layers"][-1]["diffID"] = "sha256:" + "0" * 64

    _rewrite_layout_config(cache_dir, lie)
    _, rec, _ = _build(tmp_path, "b", tmp_path / "root-b", dockerfile, cache_from=[f"type=local,src={cache_dir}"])
    assert any("does not match its diff_id" in w for w in rec.warnings)
    assert [n.split("] ", 1)[1] for n in rec.runs] == ["RUN echo x > /x"]
