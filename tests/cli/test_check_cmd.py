"""`pybuild check`: BuildKit's build checks from the command line."""

from click.testing import CliRunner

from builder.cli import main

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
    assert "Dockerfile:2" in result.output and "invalid proto: foo" in result.output
    assert "Traceback" not in result.output
