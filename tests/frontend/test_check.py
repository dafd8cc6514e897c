"""Build checks: each rule, and the `# check=` directive."""

from __future__ import annotations

import pytest
from golden import FakeResolver

from frontend import DockerfileError, convert
from frontend.check import CheckConfig, check


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
