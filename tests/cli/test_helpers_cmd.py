"""version, info, completion, --help, and usage errors."""

import subprocess

import pytest
from click.testing import CliRunner

from builder.cli import main
from cli_helpers import PYBUILD
from fixtures.pybuild import pybuild_env

COMMANDS = sorted(main.commands)


def invoke(*args, **kwargs):
    return CliRunner().invoke(main, list(args), prog_name="pybuild", **kwargs)


def test_version():
    result = invoke("version")
    assert result.exit_code == 0
    assert result.output.startswith("pybuild 0.")
    assert invoke("--version").output.startswith("pybuild, version 0.")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output, f"`pybuild {command} --help` shows no example"


def test_bare_pybuild_shows_help_and_build_is_the_default():
    assert "Commands:" in invoke().output
    # `pybuild --file x --help` is `pybuild build --file x --help`
    assert "Usage: pybuild build" in invoke("-f", "x", "--help").output


@pytest.mark.parametrize("args, message", [
    (["--no-such-flag", "."], "No such option"),
    (["build", "--network", "bridge", "."], "Invalid value for '--network'"),
    (["build", "--label", "novalue", "."], "expected KEY=VALUE"),
    (["build", "-f", "-", "-"], "can't use stdin for both"),
    (["completion", "tcsh"], "Invalid value"),
    (["check", "a", "b"], "unexpected extra argument"),
])
def test_usage_errors_exit_1(args, message):
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert message in result.output


def test_usage_error_of_the_real_command_exits_1(tmp_path):
    done = subprocess.run([*PYBUILD, "--progress", "sparkly", "."], capture_output=True, text=True,
                          env=pybuild_env(tmp_path), timeout=60)
    assert done.returncode == 1
    assert "Invalid value for '--progress'" in done.stderr
    assert "Traceback" not in done.stderr


def test_info_shows_the_host(tmp_path):
    result = invoke("info", "--root", str(tmp_path / "root"), env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    fields = dict(line.split(":", 1) for line in result.output.splitlines())
    assert fields["root"].strip() == str(tmp_path / "root")
    assert fields["cgroups"].strip() in ("v1", "v2", "none")
    assert "builtin" in fields["isolations available"]
    assert fields["overlayfs in kernel"].strip() in ("True", "False")
    assert fields["store size"].strip().endswith("B")


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F"), ("zsh", "#compdef pybuild"),
                                           ("fish", "complete --no-files --command pybuild")])
def test_completion_scripts(shell, marker):
    result = invoke("completion", shell)
    assert result.exit_code == 0
    assert marker in result.output
    assert "_PYBUILD_COMPLETE" in result.output


def test_completion_completes_commands_and_flags(tmp_path):
    env = {**pybuild_env(tmp_path), "_PYBUILD_COMPLETE": "bash_complete", "COMP_WORDS": "pybuild ch", "COMP_CWORD": "1"}
    done = subprocess.run(PYBUILD, capture_output=True, text=True, env=env, timeout=60)
    assert "plain,check" in done.stdout.splitlines()
    env.update(COMP_WORDS="pybuild build --no-c", COMP_CWORD="2")
    done = subprocess.run(PYBUILD, capture_output=True, text=True, env=env, timeout=60)
    assert "plain,--no-cache" in done.stdout.splitlines()


def test_version_from_a_checkout_without_the_distribution(monkeypatch):
    """Run from a checkout on PYTHONPATH, with pybuild not pip-installed,
    `version` and `info` used to die in PackageNotFoundError."""
    import importlib.metadata

    from builder.cli import about

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert about.version_string() == "unknown (not installed)"
    assert invoke("version").output.startswith("pybuild unknown (not installed)\n")
    assert invoke("--version").output == "pybuild, version unknown (not installed)\n"
