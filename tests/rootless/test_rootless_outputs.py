"""Issue 16: an ordinary user's `pybuild` builds testdata/hello into every
output, pushes and pulls (with and without the user's own credentials), and
keeps its state under ~/.local/share/pybuild ($XDG_DATA_HOME respected)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from fixtures.busybox import skopeo_inspect
from rootless_helpers import Archive, docker_archive, tar_names

HELLO = Path(__file__).resolve().parents[2] / "testdata" / "hello"


def test_hello_into_every_output(rootless, busybox_image):
    context = rootless.give(Path(shutil.copytree(HELLO, rootless.home / "hello")))
    out = rootless.mkdir("out")
    rootless.ok("build", "--build-arg", f"BASE={busybox_image.ref}", "-t", "hello:1", "--load",
                "-o", f"type=oci,dest={out / 'hello.oci.tar'}",
                "-o", f"type=docker,dest={out / 'hello.docker.tar'},name=hello:1",
                "-o", f"type=local,dest={out / 'rootfs'}",
                "-o", f"type=tar,dest={out / 'rootfs.tar'}",
                "--metadata-file", str(out / "meta.json"), str(context))
    digest = json.loads((out / "meta.json").read_text())["containerimage.digest"]

    # The store, at the default root of a user (no --root, no PYBUILD_ROOT).
    assert rootless.root.joinpath("content").is_dir()
    assert rootless.root.stat().st_uid == rootless.host.uid
    listed = rootless.ok("images").stdout.decode()
    assert "docker.io/library/hello:1" in listed, listed

    oci = Archive(out / "hello.oci.tar")
    assert oci.top_digest == digest  # the index of the image and its provenance
    assert oci.config["config"]["Cmd"] == ["/app/bin/greet"]
    assert oci.config["config"]["User"] == "appuser"
    greet = oci.layer_entry("app/bin/greet", index=-3)  # COPY --from=build, then COPY and RUN
    assert (greet.uid, greet.gid, greet.mode) == (0, 0, 0o755)

    entry, config, layers = docker_archive(out / "hello.docker.tar")
    assert any(tag.endswith("hello:1") for tag in entry["RepoTags"]), entry
    assert config["rootfs"]["diff_ids"] == oci.config["rootfs"]["diff_ids"]
    assert any(member.name.lstrip("./") == "app/bin/greet" for member in layers[-3])

    rootfs = out / "rootfs"
    assert "hello from pybuild" in (rootfs / "app" / "bin" / "greet").read_text()
    assert (rootfs / "app" / "message.txt").read_text() == (HELLO / "src" / "message.txt").read_text()
    assert "appuser:x:1001" in (rootfs / "etc" / "passwd").read_text()
    # The user's files: the export runs as root of the user's namespace,
    # which is the user outside.
    assert (rootfs / "app" / "bin" / "greet").stat().st_uid == rootless.host.uid

    assert {"app/bin/greet", "app/message.txt", "bin/busybox"} <= tar_names(out / "rootfs.tar")


def test_xdg_data_home_moves_the_default_root(rootless, busybox_image):
    data_home = rootless.home / "data"
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nCOPY a /a\n", {"a": "a\n"})
    info = rootless.ok("info", env={"XDG_DATA_HOME": str(data_home)}).stdout.decode()
    assert f"root:                  {data_home / 'pybuild'}\n" in info, info
    assert "rootless:              yes" in info
    rootless.ok("build", "-t", "xdg:1", str(context), env={"XDG_DATA_HOME": str(data_home)})
    assert (data_home / "pybuild" / "content").is_dir()
    assert not rootless.root.exists()
    # Without it, the same HOME's default: ~/.local/share/pybuild, empty yet.
    listed = rootless.ok("images").stdout.decode()
    assert "xdg:1" not in listed
    assert "xdg:1" in rootless.ok("images", env={"XDG_DATA_HOME": str(data_home)}).stdout.decode()


def test_the_users_config_file_follows_xdg(rootless):
    config = rootless.home / ".config" / "pybuild" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'root = "{rootless.home / "configured"}"\nisolation = "builtin"\n')
    moved = rootless.home / "elsewhere" / "pybuild" / "config.toml"
    moved.parent.mkdir(parents=True)
    moved.write_text('isolation = "oci"\n')
    rootless.give(rootless.home / ".config")
    rootless.give(rootless.home / "elsewhere")
    info = rootless.ok("info").stdout.decode()
    assert f"config file:           {config}\n" in info, info
    assert f"root:                  {rootless.home / 'configured'}\n" in info
    assert "isolation:             builtin\n" in info
    info = rootless.ok("info", env={"XDG_CONFIG_HOME": str(rootless.home / "elsewhere")}).stdout.decode()
    assert f"config file:           {moved}\n" in info, info
    assert f"root:                  {rootless.root}\n" in info
    assert "isolation:             oci\n" in info


def test_push_then_pull_back_as_a_base(rootless, busybox_image, registry):
    name = f"{registry.host}/rootless/base:{uuid.uuid4().hex[:12]}"
    first = rootless.write_context("first", f"FROM {busybox_image.ref}\nRUN echo pushed > /pushed\n")
    rootless.ok("build", "-t", name, "--push", "--metadata-file", str(rootless.home / "meta.json"), str(first))
    digest = json.loads((rootless.home / "meta.json").read_text())["containerimage.digest"]
    assert skopeo_inspect(f"docker://{name}")["Digest"] == digest

    # A root of its own: the base must come from the registry.
    second = rootless.write_context("second", f"FROM {name}\nRUN cat /pushed > /pulled\n")
    rootless.ok("build", "--root", str(rootless.home / "second-root"), "-o",
                f"type=local,dest={rootless.home / 'rootfs'}", str(second))
    assert (rootless.home / "rootfs" / "pulled").read_text() == "pushed\n"


def test_push_and_pull_with_the_users_docker_config(rootless, busybox_image, auth_registry):
    name = f"{auth_registry.host}/rootless/app:{uuid.uuid4().hex[:12]}"
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nRUN echo secret-app > /app\n")
    refused = rootless.run("build", "-t", name, "--push", str(context))
    assert refused.returncode == 1, refused.stderr.decode()

    rootless.ok("login", auth_registry.host, "-u", auth_registry.username, "--password-stdin",
                input=auth_registry.password)
    config = rootless.home / ".docker" / "config.json"
    assert config.stat().st_uid == rootless.host.uid
    assert auth_registry.host in json.loads(config.read_text())["auths"]
    rootless.ok("build", "-t", name, "--push", str(context))

    user_of = rootless.write_context("user-of", f"FROM {name}\nRUN cp /app /copied\n")
    rootless.ok("build", "--root", str(rootless.home / "second-root"), "-o",
                f"type=local,dest={rootless.home / 'rootfs'}", str(user_of))
    assert (rootless.home / "rootfs" / "copied").read_text() == "secret-app\n"
