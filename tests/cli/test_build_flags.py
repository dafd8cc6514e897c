"""`pybuild build` flags from `docker buildx build`: --build-context,
--add-host and --check, run as a user runs them."""

from __future__ import annotations

import re

import pytest
from cli_helpers import write_context
from click.testing import CliRunner

from builder.cli import main

WARNED = "FROM busybox as base\nCMD echo hi\n"


def image_id(text: str) -> str:
    return re.search(r"writing image (sha256:[0-9a-f]{64}) done", text).group(1)


def test_check_prints_the_warnings_exits_1_and_builds_nothing(tmp_path):
    write_context(tmp_path / "ctx", WARNED)
    root = tmp_path / "root"
    result = CliRunner().invoke(main, ["--check", "--root", str(root), str(tmp_path / "ctx")])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Dockerfile:1: [FromAsCasing] 'as' and 'FROM' keywords' casing do not match"
    assert lines[-1] == "Check complete, 2 warnings have been found!"
    assert not root.exists()  # no pull, no build


def test_check_of_a_clean_dockerfile_exits_0(tmp_path):
    write_context(tmp_path / "ctx", 'FROM busybox AS base\nCMD ["echo", "hi"]\n')
    result = CliRunner().invoke(main, ["build", "--check", str(tmp_path / "ctx")])
    assert result.exit_code == 0, result.output
    assert result.output == "Check complete, no warnings found.\n"


@pytest.mark.parametrize("flag, value, message", [
    ("--build-context", "src", "ERROR: invalid --build-context 'src': expected NAME=VALUE"),
    ("--build-context", "src=/no/such/dir", "ERROR: --build-context src=/no/such/dir: not a directory"),
    ("--add-host", "gw:host-gateway", "ERROR: invalid --add-host 'gw:host-gateway': host-gateway"),
    ("--add-host", "db:not-an-ip", "ERROR: invalid --add-host 'db:not-an-ip': 'not-an-ip' is not an IP address"),
])
def test_bad_values_are_one_error_line(cli, tmp_path, flag, value, message):
    context = write_context(tmp_path / "ctx", "FROM scratch\n")
    done = cli.build(flag, value, str(context))
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert stderr.startswith(message), stderr
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr


def test_named_context_edits_are_seen_by_an_identical_rebuild(cli, tmp_path, busybox_image):
    named = tmp_path / "named"
    named.mkdir()
    (named / "a.txt").write_text("one\n")
    context = write_context(tmp_path / "ctx", f"FROM {busybox_image.ref}\nCOPY --from=src a.txt /a.txt\n"
                                              "RUN cat /a.txt\n")
    args = ["--progress=plain", "-t", "named-ctx", "--build-context", f"src={named}",
            "--add-host", "db.local:10.0.0.5", str(context)]
    first = cli.build(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr.decode()
    (named / "a.txt").write_text("two\n")
    second = cli.build(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr.decode()
    assert "two" in second.stderr.decode()
    assert image_id(first.stderr.decode()) != image_id(second.stderr.decode())
