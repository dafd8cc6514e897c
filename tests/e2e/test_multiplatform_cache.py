"""Issue 17: a build for several platforms exports and imports the build
cache, explains its steps and squashes its images, as BuildKit does.

BuildKit exports every platform's result into the one cache exporter and
writes one cache manifest (solver/llbsolver: `res.EachRef` into one
`CacheExporter`, then one `Finalize`); `type=inline` gives each platform's
image its own records (`inline-cache/<platform key>` per ref). So here:
`--cache-to type=registry|local` writes one cache holding both platforms'
records, `type=inline` each image its own, and a fresh root given any of
them with `--cache-from` runs none of those steps again.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from e2e.test_emulation import emulator  # noqa: F401 (a fixture)
from e2e.test_multiplatform import PLATFORMS, Layout, _executed, _images, pybuild

pytestmark = pytest.mark.e2e

DOCKERFILE = """\
FROM --platform=$BUILDPLATFORM {base} AS tool
RUN echo tool > /tool
FROM {base}
ARG TARGETARCH
COPY --from=tool /tool /tool
COPY ${{TARGETARCH}}.txt /own.txt
RUN uname -m > /arch && cat /own.txt >> /arch
"""
CACHE_CONFIG = "application/vnd.pybuild.cache.config.v1+json"
INLINE_KEY = "pybuild.cache.v1"
ACCEPT = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"])


def _context(tmp_path: Path, base: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (context / "amd64.txt").write_text("for amd64\n")
    (context / "arm64.txt").write_text("for arm64\n")
    return context


def _get(registry, path: str) -> bytes:
    request = urllib.request.Request(f"http://{registry.host}/v2/{path}", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read()


def _manifest(registry, repo: str, ref: str) -> dict:
    return json.loads(_get(registry, f"{repo}/manifests/{ref}"))


def _blob(registry, repo: str, digest: str) -> dict:
    return json.loads(_get(registry, f"{repo}/blobs/{digest}"))


def _platform_layers(registry, repo: str, tag: str) -> dict[str, list[str]]:
    index = _manifest(registry, repo, tag)
    return {m["platform"]["architecture"]: [layer["digest"] for layer in
                                            _manifest(registry, repo, m["digest"])["layers"]]
            for m in _images(index)}


@pytest.fixture(scope="module")
def exported(emulator, busybox_index, registry, tmp_path_factory):  # noqa: F811
    """One build for both platforms writing every kind of cache at once."""
    tmp_path = tmp_path_factory.mktemp("mpcache")
    context = _context(tmp_path, busybox_index.ref)
    done = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"), "--progress", "rawjson",
                   "--cache-to", f"type=registry,ref={registry.host}/mpcache:max,mode=max",
                   "--cache-to", f"type=local,dest={tmp_path / 'cachedir'},mode=max",
                   "--cache-to", "type=inline", "-t", f"{registry.host}/mpapp:inline", "--push",
                   str(context), tmp_path=tmp_path)
    return tmp_path, context, done


def test_one_cache_manifest_holds_every_platforms_records(exported, registry):
    _, _, done = exported
    assert sum("RUN uname" in name for name in _executed(done.stderr)) == 2
    manifest = _manifest(registry, "mpcache", "max")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"  # one manifest, no index
    assert manifest["config"]["mediaType"] == CACHE_CONFIG
    exported_keys = {r["key"] for r in _blob(registry, "mpcache", manifest["config"]["digest"])["records"]}
    # Each platform's image carries its own inline records; the one cache has both platforms'.
    index = _manifest(registry, "mpapp", "inline")
    inline = {}
    for entry in _images(index):
        config = _blob(registry, "mpapp", _manifest(registry, "mpapp", entry["digest"])["config"]["digest"])
        inline[entry["platform"]["architecture"]] = {r["key"] for r in config[INLINE_KEY]["records"]}
    assert set(inline) == {"amd64", "arm64"}
    assert inline["amd64"] and inline["arm64"] and inline["amd64"] != inline["arm64"]
    assert inline["amd64"] | inline["arm64"] <= exported_keys


@pytest.mark.parametrize("kind", ["registry", "local", "inline"])
def test_a_fresh_root_reuses_every_platforms_steps(exported, registry, kind, tmp_path):
    built, context, _ = exported
    source = {"registry": f"type=registry,ref={registry.host}/mpcache:max",
              "local": f"type=local,src={built / 'cachedir'}",
              "inline": f"type=registry,ref={registry.host}/mpapp:inline"}[kind]
    again = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "fresh"), "--progress", "rawjson",
                    "--cache-from", source, "-t", f"{registry.host}/mpapp:{kind}", "--push", str(context),
                    tmp_path=tmp_path)
    # Reading the context is no step of the cache's: a fresh root reads it once.
    ran = [name for name in _executed(again.stderr) if "internal] load build context" not in name]
    if kind == "inline":
        # mode=min: the image's own steps; the tool stage is not in the image's layers.
        assert not any("RUN uname" in name for name in ran), ran
    else:
        assert ran == [], ran
    events = [json.loads(line) for line in again.stderr.splitlines() if line.startswith("{")]
    cached = {v["name"] for e in events for v in e.get("vertexes", []) if v.get("cached")}
    assert {name.split()[0] for name in cached if "RUN uname" in name} == {"[linux/amd64", "[linux/arm64"}
    # The very layers the exporting build made, for each platform.
    assert _platform_layers(registry, "mpapp", kind) == _platform_layers(registry, "mpapp", "inline")


def test_explain_names_each_platforms_steps(busybox_index, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM --platform=$BUILDPLATFORM {busybox_index.ref} AS tool\nARG TOOL\nRUN echo $TOOL > /tool\n"
        f"FROM {busybox_index.ref}\nARG TARGETARCH\nCOPY ${{TARGETARCH}}.txt /own.txt\nCOPY --from=tool /tool /tool\n")
    (context / "amd64.txt").write_text("a\n")
    (context / "arm64.txt").write_text("b\n")

    def explained(tool: str) -> list[str]:
        done = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"), "--progress", "plain",
                       "--explain", "--build-arg", f"TOOL={tool}", "-o", f"type=local,dest={tmp_path / 'out'}",
                       str(context), tmp_path=tmp_path)
        return [line.split(" ", 1)[1] for line in done.stderr.splitlines() if "rebuilt because" in line]

    first = explained("1")
    assert "[linux/arm64 stage-1 2/3] COPY arm64.txt /own.txt: rebuilt because this is the first build recorded" \
        in first, first
    assert "[linux/amd64 stage-1 2/3] COPY amd64.txt /own.txt: rebuilt because this is the first build recorded" \
        in first, first
    (context / "arm64.txt").write_text("B\n")
    assert explained("1") == [
        "[linux/arm64 stage-1 2/3] COPY arm64.txt /own.txt: rebuilt because arm64.txt changed",
        "[linux/arm64 stage-1 3/3] COPY --from=tool /tool /tool: rebuilt because parent step "
        "[linux/arm64 stage-1 2/3] COPY arm64.txt /own.txt changed"]
    # The stage both platforms share runs once, is explained once, and has
    # one name, the first platform's, in both platforms' explanations.
    shared = "[linux/amd64 tool 2/2] RUN echo 2 > /tool"
    assert explained("2") == [
        f"{shared}: rebuilt because build arg TOOL changed",
        f"[linux/amd64 stage-1 3/3] COPY --from=tool /tool /tool: rebuilt because parent step {shared} changed",
        f"[linux/arm64 stage-1 3/3] COPY --from=tool /tool /tool: rebuilt because parent step {shared} changed"]


def test_squash_squashes_each_platforms_image(busybox_index, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_index.ref}\nARG TARGETARCH\n"
                                        "COPY ${TARGETARCH}.txt /own.txt\nCOPY ${TARGETARCH}.txt /again.txt\n")
    (context / "amd64.txt").write_text("a\n")
    (context / "arm64.txt").write_text("b\n")
    layouts = {}
    for squash in (False, True):
        dest = tmp_path / f"layout-{squash}"
        pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"),
                *(["--squash"] if squash else []), "-o", f"type=oci,dest={dest},tar=false", str(context),
                tmp_path=tmp_path)
        layouts[squash] = Layout(dest)
    for squash, read in layouts.items():
        top = read.json(json.loads(read.files["index.json"])["manifests"][0]["digest"])
        counts = {}
        for entry in _images(top):
            manifest = read.json(entry["digest"])
            counts[entry["platform"]["architecture"]] = len(manifest["layers"])
            assert read.file_of(manifest, "own.txt") == read.file_of(manifest, "again.txt")
        base = 1  # busybox: one layer per platform
        assert counts == ({"amd64": base + 1, "arm64": base + 1} if squash else
                          {"amd64": base + 2, "arm64": base + 2}), (squash, counts)


def test_the_shared_stage_counts_once_among_the_executed_steps(busybox_index, tmp_path):
    from builder.build import build

    context = tmp_path / "ctx"
    context.mkdir()
    dockerfile = (f"FROM --platform=$BUILDPLATFORM {busybox_index.ref} AS tool\nRUN echo tool > /tool\n"
                  f"FROM {busybox_index.ref}\nCOPY --from=tool /tool /tool\n")
    first = build(context, dockerfile_text=dockerfile, platform=PLATFORMS, root=tmp_path / "root",
                  outputs=[f"type=local,dest={tmp_path / 'out'}"])
    alone = build(context, dockerfile_text=dockerfile, platform=PLATFORMS, root=tmp_path / "root",
                  outputs=[f"type=local,dest={tmp_path / 'out2'}"], no_cache=True)
    # --no-cache runs the RUN and COPY steps only: the RUN once, on this
    # host, for both platforms, and each platform's COPY.
    assert first.executed_steps >= alone.executed_steps == 1 + 2, (first, alone)
    again = build(context, dockerfile_text=dockerfile, platform=PLATFORMS, root=tmp_path / "root",
                  outputs=[f"type=local,dest={tmp_path / 'out3'}"])
    assert again.executed_steps == 0


def test_a_cache_that_cannot_be_read_is_one_warning(busybox_index, registry, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_index.ref}\nARG TARGETARCH\nCOPY Dockerfile /$TARGETARCH\n")
    done = pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"), "--progress", "plain",
                   "--cache-from", f"type=registry,ref={registry.host}/nothing:here",
                   "--cache-from", f"type=local,src={tmp_path / 'absent'}",
                   "-o", f"type=local,dest={tmp_path / 'out'}", str(context), tmp_path=tmp_path)
    warned = [line for line in done.stderr.splitlines() if "failed to import cache" in line]
    assert len(warned) == 2 and "nothing:here" in warned[0] and "absent" in warned[1], done.stderr
    assert (tmp_path / "out" / "linux_arm64" / "arm64").is_file()


def test_a_cache_mount_both_platforms_use_is_exported_once(emulator, busybox_index, tmp_path):  # noqa: F811
    import gzip
    import io
    import tarfile

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_index.ref}\nARG TARGETARCH\n"
                                        "RUN --mount=type=cache,id=shared,target=/c echo $TARGETARCH > /c/$TARGETARCH\n")
    dest = tmp_path / "cachedir"
    pybuild("build", "--platform", PLATFORMS, "--root", str(tmp_path / "root"),
            "--cache-to", f"type=local,dest={dest},mode=max,cache-mounts=true",
            "-o", f"type=local,dest={tmp_path / 'out'}", str(context), tmp_path=tmp_path)
    read = Layout(dest)
    top = json.loads(read.files["index.json"])["manifests"][0]
    config = read.json(read.json(top["digest"])["config"]["digest"])
    mounts = [layer for layer in config["layers"] if "cache.mount" in layer["mediaType"]]
    assert len(mounts) == 1 and len(config["cacheMounts"]) == 1, config
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(read.blob(mounts[0]["digest"])))) as tar:
        assert {name.lstrip("./") for name in tar.getnames()} >= {"amd64", "arm64"}
