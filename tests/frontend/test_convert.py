"""convert(): ops, env, args, config and history, with a fake resolver
(the algorithm under test is the conversion, not image resolution)."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden import DIGEST, FakeResolver

from frontend import DockerfileError, convert
from frontend.ops import (
    ContextSource,
    Exec,
    FileCopy,
    GitSource,
    HttpSource,
    ImageSource,
    MakeDir,
    MountType,
    NetworkMode,
    Platform,
    Scratch,
    Sharing,
    WriteFiles,
)

PATH = "PATH=/usr/bin:/bin"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INVALID = Path(__file__).parents[2] / "testdata" / "frontend" / "invalid"


def build(text: str, resolver: FakeResolver | None = None, **kwargs):
    resolver = resolver or FakeResolver()
    return convert(text, resolve_image=resolver, **kwargs), resolver


def chain(definition):
    """Ops from the target down its inputs[0] to the base, base first."""
    ops = []
    vertex = definition.target
    while True:
        op = definition.op(vertex)
        ops.append(op)
        if not op.inputs:
            return ops[::-1]
        vertex = op.inputs[0]


def created_by(definition):
    return [h.created_by for h in definition.image.history]


def layers_match_history(definition, base_entries: int):
    fs_ops = [op for op in chain(definition) if op.inputs]
    layered = [h for h in definition.image.history[base_entries:] if not h.empty_layer]
    return len(fs_ops) == len(layered)


# -- stages and targets ------------------------------------------------------


def test_target_resolves_only_needed_stages():
    d, resolver = build(
        "FROM alpine AS unused\nRUN no\n"
        "FROM busybox AS build\nRUN make\n"
        "FROM debian AS final\nCOPY --from=build /out /out\n",
    )
    assert [ref for ref, _ in resolver.calls] == ["busybox", "debian"]
    ops = [d.op(v) for v in d.graph.nodes]
    assert not any(isinstance(op, Exec) and op.args[-1] == "no" for op in ops)
    copy = d.op(d.target)
    assert isinstance(copy, FileCopy)
    assert copy.sources == ("/out",) and copy.dest == "/out"
    build_run = d.op(copy.inputs[1])
    assert isinstance(build_run, Exec) and build_run.args == ("/bin/sh", "-c", "make")
    assert d.metadata[copy.inputs[1]].name == "[build 2/2] RUN make"
    assert d.metadata[d.target].name == "[final 2/2] COPY --from=build /out /out"
    assert d.metadata[d.target].location.start == 6


def test_explicit_target_and_pinned_refs():
    d, resolver = build("FROM busybox AS a\nRUN a\nFROM alpine AS b\nRUN b\n", target="A")
    assert [ref for ref, _ in resolver.calls] == ["busybox"]
    base = chain(d)[0]
    assert base == ImageSource(ref=f"docker.io/library/busybox:latest@{DIGEST}", platform=Platform())
    assert d.image.base.ref == "docker.io/library/busybox:latest"


def test_build_arg_used_only_in_from_is_consumed():
    d, resolver = build("ARG BASE=alpine\nFROM $BASE\n", build_args={"BASE": "busybox"})
    assert resolver.calls[0][0] == "busybox"
    assert d.unused_build_args == ()


def test_unknown_target():
    with pytest.raises(DockerfileError, match='target stage "nope" could not be found'):
        build("FROM busybox AS a\n", target="nope")


def test_from_stage_continues_config_and_history():
    d, _ = build("FROM busybox AS base\nENV A=1\nRUN one\nFROM base\nRUN two\n")
    assert created_by(d) == [
        "/bin/sh -c #(nop) ADD file:1 in /",
        "ENV A=1",
        "RUN /bin/sh -c one # buildkit",
        "RUN /bin/sh -c two # buildkit",
    ]
    assert layers_match_history(d, 1)
    assert d.op(d.target).env == (PATH, "A=1")
    assert d.image.config["config"]["Env"] == [PATH, "A=1"]


def test_scratch_and_single_stage_names():
    d, resolver = build("FROM scratch\nCOPY a /a\n")
    assert resolver.calls == []
    assert isinstance(chain(d)[0], Scratch)
    assert d.metadata[d.target].name == "[1/1] COPY a /a"
    assert d.image.config == {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [DEFAULT_PATH], "WorkingDir": "/"},
    }
    assert d.image.base is None
    assert isinstance(d.op(d.op(d.target).inputs[1]), ContextSource)


def test_platform_flag_and_platform_args():
    d, resolver = build(
        "ARG TARGETARCH\nFROM --platform=$BUILDPLATFORM busybox\nARG TARGETARCH\nRUN echo $TARGETARCH\n",
        platform=Platform(architecture="arm64"),
        build_platform=Platform(architecture="amd64"),
    )
    assert resolver.calls[0][1] == Platform(architecture="amd64")
    run = d.op(d.target)
    assert "TARGETARCH=arm64" in run.env
    assert created_by(d)[-1] == "RUN |1 TARGETARCH=arm64 /bin/sh -c echo $TARGETARCH # buildkit"


# -- ARG scoping ---------------------------------------------------------------


def test_arg_scoping():
    d, resolver = build(
        "ARG BASE=busybox\nARG V=global\n"
        "FROM ${BASE}:1.36\n"
        "RUN echo no-arg-yet\n"
        "ARG V\nARG LOCAL=local-$V\nARG EMPTY\n"
        "RUN echo $V $LOCAL\n",
        build_args={"V": "cli", "UNUSED": "x", "http_proxy": "http://proxy:3128"},
    )
    assert resolver.calls[0][0] == "busybox:1.36"
    first, second = [op for op in chain(d) if isinstance(op, Exec)]
    assert first.env == (PATH, "http_proxy=http://proxy:3128")
    assert second.env == (PATH, "V=cli", "LOCAL=local-cli", "http_proxy=http://proxy:3128")
    # build args reach RUN, never the image
    assert d.image.config["config"]["Env"] == [PATH]
    assert created_by(d)[1:] == [
        "RUN /bin/sh -c echo no-arg-yet # buildkit",
        "ARG V",  # the Dockerfile's default (none), not --build-arg's value (docker 26)
        "ARG LOCAL=local-cli",
        "ARG EMPTY",
        "RUN |3 V=cli LOCAL=local-cli EMPTY= /bin/sh -c echo $V $LOCAL # buildkit",
    ]
    assert d.unused_build_args == ("UNUSED",)


def test_arg_does_not_cross_stages_but_env_wins():
    d, _ = build("FROM busybox AS a\nARG X=1\nFROM busybox\nRUN echo $X\nENV Y=env\nARG Y=arg\nRUN y\n")
    first, second = [op for op in chain(d) if isinstance(op, Exec)]
    assert not any(e.startswith("X=") for e in first.env)
    # BuildKit: a later ARG default replaces the value in the RUN environment
    assert "Y=arg" in second.env
    assert d.image.config["config"]["Env"] == [PATH, "Y=env"]


def test_env_expansion_uses_values_before_the_instruction():
    d, _ = build("FROM busybox\nENV A=1\nENV A=2 B=$A\nENV C=${A}-${B} D='$A' E=\"a b\"\n")
    assert d.image.config["config"]["Env"] == [PATH, "A=2", "B=1", "C=2-1", "D=$A", "E=a b"]


def test_env_legacy_form():
    d, _ = build("FROM busybox\nENV GREETING hello   big world\n")
    assert d.image.config["config"]["Env"][-1] == "GREETING=hello   big world"
    assert created_by(d)[-1] == "ENV GREETING=hello   big world"
    assert [w.rule for w in d.warnings] == ["LegacyKeyValueFormat"]


# -- CMD / ENTRYPOINT / SHELL ------------------------------------------------


def test_entrypoint_resets_inherited_cmd():
    d, _ = build('FROM busybox\nENTRYPOINT ["/app"]\n')
    assert "Cmd" not in d.image.config["config"]
    assert d.image.config["config"]["Entrypoint"] == ["/app"]
    d, _ = build('FROM busybox\nCMD ["--help"]\nENTRYPOINT ["/app"]\n')
    assert d.image.config["config"]["Cmd"] == ["--help"]
    assert created_by(d)[1:] == ['CMD ["--help"]', 'ENTRYPOINT ["/app"]']


def test_shell_form_and_shell_instruction():
    d, _ = build('FROM busybox\nCMD echo "hi"\nSHELL ["/bin/bash", "-eu", "-c"]\nRUN echo $0\nENTRYPOINT exec app\n')
    cfg = d.image.config["config"]
    assert cfg["Cmd"] == ["/bin/sh", "-c", 'echo "hi"']
    assert cfg["Shell"] == ["/bin/bash", "-eu", "-c"]
    assert cfg["Entrypoint"] == ["/bin/bash", "-eu", "-c", "exec app"]
    assert d.op(d.target).args == ("/bin/bash", "-eu", "-c", "echo $0")
    assert created_by(d)[1:] == [
        'CMD ["/bin/sh" "-c" "echo \\"hi\\""]',
        "SHELL [/bin/bash -eu -c]",
        "RUN /bin/bash -eu -c echo $0 # buildkit",
        'ENTRYPOINT ["/bin/bash" "-eu" "-c" "exec app"]',
    ]
    rules = sorted(w.rule for w in d.warnings)
    assert rules == ["JSONArgsRecommended"]  # CMD before SHELL; ENTRYPOINT after SHELL is fine


def test_exec_form_run():
    d, _ = build('FROM busybox\nRUN ["echo", "$HOME"]\n')
    assert d.op(d.target).args == ("echo", "$HOME")


# -- metadata instructions ------------------------------------------------------


@pytest.mark.parametrize("spec, message", [
    ("80/foo", "Invalid proto: foo"),
    ("80/", 'invalid port specification: "80/"'),
    ("http", "Invalid containerPort: http"),
])
def test_expose_rejects_what_docker_rejects(spec, message):
    with pytest.raises(DockerfileError) as err:
        build(f"FROM busybox\nEXPOSE 80/udp {spec}\n")
    assert err.value.location.start == 2 and message in str(err.value)


def test_expose_takes_each_protocol_in_any_case():
    d, _ = build("FROM busybox\nEXPOSE 53/UDP 9/sctp 80\n")
    assert d.image.config["config"]["ExposedPorts"] == {"53/udp": {}, "9/sctp": {}, "80/tcp": {}}


def test_metadata_instructions():
    d, _ = build(
        "FROM busybox\n"
        "ENV PORT=8080\n"
        "EXPOSE $PORT 443/udp 7000-7001\n"
        "VOLUME /data [\"/logs\"]\n"
        "VOLUME [\"/cache\"]\n"
        'LABEL org.opencontainers.image.title="My App" version=1\n'
        "STOPSIGNAL SIGTERM\n"
        "USER app:app\n"
        "MAINTAINER someone\n"
        "HEALTHCHECK --interval=30s --timeout=1m30s --retries=3 CMD wget -q localhost:$PORT\n"
        "ONBUILD RUN echo child\n"
    )
    cfg = d.image.config["config"]
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "443/udp": {}, "7000/tcp": {}, "7001/tcp": {}}
    assert cfg["Volumes"] == {"/data": {}, "[/logs]": {}, "/cache": {}}  # quotes removed by expansion
    assert cfg["Labels"] == {"org.opencontainers.image.title": "My App", "version": "1"}
    assert cfg["StopSignal"] == "SIGTERM"
    assert cfg["User"] == "app:app"
    assert cfg["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q localhost:$PORT"],
        "Interval": 30_000_000_000,
        "Timeout": 90_000_000_000,
        "Retries": 3,
    }
    assert cfg["OnBuild"] == ["RUN echo child"]
    assert d.image.config["author"] == "someone"
    assert created_by(d)[1:] == [
        "ENV PORT=8080",
        "EXPOSE map[443/udp:{} 7000/tcp:{} 7001/tcp:{} 8080/tcp:{}]",
        "VOLUME [/data [/logs]]",
        "VOLUME [/cache]",
        "LABEL org.opencontainers.image.title=My App version=1",
        "STOPSIGNAL SIGTERM",
        "USER app:app",
        "MAINTAINER someone",
        # docker 26's %q of the config: Retries is printed as a rune
        """HEALTHCHECK &{["CMD-SHELL" "wget -q localhost:$PORT"] "30s" "1m30s" "0s" "0s" '\\x03'}""",
    ]
    assert all(h.empty_layer for h in d.image.history[1:])
    assert isinstance(d.op(d.target), ImageSource)


def test_healthcheck_none():
    d, _ = build("FROM busybox\nHEALTHCHECK NONE\n")
    assert d.image.config["config"]["Healthcheck"] == {"Test": ["NONE"]}


# -- filesystem instructions -------------------------------------------------------


def test_workdir_copy_dest_and_user():
    d, _ = build(
        "FROM busybox\nUSER 1000\nWORKDIR /app\nWORKDIR src\nCOPY --chown=1000:1000 --chmod=644 a b ./\n"
        "ADD archive.tar.gz sub/\nWORKDIR /\n"
    )
    ops = chain(d)
    assert ops[1] == MakeDir(inputs=(ops[0].vertex_id,), path="/app", user="1000")
    assert ops[2].path == "/app/src"
    copy, add = ops[3], ops[4]
    assert (copy.sources, copy.dest, copy.chown, copy.chmod, copy.unpack) == (
        ("/a", "/b"), "/app/src/", "1000:1000", "644", False)  # fmt: skip
    assert (add.sources, add.dest, add.unpack) == (("/archive.tar.gz",), "/app/src/sub/", True)
    assert d.image.config["config"]["WorkingDir"] == "/"
    assert created_by(d)[1:] == [
        "USER 1000",
        "WORKDIR /app",
        "WORKDIR /app/src",
        "COPY --chown=1000:1000 --chmod=644 a b ./ # buildkit",
        "ADD archive.tar.gz sub/ # buildkit",
        "WORKDIR /",
    ]
    assert [h.empty_layer for h in d.image.history[1:]] == [True, False, False, False, False, True]
    assert layers_match_history(d, 1)


def test_copy_flags_and_excludes():
    d, _ = build("FROM busybox\nCOPY --link --parents --exclude=*.md --exclude=x ./a/./b /dst/\n",
                 excludes=("node_modules",))  # fmt: skip
    op = d.op(d.target)
    assert op.link and op.parents and op.excludes == ("*.md", "x")
    assert d.op(op.inputs[1]) == ContextSource(excludes=("node_modules",))
    assert created_by(d)[-1] == "COPY --parents ./a/./b /dst/ # buildkit"


def test_add_remote_sources():
    d, _ = build("FROM busybox\nADD --checksum=sha256:abc https://example.com/dl/tool.tgz /opt/\n")
    op = d.op(d.target)
    assert d.op(op.inputs[1]) == HttpSource(url="https://example.com/dl/tool.tgz", checksum="sha256:abc",
                                            filename="tool.tgz")  # fmt: skip
    assert op.sources == ("/tool.tgz",) and not op.unpack
    d, _ = build("FROM busybox\nADD --keep-git-dir https://github.com/moby/buildkit.git#v0.13 /src\n")
    op = d.op(d.target)
    assert d.op(op.inputs[1]) == GitSource(remote="https://github.com/moby/buildkit.git", ref="v0.13",
                                           keep_git_dir=True)  # fmt: skip


def test_run_flags_and_mounts():
    d, resolver = build(
        "FROM busybox AS deps\nRUN fetch\n"
        "FROM busybox\nWORKDIR /w\n"
        "RUN --network=none --security=insecure "
        "--mount=type=cache,target=/root/.cache,sharing=locked,id=pip "
        "--mount=type=bind,from=deps,source=/out,target=/deps "
        "--mount=type=bind,target=ctx,rw "
        "--mount=type=secret,id=token,required "
        "--mount=type=tmpfs,target=/tmp,size=64m "
        "--mount=type=bind,from=alpine:3,target=/alp "
        "make\n"
    )
    run = d.op(d.target)
    assert run.network == NetworkMode.NONE and run.security == "insecure" and run.cwd == "/w"
    cache, dep, ctx, secret, tmpfs, image = run.mounts
    assert (cache.type, cache.target, cache.cache_id, cache.sharing, cache.readonly, cache.input) == (
        MountType.CACHE, "/root/.cache", "pip", Sharing.LOCKED, False, None)  # fmt: skip
    assert isinstance(d.op(run.inputs[dep.input]), Exec)
    assert (dep.source, dep.target, dep.readonly) == ("/out", "/deps", True)
    assert isinstance(d.op(run.inputs[ctx.input]), ContextSource)
    assert (ctx.target, ctx.readonly) == ("/w/ctx", False)
    assert (secret.type, secret.secret_id, secret.target, secret.required) == (
        MountType.SECRET, "token", "/run/secrets/token", True)  # fmt: skip
    assert (tmpfs.type, tmpfs.size) == (MountType.TMPFS, 64 * 1024 * 1024)
    assert d.op(run.inputs[image.input]).ref.startswith("docker.io/library/alpine:latest@")
    assert [ref for ref, _ in resolver.calls] == ["busybox", "alpine:3"]


# -- heredocs -------------------------------------------------------------------------


def test_heredocs():
    d, _ = build(
        "FROM busybox\nENV NAME=world\n"
        "RUN <<EOF\necho hello\necho $NAME\nEOF\n"
        "RUN <<-EOF\n\techo tabs\n\tEOF\n"
        "RUN <<EOF\n#!/usr/bin/env python3\nprint('hi')\nEOF\n"
        "RUN python3 <<EOF > /out\nprint(1)\nEOF\n"
        "COPY <<EOF /etc/greeting\nhello $NAME\nEOF\n"
        "COPY <<'EOF' <<-EOT /dir/\n$NAME\nEOF\n\t$NAME\n\tEOT\n"
    )
    ops = chain(d)
    simple, chomped, shebang, piped, copy1, copy2 = ops[1:]
    assert simple.args == ("/bin/sh", "-c", "echo hello\necho $NAME\n")
    assert chomped.args == ("/bin/sh", "-c", "echo tabs\n")
    assert shebang.args == ("/bin/sh", "-c", "/dev/pipes/EOF")
    (mount,) = shebang.mounts
    script = d.op(shebang.inputs[mount.input])
    assert isinstance(script, WriteFiles) and script.chmod == "0755"
    assert script.files[0].content == b"#!/usr/bin/env python3\nprint('hi')\n"
    assert (mount.target, mount.readonly) == ("/dev/pipes/", True)
    assert piped.args == ("/bin/sh", "-c", "python3 <<EOF > /out\nprint(1)\nEOF")
    assert [(f.name, f.content) for f in copy1.files] == [("EOF", b"hello world\n")]
    assert copy1.dest == "/etc/greeting"
    assert [(f.name, f.content) for f in copy2.files] == [("EOF", b"$NAME\n"), ("EOT", b"world\n")]
    assert created_by(d)[-2:] == ["COPY <<EOF /etc/greeting # buildkit", "COPY <<EOF <<EOT /dir/ # buildkit"]
    assert d.metadata[simple.vertex_id].name == "[2/7] RUN <<EOF (echo hello...)"
    assert layers_match_history(d, 1)


# -- ONBUILD ---------------------------------------------------------------------------


def test_onbuild_triggers_from_base_image():
    resolver = FakeResolver({"parent": {"Env": [PATH], "OnBuild": ["COPY . /app", "RUN make -C /app"]}})
    d, _ = build("FROM parent\nRUN after\n", resolver)
    ops = chain(d)
    assert [type(op).__name__ for op in ops] == ["ImageSource", "FileCopy", "Exec", "Exec"]
    assert "OnBuild" not in d.image.config["config"]
    assert created_by(d)[1:] == ["COPY . /app # buildkit", "RUN /bin/sh -c make -C /app # buildkit",
                                 "RUN /bin/sh -c after # buildkit"]  # fmt: skip
    assert d.metadata[ops[1].vertex_id].name == "[2/4] ONBUILD COPY . /app"
    assert d.metadata[ops[1].vertex_id].location.start == 1


def test_onbuild_triggers_from_base_stage():
    d, _ = build("FROM busybox AS base\nONBUILD RUN echo trigger\nFROM base\nRUN after\n")
    args = [op.args[-1] for op in chain(d) if isinstance(op, Exec)]
    assert args == ["echo trigger", "after"]
    assert "OnBuild" not in d.image.config["config"]


def test_onbuild_trigger_adding_a_stage_dependency():
    resolver = FakeResolver({"parent": {"OnBuild": ["COPY --from=tools /bin/tool /usr/bin/"]}})
    d, _ = build("FROM alpine AS tools\nRUN build-tool\nFROM parent\n", resolver)
    copy = d.op(d.target)
    assert isinstance(d.op(copy.inputs[1]), Exec)


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(p.name for p in INVALID.iterdir()))
def test_invalid_corpus(case):
    text = (INVALID / case / "Dockerfile").read_text()
    expected = (INVALID / case / "error.txt").read_text().strip()
    with pytest.raises(DockerfileError) as err:
        build(text)
    assert str(err.value) == expected
    assert err.value.location is not None or expected.startswith("target")


def test_error_location_spans_continuation_lines():
    with pytest.raises(DockerfileError) as err:
        build("FROM busybox\nRUN --bogus \\\n  make\n", path="sub/Dockerfile.dev")
    loc = err.value.location
    assert (loc.path, loc.start, loc.end) == ("sub/Dockerfile.dev", 2, 3)
    assert str(err.value) == "sub/Dockerfile.dev:2: unknown flag: bogus"


def test_empty_dockerfile():
    # BuildKit: "cannot be empty" only for 0 bytes; blank lines are the
    # parser's "file with no instructions".
    with pytest.raises(DockerfileError, match="cannot be empty"):
        build("")
    with pytest.raises(DockerfileError, match="file with no instructions"):
        build("\n\n")
    with pytest.raises(DockerfileError, match="no stages"):
        build("ARG A=1\n")
