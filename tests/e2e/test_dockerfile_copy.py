"""Issue #3, end to end: what COPY and ADD take from the context, images,
stages, archives and URLs, and what .dockerignore keeps out."""

from __future__ import annotations

import hashlib

import pytest

from e2e.helpers import BUILD_ERRORS, build_image, tar_bytes

pytestmark = pytest.mark.e2e


CONTEXT = {
    "a.log": "ignored\n",
    "keep.log": "kept by an exception\n",
    "secret/key": "never copied\n",
    "src/main.txt": "main\n",
    "src/tmp/x.bak": "ignored\n",
    "src/deep/y.bak": "ignored\n",
}


def test_dockerignore_exceptions(tmp_path, root, busybox_image):
    files = dict(CONTEXT, **{".dockerignore": "*.log\n!keep.log\nsecret\nsrc/**/*.bak\n"})
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
COPY . /ctx/
RUN set -e; [ -f /ctx/keep.log ]; [ ! -e /ctx/a.log ]; [ ! -e /ctx/secret ]; \\
    [ -f /ctx/src/main.txt ]; [ ! -e /ctx/src/tmp/x.bak ]; [ ! -e /ctx/src/deep/y.bak ]
""", files=files)
    assert built.read_text("/ctx/keep.log") == "kept by an exception\n"
    assert not built.exists("/ctx/a.log") and not built.exists("/ctx/secret")
    # A bind mount of the context sees the same filtered view.
    build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
RUN --mount=type=bind,target=/ctx [ -f /ctx/keep.log ] && [ ! -e /ctx/a.log ] && [ ! -e /ctx/secret ]
""", files=files, export=False, local=False)


def test_dockerfile_specific_dockerignore_wins(tmp_path, root, busybox_image):
    files = dict(CONTEXT, **{".dockerignore": "*\n"})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    dockerfile = outside / "app.Dockerfile"
    dockerfile.write_text(f"FROM {busybox_image.ref}\nCOPY . /ctx/\n")
    (outside / "app.Dockerfile.dockerignore").write_text("a.log\n")
    built = build_image(tmp_path, root, None, files=files, dockerfile=dockerfile)
    # Only app.Dockerfile.dockerignore applied: .dockerignore's "*" did not.
    assert built.exists("/ctx/secret/key") and built.exists("/ctx/keep.log")
    assert built.exists("/ctx/.dockerignore")
    assert not built.exists("/ctx/a.log")


def test_copy_flags(tmp_path, root, busybox_image):
    files = {
        "owned.txt": "owned\n",
        "a/b/one.txt": "one\n",
        "c/two.txt": "two\n",
        "dir/keep.txt": "keep\n",
        "dir/drop.bak": "drop\n",
        "dir/sub/skip/file": "skip\n",
        "dir/sub/other": "other\n",
        "linked.txt": "linked\n",
    }
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref} AS first
RUN echo first > /first.txt

FROM {busybox_image.ref}
# /o is created by this COPY, owned by --chown as BuildKit's MkdirAll does.
COPY --chown=app:app owned.txt /o/owned.txt
COPY --chown=1000:0 owned.txt /o/numeric.txt
COPY --chmod=640 owned.txt /o/mode.txt
COPY --chmod=u=rwx,go=r owned.txt /o/symbolic.txt
COPY --from={busybox_image.ref} /etc/group /from-image/group
COPY --from=0 /first.txt /from-index.txt
COPY --from=first /first.txt /from-name.txt
COPY --parents a/b/one.txt c/two.txt /p/
COPY --parents ./a/./b/one.txt /pivot/
COPY --exclude=*.bak --exclude=sub/skip dir/ /e/
RUN set -e; \\
    [ "$(stat -c %U:%G /o/owned.txt)" = app:app ]; \\
    [ "$(stat -c %u:%g /o/numeric.txt)" = 1000:0 ]; \\
    [ "$(stat -c %a /o/mode.txt)" = 640 ]; \\
    [ "$(stat -c %a /o/symbolic.txt)" = 744 ]; \\
    [ "$(stat -c %U:%G /o)" = app:app ]; \\
    grep -q '^app:x:1000:' /from-image/group
COPY --link linked.txt /l/
""", files=files)
    assert built.read_text("/from-index.txt") == "first\n" == built.read_text("/from-name.txt")
    assert built.read_text("/p/a/b/one.txt") == "one\n"
    assert built.read_text("/p/c/two.txt") == "two\n"
    assert built.read_text("/pivot/b/one.txt") == "one\n"
    assert not built.exists("/pivot/a")
    assert built.read_text("/e/keep.txt") == "keep\n"
    assert built.read_text("/e/sub/other") == "other\n"
    assert not built.exists("/e/drop.bak") and not built.exists("/e/sub/skip")
    assert built.read_text("/l/linked.txt") == "linked\n"
    # COPY --link's layer holds the copied file (and its directory) only.
    names = sorted(m.name.rstrip("/") for m in built.layer_members(-1))
    assert names == ["l", "l/linked.txt"]


def test_add_archives_and_urls(tmp_path, root, busybox_image, http_files):
    served, url = http_files
    archive = tar_bytes({"pkg/bin/tool": b"#!/bin/sh\n", "pkg/README": b"readme\n"}, "gz")
    (served / "remote.txt").write_text("remote content\n")
    (served / "remote.tar.gz").write_bytes(archive)
    remote_sha = hashlib.sha256(b"remote content\n").hexdigest()
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ADD local.tar.gz /unpacked/
ADD {url}/remote.txt /downloads/
ADD --checksum=sha256:{remote_sha} {url}/remote.txt /verified.txt
ADD {url}/remote.tar.gz /downloads/
ADD --chown=app:app {url}/remote.txt /owned.txt
RUN set -e; [ "$(stat -c %a /downloads/remote.txt)" = 600 ]; \\
    [ "$(stat -c %U /owned.txt)" = app ]
""", files={"local.tar.gz": archive})
    assert built.read_text("/unpacked/pkg/README") == "readme\n"
    assert built.read_text("/unpacked/pkg/bin/tool") == "#!/bin/sh\n"
    assert built.read_text("/downloads/remote.txt") == "remote content\n"
    assert built.read_text("/verified.txt") == "remote content\n"
    # A remote archive is not extracted.
    assert built.path("/downloads/remote.tar.gz").read_bytes() == archive

    wrong = "0" * 64
    with pytest.raises(BUILD_ERRORS, match=f"(?i)checksum|digest|{remote_sha[:12]}"):
        build_image(tmp_path, root, f"FROM {busybox_image.ref}\nADD --checksum=sha256:{wrong} {url}/remote.txt /x\n",
                    export=False, local=False)
