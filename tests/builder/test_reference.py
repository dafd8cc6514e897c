import pytest

from builder.errors import InvalidReference
from builder.registry.reference import Reference
from cache.digest import Digest

HEX = "a" * 64
DIGEST = f"sha256:{HEX}"

# text → (registry, repository, tag, digest, str(), familiar)
VALID = {
    "busybox": ("docker.io", "library/busybox", "latest", None,
                "docker.io/library/busybox:latest", "busybox:latest"),
    "busybox:1.36": ("docker.io", "library/busybox", "1.36", None,
                     "docker.io/library/busybox:1.36", "busybox:1.36"),
    "library/busybox": ("docker.io", "library/busybox", "latest", None,
                        "docker.io/library/busybox:latest", "busybox:latest"),
    "docker.io/busybox": ("docker.io", "library/busybox", "latest", None,
                          "docker.io/library/busybox:latest", "busybox:latest"),
    "index.docker.io/library/busybox": ("docker.io", "library/busybox", "latest", None,
                                        "docker.io/library/busybox:latest", "busybox:latest"),
    "user/app:v1": ("docker.io", "user/app", "v1", None, "docker.io/user/app:v1", "user/app:v1"),
    "localhost/app": ("localhost", "app", "latest", None, "localhost/app:latest", "localhost/app:latest"),
    "localhost:5000/x": ("localhost:5000", "x", "latest", None,
                         "localhost:5000/x:latest", "localhost:5000/x:latest"),
    "127.0.0.1:5000/a/b:t": ("127.0.0.1:5000", "a/b", "t", None,
                             "127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"),
    "ghcr.io/o/r/deep/name:1.0-rc_1": ("ghcr.io", "o/r/deep/name", "1.0-rc_1", None,
                                       "ghcr.io/o/r/deep/name:1.0-rc_1", "ghcr.io/o/r/deep/name:1.0-rc_1"),
    f"name@{DIGEST}": ("docker.io", "library/name", None, DIGEST,
                       f"docker.io/library/name@{DIGEST}", f"name@{DIGEST}"),
    f"name:tag@{DIGEST}": ("docker.io", "library/name", "tag", DIGEST,
                           f"docker.io/library/name:tag@{DIGEST}", f"name:tag@{DIGEST}"),
    "[::1]:5000/img": ("[::1]:5000", "img", "latest", None, "[::1]:5000/img:latest", "[::1]:5000/img:latest"),
    "a__b-c---d/x.y_z": ("docker.io", "a__b-c---d/x.y_z", "latest", None,
                         "docker.io/a__b-c---d/x.y_z:latest", "a__b-c---d/x.y_z:latest"),
}


@pytest.mark.parametrize("text", sorted(VALID))
def test_parse_normalises_like_docker(text):
    registry, repository, tag, digest, full, familiar = VALID[text]
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert ref.digest == (Digest.parse(digest) if digest else None)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert Reference.parse(str(ref)) == ref


INVALID = {
    "Busybox": "invalid reference format: repository name must be lowercase",
    "docker.io/User/app": "invalid reference format: repository name must be lowercase",
    "": "invalid reference format",
    "busybox:": "invalid reference format",
    ":tag": "invalid reference format",
    "a//b": "invalid reference format",
    "-leading/x": "invalid reference format",
    "name:t@g": "invalid reference format",
    "name@sha256:abc": "invalid reference format",
    f"name@md5:{'a' * 32}": "invalid reference format",
    "name:" + "t" * 129: "invalid reference format",
    HEX: "cannot specify 64-byte hexadecimal strings",
    "x/" + "a" * 260: "must not be more than 255 characters",
}


@pytest.mark.parametrize("text", sorted(INVALID))
def test_parse_refuses_what_docker_refuses(text):
    with pytest.raises(InvalidReference, match=INVALID[text].replace("(", r"\(")):
        Reference.parse(text)


def test_api_host_and_loopback():
    assert Reference.parse("busybox").api_host == "registry-1.docker.io"
    assert Reference.parse("ghcr.io/a/b").api_host == "ghcr.io"
    for text in ("localhost/x", "localhost:5000/x", "127.0.0.1:5000/x", "127.1.2.3/x", "[::1]:5000/x"):
        assert Reference.parse(text).is_loopback, text
    for text in ("busybox", "ghcr.io/a/b", "10.0.0.1:5000/x", "localhost.example.com/x"):
        assert not Reference.parse(text).is_loopback, text


def test_with_digest_keeps_the_tag_and_object_prefers_the_digest():
    ref = Reference.parse("127.0.0.1:5000/app:v2")
    assert ref.object == "v2"
    pinned = ref.with_digest(Digest.parse(DIGEST))
    assert str(pinned) == f"127.0.0.1:5000/app:v2@{DIGEST}"
    assert pinned.object == DIGEST
    assert pinned.name == "127.0.0.1:5000/app"
