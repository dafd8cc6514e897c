"""Build checks: each rule, and the `# check=` directive."""

from __future__ import annotations

import pytest
from golden import FakeResolver

from frontend import DockerfileError, convert
from frontend.check import check
from frontend.lint import CheckConfig


def rules(text: str, **kwargs) -> list[tuple[str, int]]:
    return [(w.rule, w.location.start) for w in check(text, **kwargs)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("FROM busybox\nrun a\nRUN b\nRUN c\n", [("ConsistentInstructionCasing", 2)]),
        ("FROM busybox as build\n", [("FromAsCasing", 1)]),
        ("FROM busybox AS Build\n", [("StageNameCasing", 1)]),
        ("FROM busybox AS a\nFROM busybox AS a\n", [("DuplicateStageName", 2)]),
        ("FROM busybox AS scratch\n", [("ReservedStageName", 1)]),
        ("FROM busybox\nCOPY $NOPE /x\n", [("UndefinedVar", 2)]),
        ("FROM busybox\nARG X\nCOPY $X /x\n", []),
        ("FROM busybox${TAG}\n", [("UndefinedArgInFrom", 1)]),
        ("ARG TAG\nFROM busybox${TAG}\n", []),
        ("FROM busybox\nCMD echo hi\n", [("JSONArgsRecommended", 2)]),
        ("FROM busybox\nENV API_TOKEN=x\nARG PUBLIC_KEY=y\n", [("SecretsUsedInArgOrEnv", 2)]),
        ("FROM busybox\nWORKDIR app\nWORKDIR sub\n", [("WorkdirRelativePath", 2)]),
        ("FROM busybox\nENV A b\n", [("LegacyKeyValueFormat", 2)]),
        ("FROM busybox\nMAINTAINER me\n", [("MaintainerDeprecated", 2)]),
        ('FROM busybox\nCMD ["a"]\nCMD ["b"]\n', [("MultipleInstructionsDisallowed", 2)]),
        ("FROM busybox\nEXPOSE 127.0.0.1:80:80\n", [("ExposeInvalidFormat", 2)]),
        ("FROM busybox\nEXPOSE :80\n", []),  # an empty host port is no mapping
        ("FROM busybox\nEXPOSE 80/TCP\n", [("ExposeProtoCasing", 2)]),
        ("FROM busybox\nEXPOSE 80/tcp 53/udp 8080\n", []),
        ("FROM --platform=linux/amd64 busybox\n", [("FromPlatformFlagConstDisallowed", 1)]),
        ("FROM --platform=linux/amd64 busybox AS build-amd64\n", []),
        ("FROM --platform=linux/arm64 busybox AS linux\n", []),
        ("FROM --platform=$BUILDPLATFORM busybox\n", []),
        ("FROM --platform=${TARGETPLATFORM} busybox\n", [("RedundantTargetPlatform", 1)]),
        ("FROM --platform=$TARGETPLATFORM busybox\n", [("RedundantTargetPlatform", 1)]),
        ("FROM --platform=${TARGETPLATFORM%/*} busybox\n", []),  # not the target platform's value
        ("FROM --platform=${NOPE:-linux/arm64} busybox\n", [("UndefinedArgInFrom", 1)]),
        ("FROM busybox\nRUN a \\\n\n  b\n", [("NoEmptyContinuation", 3)]),
    ],
)
def test_rules(text, expected):
    assert rules(text) == expected


def test_messages():
    warnings = check("FROM busybox as Build\nCOPY $NAMEX /x\nENV NAME=1\nCMD x\n")
    messages = {w.rule: w.message for w in warnings}
    assert messages["FromAsCasing"] == "'as' and 'FROM' keywords' casing do not match"
    assert messages["StageNameCasing"] == "Stage name 'Build' should be lowercase"
    assert messages["UndefinedVar"] == "Usage of undefined variable '$NAMEX'"
    assert messages["JSONArgsRecommended"] == (
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"
    )
    warnings = check("FROM busybox\nENV NAME=1\nCOPY $NAMX /x\n")
    assert warnings[0].message == "Usage of undefined variable '$NAMX' (did you mean $NAME?)"


def test_invalid_default_arg_in_from():
    # The build arg makes the build valid; the ARG defaults alone do not.
    warnings = check("ARG TAG\nFROM busybox:${TAG}\n", build_args={"TAG": "1.36"})
    assert [(w.rule, w.location.start, w.message) for w in warnings] == [
        ("InvalidDefaultArgInFrom", 2,
         "Default value for ARG busybox:${TAG} results in empty or invalid base image name"),
    ]  # fmt: skip
    warnings = check("ARG IMAGE\nFROM $IMAGE\n", build_args={"IMAGE": "busybox"})
    assert [w.message for w in warnings] == ["Default value for ARG $IMAGE results in empty or invalid base image name"]


@pytest.mark.parametrize(
    "text",
    [
        "ARG TAG=latest\nFROM busybox:${TAG}\n",
        "ARG VARIANT\nFROM busybox:stable${VARIANT}\n",
        "ARG TAG\nFROM alpine:${TAG:-3.14}\n",
        # A default that cannot be expanded ends the check; the build uses TAG.
        "ARG TAG=${NEVER:?unset}\nFROM busybox:${TAG}\n",
    ],
)
def test_invalid_default_arg_in_from_quiet(text):
    assert rules(text, build_args={"TAG": "1.36", "VARIANT": "-musl"}) == []


def test_invalid_default_arg_in_from_checks_every_stage():
    text = "ARG IMAGE\nFROM busybox AS a\nFROM $IMAGE AS b\n"
    assert rules(text, target="a", build_args={"IMAGE": "busybox"}) == [("InvalidDefaultArgInFrom", 3)]


def test_from_platform_messages():
    text = "FROM --platform=linux/amd64 busybox AS a\nFROM --platform=${TARGETPLATFORM} busybox AS b\n"
    assert [(w.rule, w.location.start, w.message) for w in check(text)] == [
        ("FromPlatformFlagConstDisallowed", 1, 'FROM --platform flag should not use constant value "linux/amd64"'),
        ("RedundantTargetPlatform", 2,
         "Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as this is the default behavior"),
    ]  # fmt: skip


def test_expose_rules_judge_each_expanded_port():
    text = "FROM busybox\nARG PORTS=\"127.0.0.1:80:80 53/UDP\"\nEXPOSE $PORTS 443/TcP\n"
    assert [(w.rule, w.location.start, w.message) for w in check(text)] == [
        ("ExposeInvalidFormat", 3,
         "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'"),
        ("ExposeProtoCasing", 3, "Defined protocol '53/UDP' in EXPOSE instruction should be lowercase"),
        ("ExposeProtoCasing", 3, "Defined protocol '443/TcP' in EXPOSE instruction should be lowercase"),
    ]  # fmt: skip


def test_expose_rules_skip_stages_a_build_does_not_dispatch():
    text = "FROM busybox AS a\nEXPOSE 80/TCP 127.0.0.1:81:81\nFROM busybox\n"
    assert convert(text, resolve_image=FakeResolver()).warnings == ()
    assert rules(text) == [("ExposeInvalidFormat", 2), ("ExposeProtoCasing", 2)]  # ports sorted, as BuildKit


def test_all_stages_are_checked_without_target():
    text = "FROM busybox AS a\nCMD x\nFROM busybox AS b\nRUN y\n"
    assert rules(text) == [("JSONArgsRecommended", 2)]
    assert rules(text, target="b") == []


def test_skip_and_error_directives():
    assert rules("# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM busybox\nCMD x\nMAINTAINER m\n") == []
    assert rules("# check=skip=all\nFROM busybox\nCMD x\n") == []
    text = "# check=error=true\nFROM busybox\nCMD x\n"
    assert rules(text) == [("JSONArgsRecommended", 3)]
    with pytest.raises(DockerfileError, match="lint violation found for rules: JSONArgsRecommended"):
        convert(text, resolve_image=FakeResolver())


def test_skip_directive_silences_the_from_and_expose_rules():
    text = ("ARG TAG\nFROM --platform=linux/amd64 busybox:${TAG} AS a\n"
            "FROM --platform=$TARGETPLATFORM busybox\nEXPOSE 80/TCP\n")  # fmt: skip
    new_rules = ["InvalidDefaultArgInFrom", "FromPlatformFlagConstDisallowed", "RedundantTargetPlatform",
                 "ExposeProtoCasing"]  # fmt: skip
    assert [rule for rule, _ in rules(text, build_args={"TAG": "1"})] == new_rules
    skipped = f"# check=skip={','.join(new_rules)}\n" + text
    assert rules(skipped, build_args={"TAG": "1"}) == []
    with pytest.raises(DockerfileError, match="lint violation found for rules: ExposeProtoCasing"):
        convert("# check=error=true\nFROM busybox\nEXPOSE 80/TCP\n", resolve_image=FakeResolver())


def test_copy_ignored_file_is_experimental():
    text = "FROM busybox\nCOPY secret.txt /\n"
    assert rules(text, excludes=("secret.txt",)) == []
    text = "# check=experimental=CopyIgnoredFile\n" + text
    warnings = check(text, excludes=("secret.txt",))
    assert [(w.rule, w.message) for w in warnings] == [
        ("CopyIgnoredFile", 'Attempting to Copy file "secret.txt" that is excluded by .dockerignore')
    ]


def test_config_parsing():
    config = CheckConfig.parse("skip=A, B;error=true;experimental=all")
    assert config.skip == {"A", "B"} and config.error and config.experimental_all
    assert not config.enabled("A") and config.enabled("C") and config.enabled("CopyIgnoredFile")


def test_convert_reports_warnings():
    d = convert("FROM busybox\nCMD x\n", resolve_image=FakeResolver())
    assert [w.rule for w in d.warnings] == ["JSONArgsRecommended"]
    assert str(d.warnings[0]).startswith("Dockerfile:2: [JSONArgsRecommended]")
