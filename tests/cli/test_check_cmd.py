"""`pybuild check`: BuildKit's build checks from the command line."""

import base64
import json
import re

from click.testing import CliRunner

from builder.cli import main
from frontend.check import MAX_ERRORS
from frontend.lint import RULES

WARNED = "FROM busybox as base\nMAINTAINER me\nCMD echo hi\n"


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


def test_warnings_are_printed_with_file_and_line_and_exit_0(tmp_path):
    (tmp_path / "Dockerfile").write_text(WARNED)
    result = run("check", str(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Dockerfile:1: [FromAsCasing] 'as' and 'FROM' keywords' casing do not match"
    assert lines[1].startswith("Dockerfile:2: [MaintainerDeprecated] ")
    assert lines[2].startswith("Dockerfile:3: [JSONArgsRecommended] ")
    assert lines[-1] == "Check complete, 3 warnings have been found!"


def test_strict_fails_on_warnings(tmp_path):
    (tmp_path / "Dockerfile").write_text(WARNED)
    assert run("check", "--strict", str(tmp_path)).exit_code == 1


def test_clean_dockerfile_passes_strict(tmp_path):
    (tmp_path / "Dockerfile").write_text('FROM busybox AS base\nCMD ["echo", "hi"]\n')
    result = run("check", "--strict", str(tmp_path))
    assert result.exit_code == 0
    assert result.output == "Check complete, no warnings found.\n"


def test_check_error_directive_fails_like_strict(tmp_path):
    (tmp_path / "app.Dockerfile").write_text("# check=error=true\nFROM busybox as base\n")
    result = run("check", "-f", str(tmp_path / "app.Dockerfile"), str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path / 'app.Dockerfile'}:2: [FromAsCasing]" in result.output


def test_skip_directive_silences_a_rule(tmp_path):
    (tmp_path / "Dockerfile").write_text("# check=skip=FromAsCasing\nFROM busybox as base\n")
    result = run("check", "--strict", str(tmp_path))
    assert result.exit_code == 0, result.output


def test_unparsable_dockerfile_exits_1_with_location(tmp_path):
    result = run("check", "-f", "-", str(tmp_path), input="FROM busybox\nRUNN make\n")
    assert result.exit_code == 1
    assert "ERROR: Dockerfile:2: unknown instruction: RUNN" in result.output
    assert ">>>    2 | RUNN make" in result.output
    assert "Traceback" not in result.output


def test_missing_dockerfile_exits_1(tmp_path):
    result = run("check", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "failed to read dockerfile" in result.output


def test_build_args_reach_the_checks(tmp_path):
    # Without the build arg FROM names no image: an error; with it the
    # Dockerfile converts cleanly.
    (tmp_path / "Dockerfile").write_text('ARG BASE\nFROM $BASE\nCMD ["true"]\n')
    without = run("check", str(tmp_path))
    assert without.exit_code == 1
    assert "Dockerfile:2" in without.output
    # It still warns that the default alone names no image, as BuildKit does.
    given = run("check", "--build-arg", "BASE=busybox:1", str(tmp_path))
    assert given.exit_code == 0, given.output
    assert "InvalidDefaultArgInFrom" in given.output and "UndefinedArgInFrom" not in given.output
    (tmp_path / "Dockerfile").write_text('# check=skip=InvalidDefaultArgInFrom\nARG BASE\nFROM $BASE\nCMD ["true"]\n')
    strict = run("check", "--strict", "--build-arg", "BASE=busybox:1", str(tmp_path))
    assert strict.exit_code == 0, strict.output


def test_warnings_found_before_an_error_are_shown_with_it(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox AS Build\nEXPOSE 80/foo\n")
    result = run("check", str(tmp_path))
    assert result.exit_code == 1
    assert "Dockerfile:1: [StageNameCasing]" in result.output
    assert "Dockerfile:2" in result.output and "Invalid proto: foo" in result.output
    assert "Traceback" not in result.output


# One file with every rule BuildKit checks without pulling an image (the
# two experimental ones turned on by the directive) and five errors, from
# the parser (unknown instruction, unterminated heredoc) and from the
# conversion (EXPOSE proto, --mount key, ONBUILD FROM). BuildKit stops at
# the first error; pybuild check reports them all in one run.
MANY = """\
# check=experimental=CopyIgnoredFile,InvalidDefinitionDescription
ARG IMAGE
ARG TAG
# not a description
FROM busybox as Base
MAINTAINER me
RUNN make
CMD echo hi
CMD echo again
FROM busybox AS base
EXPOSE 80/foo
EXPOSE 127.0.0.1:80:80 53/UDP
from busybox AS scratch
WORKDIR app
ENV A b
ARG API_TOKEN=x
RUN --mount=type=bind,foo=bar true
COPY secret.txt $UNDEFINED /x/
FROM --platform=linux/amd64 busybox${TAGX} AS final
ONBUILD FROM x
FROM --platform=$TARGETPLATFORM $IMAGE AS last
RUN a \\

  b
COPY <<EOT /x
never ends
"""
MANY_WARNINGS = {
    (5, "InvalidDefinitionDescription"), (5, "FromAsCasing"), (5, "StageNameCasing"), (6, "MaintainerDeprecated"),
    (8, "MultipleInstructionsDisallowed"), (8, "JSONArgsRecommended"), (9, "JSONArgsRecommended"),
    (10, "DuplicateStageName"), (12, "ExposeInvalidFormat"), (12, "ExposeProtoCasing"),
    (13, "ConsistentInstructionCasing"), (13, "FromAsCasing"), (13, "ReservedStageName"),
    (14, "WorkdirRelativePath"), (15, "LegacyKeyValueFormat"), (16, "SecretsUsedInArgOrEnv"),
    (18, "UndefinedVar"), (18, "CopyIgnoredFile"), (19, "FromPlatformFlagConstDisallowed"),
    (19, "UndefinedArgInFrom"), (21, "InvalidDefaultArgInFrom"), (21, "RedundantTargetPlatform"),
    (23, "NoEmptyContinuation"),
}  # fmt: skip
MANY_ERRORS = [
    "ERROR: Dockerfile:7: unknown instruction: RUNN (did you mean RUN?)",
    "ERROR: Dockerfile:11: Invalid proto: foo",
    "ERROR: Dockerfile:17: unexpected key 'foo' in 'foo=bar' (did you mean from?)",
    "ERROR: Dockerfile:20: FROM isn't allowed as an ONBUILD trigger",
    "ERROR: Dockerfile:25: unterminated heredoc",
]


def _many(tmp_path):
    (tmp_path / "Dockerfile").write_text(MANY)
    (tmp_path / ".dockerignore").write_text("secret.txt\n")
    return tmp_path


def _warnings(output: str) -> list[tuple[int, str]]:
    found = re.findall(r"^Dockerfile:(\d+): \[(\w+)\] ", output, re.M)
    return [(int(line), rule) for line, rule in found]


def test_every_rule_and_every_error_of_a_file_in_one_run(tmp_path):
    result = run("check", "--build-arg", "IMAGE=busybox", str(_many(tmp_path)))
    assert result.exit_code == 1
    warnings = _warnings(result.output)
    assert set(warnings) == MANY_WARNINGS and len(warnings) == len(MANY_WARNINGS)
    assert warnings == sorted(warnings, key=lambda w: w[0])  # in line order
    assert [line for line in result.output.splitlines() if line.startswith("ERROR: ")] == MANY_ERRORS
    assert " >>>   17 | RUN --mount=type=bind,foo=bar true" in result.output  # each error shows its lines
    assert "Check complete, 5 errors and 23 warnings have been found!" in result.output
    assert "Traceback" not in result.output


def test_an_error_in_a_from_keeps_the_stage_for_what_follows(tmp_path):
    # The stage whose FROM fails is still a stage: the COPY naming it is no
    # error of its own, and the stage after it still has its FROM.
    text = ("FROM --platform=$NOPE busybox AS build\nRUN true\nFROM busybox\n"
            "COPY --from=build /a /b\nCMD [\"a\"]\nHEALTHCHECK --interval=x CMD true\n")  # fmt: skip
    result = run("check", "-f", "-", str(tmp_path), input=text)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("ERROR: ")]
    assert [e.split(":")[2] for e in errors] == ["1", "6"], result.output
    assert "Dockerfile:1: [UndefinedArgInFrom] FROM argument 'NOPE' is not declared" in result.output
    assert "Check complete, 2 errors and 1 warning have been found!" in result.output


def test_a_file_of_one_bad_instruction_has_one_error(tmp_path):
    result = run("check", "-f", "-", str(tmp_path), input="RUNN x\n")
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("ERROR: ")] == [
        "ERROR: Dockerfile:1: unknown instruction: RUNN (did you mean RUN?)"
    ]
    assert "Check complete, 1 error has been found!" in result.output


def test_a_target_that_names_no_stage_is_an_error_with_the_others(tmp_path):
    result = run("check", "--target", "nope", "-f", "-", str(tmp_path), input="FROM busybox AS app\nRUNN x\n")
    assert result.exit_code == 1
    assert "ERROR: Dockerfile:2: unknown instruction: RUNN" in result.output
    assert 'ERROR: target stage "nope" could not be found' in result.output


def test_invalid_definition_description_is_experimental(tmp_path):
    text = ("# STAGE builds\nFROM busybox AS build\n# A the a\nARG A\n# described badly\nARG B C\n"
            "# wrong\n\nARG D\n# build ok\nFROM build AS final\n")  # fmt: skip
    quiet = run("check", "-f", "-", str(tmp_path), input=text)
    assert quiet.exit_code == 0 and "InvalidDefinitionDescription" not in quiet.output
    loud = run("check", "-f", "-", str(tmp_path), input="# check=experimental=all\n" + text)
    assert [line for line in loud.output.splitlines() if "InvalidDefinitionDescription" in line] == [
        "Dockerfile:3: [InvalidDefinitionDescription] Comment for FROM should follow the format: "
        "`# build <description>`",
        "Dockerfile:7: [InvalidDefinitionDescription] Comment for ARG should follow the format: "
        "`# <arg_key> <description>`",
        "Dockerfile:12: [InvalidDefinitionDescription] Comment for FROM should follow the format: "
        "`# final <description>`",
    ]


def test_json_format_is_buildkits_lint_result_with_every_error(tmp_path):
    result = run("check", "--format", "json", "--build-arg", "IMAGE=busybox", str(_many(tmp_path)))
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert list(body) == ["warnings", "sources", "buildError", "buildErrors"]
    assert {(w["location"]["ranges"][0]["start"]["line"], w["ruleName"]) for w in body["warnings"]} == MANY_WARNINGS
    first = body["warnings"][0]
    assert first == {
        "ruleName": "InvalidDefinitionDescription",
        "description": RULES["InvalidDefinitionDescription"],
        "url": "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/",
        "detail": "Comment for FROM should follow the format: `# base <description>`",
        "location": {"ranges": [{"start": {"line": 5}, "end": {"line": 5}}]},
    }
    json_args = next(w for w in body["warnings"] if w["ruleName"] == "JSONArgsRecommended")
    assert json_args["url"] == "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
    assert body["sources"] == [{"filename": "Dockerfile", "data": base64.b64encode(MANY.encode()).decode(),
                                "language": "Dockerfile"}]  # fmt: skip
    assert body["buildError"] == {"message": "unknown instruction: RUNN (did you mean RUN?)",
                                  "location": {"ranges": [{"start": {"line": 7}, "end": {"line": 7}}]}}  # fmt: skip
    assert [(e["location"]["ranges"][0]["start"]["line"]) for e in body["buildErrors"]] == [7, 11, 17, 20, 25]
    assert "`# \\u003carg/stage name\\u003e" in result.stdout  # Go escapes <, > in JSON strings


def test_a_file_of_errors_stops_after_max_errors(tmp_path):
    # Every error costs a conversion of the whole file: a text that is no
    # Dockerfile must not take minutes.
    text = "FROM busybox\n" + "RUNN x\nRUN ok\n" * (MAX_ERRORS + 50)
    result = run("check", "-f", "-", str(tmp_path), input=text)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == MAX_ERRORS and errors[-1].startswith(f"ERROR: Dockerfile:{2 * MAX_ERRORS}: ")
    assert f"Check stopped after {MAX_ERRORS} errors (the rest of the file is not checked)" in result.output


def test_json_of_a_clean_file_has_null_warnings(tmp_path):
    (tmp_path / "Dockerfile").write_text('FROM busybox\nCMD ["true"]\n')
    result = run("check", "--format", "json", str(tmp_path))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"warnings": None, "sources": [
        {"filename": "Dockerfile", "data": base64.b64encode(b'FROM busybox\nCMD ["true"]\n').decode(),
         "language": "Dockerfile"}]}  # fmt: skip


def test_json_locates_a_warning_by_line_and_an_error_by_span(tmp_path):
    # BuildKit: a warning has the instruction's ranges, one per line; the
    # build error's are merged into one (dockerfile2llb mergeLocations).
    (tmp_path / "Dockerfile").write_text("FROM busybox\nMAINTAINER \\\n  me\nRUNN \\\n  x\n")
    body = json.loads(run("check", "--format", "json", str(tmp_path)).stdout)
    assert [(w["ruleName"], w["location"]) for w in body["warnings"]] == [
        ("MaintainerDeprecated", {"ranges": [{"start": {"line": 2}, "end": {"line": 2}},
                                             {"start": {"line": 3}, "end": {"line": 3}}]}),
    ]  # fmt: skip
    assert body["buildError"]["location"] == {"ranges": [{"start": {"line": 4}, "end": {"line": 5}}]}


def test_an_undefined_arg_that_blanks_a_from_is_warned_before_the_error(tmp_path):
    # BuildKit's dockerfile2llb lints the FROM's variables before it refuses
    # the empty name they leave.
    (tmp_path / "Dockerfile").write_text("FROM $NOPE\nRUN true\n")
    result = run("check", str(tmp_path))
    assert result.exit_code == 1
    assert "Dockerfile:1: [UndefinedArgInFrom] FROM argument 'NOPE' is not declared" in result.output
    assert "base name ($NOPE) should not be blank" in result.output
