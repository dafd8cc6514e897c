"""`--build-context NAME=VALUE` (named contexts) and `--add-host`, end to
end, with the semantics of BuildKit's Dockerfile frontend
(frontend/dockerui/namedcontext.go, dockerfile2llb/convert.go)."""

from __future__ import annotations

import pytest

from e2e.helpers import BUILD_ERRORS, build_image, write_context

pytestmark = pytest.mark.e2e


def _named(tmp_path, files, name="named"):
    directory = tmp_path / name
    write_context(directory, files)
    return directory


def test_copy_from_a_named_directory_honours_its_own_dockerignore(tmp_path, root, busybox_image):
    named = _named(tmp_path, {"a.txt": "named a\n", "sub/b.txt": "b\n", "skip.txt": "no\n",
                              ".dockerignore": "skip.txt\n"})
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
COPY --from=src / /src/
COPY --from=src sub/b.txt /b.txt
""", files={"main.txt": "main\n", "a.txt": "main a\n"}, build_contexts=[f"src={named}"])
    assert built.read_text("/src/a.txt") == "named a\n"
    assert built.read_text("/b.txt") == "b\n"
    assert not built.exists("/src/skip.txt")
    assert not built.exists("/src/main.txt")


def test_named_directory_content_is_in_the_cache_key(tmp_path, root, busybox_image):
    named = _named(tmp_path, {"a.txt": "one\n"})
    dockerfile = f"FROM {busybox_image.ref}\nCOPY --from=src a.txt /a.txt\nRUN cat /a.txt > /copy.txt\n"
    first = build_image(tmp_path, root, dockerfile, build_contexts=[f"src={named}"])
    assert first.read_text("/copy.txt") == "one\n"
    (named / "a.txt").write_text("two\n")
    second = build_image(tmp_path, root, dockerfile, build_contexts=[f"src={named}"])
    assert second.read_text("/copy.txt") == "two\n"
    assert second.result.executed_steps >= 2


def test_run_mount_from_a_named_directory(tmp_path, root, busybox_image):
    named = _named(tmp_path, {"data/x.txt": "mounted\n", "hidden": "h", ".dockerignore": "hidden\n"})
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
RUN --mount=from=src,target=/m cat /m/data/x.txt > /x.txt && ls /m > /ls.txt
""", build_contexts=[f"src={named}"])
    assert built.read_text("/x.txt") == "mounted\n"
    assert "hidden" not in built.read_text("/ls.txt").split()


def test_from_a_named_directory_is_its_rootfs_with_an_empty_config(tmp_path, root, busybox_image):
    named = _named(tmp_path, {"etc/app.conf": "conf\n"})
    built = build_image(tmp_path, root, """\
FROM tree
COPY main.txt /main.txt
""", files={"main.txt": "main\n"}, build_contexts=[f"tree={named}"])
    assert built.read_text("/etc/app.conf") == "conf\n"
    assert built.read_text("/main.txt") == "main\n"
    assert "Cmd" not in built.config and "Entrypoint" not in built.config
    assert len(built.manifest["layers"]) == 2


def test_docker_image_context_replaces_an_image_reference(tmp_path, root, busybox_image):
    # `FROM alpine` and `COPY --from=alpine` both mean the named image; the
    # name is matched in its familiar form (docker.io/library/alpine:latest is alpine).
    built = build_image(tmp_path, root, """\
FROM docker.io/library/alpine:latest
COPY --from=alpine /bin/busybox /copied-busybox
RUN busybox echo ran > /ran.txt
""", build_contexts=[f"alpine=docker-image://{busybox_image.ref}"])
    assert built.read_text("/ran.txt") == "ran\n"
    assert built.exists("/copied-busybox")
    assert built.image_config["rootfs"]["diff_ids"][0] == str(busybox_image.diff_ids[0])


def test_named_context_overrides_a_stage_of_the_same_name(tmp_path, root, busybox_image):
    named = _named(tmp_path, {"from-context.txt": "ctx\n"})
    built = build_image(tmp_path, root, f"""\
FROM no-such-registry.invalid/never/pulled AS deps
RUN exit 1

FROM {busybox_image.ref}
COPY --from=deps /from-context.txt /got.txt
""", build_contexts=[f"deps={named}"])
    assert built.read_text("/got.txt") == "ctx\n"


def test_docker_image_scratch_is_the_empty_image(tmp_path, root, busybox_image):
    built = build_image(tmp_path, root, "FROM base\nCOPY main.txt /\n", files={"main.txt": "m\n"},
                        build_contexts=["base=docker-image://scratch"])
    assert built.read_text("/main.txt") == "m\n"
    assert len(built.manifest["layers"]) == 1


@pytest.mark.parametrize("value, message", [
    ("novalue", "expected NAME=VALUE"),
    ("Bad=.", "invalid --build-context name"),
    ("x=/no/such/dir", "not a directory"),
    ("x=https://github.com/org/repo.git", "only a directory, docker-image://REF or oci-layout://PATH"),
    ("x=oci-layout:///no/such/layout", "is not an OCI layout"),
    ("x=docker-image://Bad:tag:tag", "invalid --build-context x=docker-image://"),
])
def test_bad_build_context_values_are_one_error(tmp_path, root, value, message):
    with pytest.raises(BUILD_ERRORS) as err:
        build_image(tmp_path, root, "FROM scratch\n", build_contexts=[value])
    assert message in str(err.value)


def test_add_host_lines_follow_the_defaults_and_change_the_key(tmp_path, root, busybox_image):
    dockerfile = f"FROM {busybox_image.ref}\nRUN cat /etc/hosts > /hosts.txt\n"
    plain = build_image(tmp_path, root, dockerfile)
    added = build_image(tmp_path, root, dockerfile, add_hosts=["db.local:10.1.2.3", "v6host=[fd00::1]"])
    assert "db.local" not in plain.read_text("/hosts.txt")
    lines = added.read_text("/hosts.txt").splitlines()
    assert lines[:2] == plain.read_text("/hosts.txt").splitlines()[:2]
    assert lines[-2:] == ["10.1.2.3\tdb.local", "fd00::1\tv6host"]
    assert added.result.executed_steps == 1  # ExtraHosts are part of the exec op, so of its key


@pytest.mark.parametrize("value, message", [
    ("gw:host-gateway", "host-gateway"),
    ("nohost", "expected HOST:IP"),
    ("h:999.1.1.1", "is not an IP address"),
])
def test_bad_add_host_values_are_one_error(tmp_path, root, value, message):
    with pytest.raises(BUILD_ERRORS) as err:
        build_image(tmp_path, root, "FROM scratch\n", add_hosts=[value])
    assert message in str(err.value)


def test_oci_layout_context_by_tag_and_by_digest(tmp_path, root, busybox_image):
    dockerfile = "FROM base\nRUN echo from-layout > /ran.txt\n"
    layout = busybox_image.layout
    # A root of its own: every blob must come from the layout, none from a registry.
    fresh = tmp_path / "fresh-root"
    by_tag = build_image(tmp_path, fresh, dockerfile, build_contexts=[f"base=oci-layout://{layout}:latest"])
    assert by_tag.read_text("/ran.txt") == "from-layout\n"
    assert by_tag.image_config["rootfs"]["diff_ids"][0] == str(busybox_image.diff_ids[0])
    by_digest = build_image(tmp_path, fresh, dockerfile,
                            build_contexts=[f"base=oci-layout://{layout}@{busybox_image.digest}"])
    assert by_digest.result.image_id == by_tag.result.image_id


def test_oci_layout_without_the_tag_is_one_error(tmp_path, root, busybox_image):
    with pytest.raises(BUILD_ERRORS) as err:
        build_image(tmp_path, root, "FROM base\n",
                    build_contexts=[f"base=oci-layout://{busybox_image.layout}:nosuchtag"])
    assert "has no image tagged 'nosuchtag'" in str(err.value)
