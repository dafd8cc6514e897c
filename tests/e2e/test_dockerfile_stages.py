"""Issue #3, end to end: stages, --target, ARG scoping and ONBUILD, each a
real build on the busybox base image of the registry fixture."""

from __future__ import annotations

import pytest

from e2e.helpers import BUILD_ERRORS, build_image
from fixtures.busybox import host_arch

pytestmark = pytest.mark.e2e


def test_target_builds_only_the_stages_it_needs(tmp_path, root, busybox_image):
    dockerfile = f"""\
FROM nonexistent.invalid/never/resolved:1 AS unused
RUN exit 1

FROM {busybox_image.ref} AS base
RUN echo base > /base.txt

FROM base AS builder
ARG GREETING=hello
RUN echo "$GREETING from builder" > /artifact

FROM unused AS also-unused
RUN exit 1

FROM {busybox_image.ref} AS final
COPY --from=builder /artifact /artifact
COPY --from=1 /base.txt /from-index.txt
RUN [ "$(cat /artifact)" = "hello from builder" ] && [ "$(cat /from-index.txt)" = base ]
LABEL stage=final

FROM base AS last
RUN exit 1
"""
    built = build_image(tmp_path, root, dockerfile, target="final")
    assert built.read_text("/artifact") == "hello from builder\n"
    assert built.read_text("/from-index.txt") == "base\n"
    assert not built.exists("/base.txt")  # final is not built on base
    assert built.config["Labels"] == {"stage": "final"}
    # base, builder's RUN and the two COPYs and the RUN of final; never the `exit 1`s.
    assert built.result.executed_steps >= 5

    # The default target is the last stage, whose RUN fails.
    with pytest.raises(BUILD_ERRORS, match="exit code: 1"):
        build_image(tmp_path, root, dockerfile, export=False, local=False)
    # A target that is unknown is an error naming it.
    with pytest.raises(BUILD_ERRORS, match='target stage "nope" could not be found'):
        build_image(tmp_path, root, dockerfile, target="nope", export=False, local=False)


def test_arg_scoping(tmp_path, root, busybox_image):
    dockerfile = """\
ARG BASE
ARG SHARED=global-value
ARG GLOBAL_ONLY=never-in-a-stage
ARG OVERRIDDEN=global-default
FROM ${BASE} AS first
ARG SHARED
ARG OVERRIDDEN
ARG STAGE_ARG=stage-default
ARG FROM_CLI=cli-default
ARG TARGETARCH
ARG TARGETOS
ARG TARGETPLATFORM
ARG BUILDPLATFORM
ARG SHADOWED=arg-value
ENV SHADOWED=env-value
RUN set -e; \\
    [ "$SHARED" = global-value ]; \\
    [ -z "${GLOBAL_ONLY+set}" ]; \\
    [ "$OVERRIDDEN" = from-cli ]; \\
    [ "$STAGE_ARG" = stage-default ]; \\
    [ "$FROM_CLI" = "cli value" ]; \\
    [ "$SHADOWED" = env-value ]; \\
    echo "$TARGETOS/$TARGETARCH $TARGETPLATFORM $BUILDPLATFORM" > /platform
ENV FROM_ARG=${STAGE_ARG}

FROM ${BASE}
# ARGs of another stage are not in scope here, and not in any image config.
RUN [ -z "${STAGE_ARG+set}" ] && [ -z "${SHARED+set}" ] && [ -z "${TARGETARCH+set}" ]
COPY --from=first /platform /platform
"""
    args = {"BASE": busybox_image.ref, "OVERRIDDEN": "from-cli", "FROM_CLI": "cli value"}
    built = build_image(tmp_path, root, dockerfile, build_args=args)
    arch = host_arch()
    assert built.read_text("/platform") == f"linux/{arch} linux/{arch} linux/{arch}\n"
    assert "STAGE_ARG" not in built.env and "SHARED" not in built.env

    first = build_image(tmp_path, root, dockerfile, build_args=args, target="first")
    assert first.env["FROM_ARG"] == "stage-default"
    assert first.env["SHADOWED"] == "env-value"
    for name in ("SHARED", "OVERRIDDEN", "STAGE_ARG", "FROM_CLI", "TARGETARCH"):
        assert name not in first.env
    # ARG values are recorded in RUN history, as BuildKit does ("|N K=V ... cmd").
    run_history = [h["created_by"] for h in first.image_config["history"] if h["created_by"].startswith("RUN")]
    assert run_history[0].startswith("RUN |")
    assert "OVERRIDDEN=from-cli" in run_history[0]


def test_onbuild_triggers_run_in_the_child_build(tmp_path, root, busybox_image):
    base_ref = f"{busybox_image.registry.host}/e2e-onbuild-base:1"
    base = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
RUN echo base > /base.txt
ONBUILD COPY trigger.txt /from-trigger.txt
ONBUILD RUN echo "onbuild ran as $(id -un)" > /onbuild-ran
ONBUILD ARG CHILD_ARG=child-default
ONBUILD ENV CHILD_ENV=$CHILD_ARG
""", tags=[base_ref], push=True, local=False)
    assert base.config["OnBuild"] == [
        "COPY trigger.txt /from-trigger.txt",
        'RUN echo "onbuild ran as $(id -un)" > /onbuild-ran',
        "ARG CHILD_ARG=child-default",
        "ENV CHILD_ENV=$CHILD_ARG",
    ]
    assert base_ref in base.result.pushed

    child = build_image(tmp_path, root, f"""\
FROM {base_ref}
RUN [ -f /onbuild-ran ] && [ "$CHILD_ENV" = child-default ]
""", files={"trigger.txt": "from the child's context\n"})
    assert child.read_text("/from-trigger.txt") == "from the child's context\n"
    assert child.read_text("/onbuild-ran") == "onbuild ran as root\n"
    assert child.read_text("/base.txt") == "base\n"
    assert child.env["CHILD_ENV"] == "child-default"
    assert "OnBuild" not in child.config or not child.config["OnBuild"]  # triggers are consumed

    # A stage built on a stage with ONBUILD runs them too; the grandchild does not.
    grandchild = build_image(tmp_path, root, f"""\
FROM {base_ref} AS child
FROM child AS again
RUN [ -f /onbuild-ran ] && echo "no trigger twice" > /again
""", files={"trigger.txt": "x\n"})
    assert grandchild.read_text("/again") == "no trigger twice\n"
