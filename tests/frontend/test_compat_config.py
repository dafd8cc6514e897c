"""Image config and history as current BuildKit writes them, where a
differential run against docker's BuildKit found pybuild apart.

Each expectation names its source: moby/buildkit
frontend/dockerfile/dockerfile2llb (convert.go, convert_expose.go),
util/system/path.go, moby/docker-image-spec specs-go/v1/image.go; the
ones old docker 20.10 agrees with were also checked against it.
"""

from __future__ import annotations

from golden import DIGEST, FakeResolver

from frontend import convert
from frontend.definition import ResolvedImage
from frontend.ops import Exec, MakeDir, Platform

AMD64 = Platform(os="linux", architecture="amd64")
ARM64 = Platform(os="linux", architecture="arm64")


def build(text: str, resolver=None, **kwargs):
    return convert(text, resolve_image=resolver or FakeResolver(), **kwargs)


def created_by(definition) -> list[str]:
    return [h.created_by for h in definition.image.history]


def ops_of(definition, kind):
    return [definition.op(v) for v in definition.graph.nodes if isinstance(definition.op(v), kind)]


# -- WORKDIR ---------------------------------------------------------------


def test_absolute_workdir_is_kept_as_written():
    # system.NormalizeWorkdir → NormalizePath(keepSlash=false): an absolute
    # path is returned untouched, a relative one is path.Join'ed (cleaned).
    # docker 20.10 gives the same ("/tmp/./e/", "/x//y", "/b/c").
    d = build("FROM busybox\nWORKDIR /tmp/./e/\nWORKDIR /a/../b\nWORKDIR c/\nWORKDIR /x//y\nRUN pwd\n")
    assert created_by(d)[1:5] == ["WORKDIR /tmp/./e/", "WORKDIR /a/../b", "WORKDIR /b/c", "WORKDIR /x//y"]
    assert d.image.config["config"]["WorkingDir"] == "/x//y"
    # The filesystem ops get the clean path.
    assert sorted(op.path for op in ops_of(d, MakeDir)) == ["/b", "/b/c", "/tmp/e", "/x/y"]
    (run,) = ops_of(d, Exec)
    assert run.cwd == "/x/y"


def test_relative_base_workdir_is_reapplied_to_itself():
    # dispatchStages re-dispatches the base's WorkingDir as a WORKDIR
    # relative to itself: NormalizeWorkdir("app", "app") = "/app/app".
    resolver = FakeResolver({"relative": {"Env": ["PATH=/bin"], "WorkingDir": "app"}})
    d = build("FROM relative\nRUN pwd\n", resolver)
    assert d.image.config["config"]["WorkingDir"] == "/app/app"


# -- CMD / ENTRYPOINT --------------------------------------------------------


def test_bare_entrypoint_is_an_empty_shell_command():
    # parseEntrypoint gives a nil CmdLine with PrependShell; dispatchEntrypoint
    # still calls withShell: ["/bin/sh", "-c", ""] (docker 20.10 agrees).
    d = build("FROM busybox\nENTRYPOINT\n")
    assert d.image.config["config"]["Entrypoint"] == ["/bin/sh", "-c", ""]
    assert "Cmd" not in d.image.config["config"]  # the base's CMD is reset
    assert created_by(d)[-1] == 'ENTRYPOINT ["/bin/sh" "-c" ""]'

    d = build('FROM busybox\nSHELL ["/bin/ash", "-c"]\nENTRYPOINT\n')
    assert d.image.config["config"]["Entrypoint"] == ["/bin/ash", "-c", ""]


def test_empty_exec_forms_are_omitted_from_the_config():
    # ocispec.ImageConfig's Cmd and Entrypoint are `omitempty`: CMD [] and
    # ENTRYPOINT [] leave no key at all (docker 20.10 agrees).
    d = build("FROM busybox\nENTRYPOINT []\nCMD []\n")
    cfg = d.image.config["config"]
    assert "Cmd" not in cfg and "Entrypoint" not in cfg
    assert cfg["ArgsEscaped"] is True
    assert created_by(d)[-2:] == ["ENTRYPOINT []", "CMD []"]


# -- EXPOSE ------------------------------------------------------------------


def test_expose_history_is_the_port_map():
    # BuildKit 0.13 (docker 26, the oracle) prints `EXPOSE %v` of the
    # instruction's map: keys sorted, duplicates gone; docker 26 printed
    # exactly these two lines for this file. Later releases print a list.
    d = build("FROM busybox\nENV P=9000\nEXPOSE 80 $P 80/tcp 7000-7001/udp\nEXPOSE $NOPE\n")
    assert created_by(d)[-2:] == ["EXPOSE map[7000/udp:{} 7001/udp:{} 80/tcp:{} 9000/tcp:{}]", "EXPOSE map[]"]
    assert d.image.config["config"]["ExposedPorts"] == {"80/tcp": {}, "9000/tcp": {}, "7000/udp": {},
                                                        "7001/udp": {}}

    d = build("FROM busybox\nEXPOSE $NOPE\n")
    assert "ExposedPorts" not in d.image.config["config"]  # an empty map is omitempty


# -- the base image's config -------------------------------------------------


def test_base_config_keeps_only_docker_oci_fields():
    # BuildKit decodes the base config into dockerspec.DockerOCIImage and
    # marshals that: a classic-builder base's Hostname, Image, AttachStdin...
    # are dropped, nulls and empty values (all omitempty) left out, and
    # member names match case-insensitively as Go's decoder does.
    classic = {
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "Tty": False,
        "Env": ["PATH=/usr/bin:/bin"], "Cmd": None, "Image": "sha256:" + "c" * 64,
        "Volumes": {"/data": None}, "workingdir": "/srv", "Entrypoint": None, "OnBuild": None,
        "Labels": {}, "Healthcheck": {"Test": ["CMD", "true"], "Interval": 0, "Retries": 0, "Extra": 1},
    }
    d = build("FROM classic\nENV A=1\n", FakeResolver({"classic": classic}))
    assert d.image.config["config"] == {
        "Env": ["PATH=/usr/bin:/bin", "A=1"],
        "Volumes": {"/data": {}},
        "WorkingDir": "/srv",
        "Healthcheck": {"Test": ["CMD", "true"]},
    }


# -- --platform --------------------------------------------------------------


class _Amd64Only(FakeResolver):
    """A single-platform base: whatever platform is asked, its config says amd64."""

    def __call__(self, ref, platform):
        resolved = super().__call__(ref, platform)
        config = dict(resolved.config, architecture="amd64", os="linux", variant="v1")
        return ResolvedImage(ref=resolved.ref, digest=DIGEST, config=config)


def test_explicit_platform_labels_the_image():
    # finalizeResultImage: with an explicit target platform the image gets
    # its os/architecture; the variant is replaced because os/arch changed
    # (docker 20.10 with --platform linux/arm64 on an amd64-only base agrees).
    d = build("FROM busybox\nENV A=1\n", _Amd64Only(), platform=ARM64, build_platform=AMD64,
              explicit_platform=True)
    assert (d.image.config["os"], d.image.config["architecture"]) == ("linux", "arm64")
    assert "variant" not in d.image.config

    arm_v7 = Platform(os="linux", architecture="arm", variant="v7")
    d = build("FROM busybox\n", _Amd64Only(), platform=arm_v7, build_platform=AMD64, explicit_platform=True)
    assert (d.image.config["architecture"], d.image.config["variant"]) == ("arm", "v7")

    # Without --platform (implicit target) the base's platform stays.
    d = build("FROM busybox\n", _Amd64Only(), platform=AMD64, build_platform=AMD64)
    assert (d.image.config["architecture"], d.image.config["variant"]) == ("amd64", "v1")
    # An explicit --platform equal to the host's still relabels a foreign base.
    d = build("FROM --platform=linux/arm64 busybox\n", FakeResolver(), platform=AMD64, build_platform=AMD64,
              explicit_platform=True)
    assert d.image.config["architecture"] == "amd64"
