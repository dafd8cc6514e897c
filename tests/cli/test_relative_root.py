"""A relative root (--root, $PYBUILD_ROOT, the config file's `root`, the
Python API's `root=`) names a directory below the working directory, for
every command and every RUN: the snapshotter mounts from threads with a
working directory of their own, where the relative path once named nothing
("mount overlay on relroot/snapshots/.mnt-...: No such file or directory").
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.build import build
from cli_helpers import PYBUILD, write_context
from e2e.helpers import ISOLATIONS
from fixtures.pybuild import pybuild_env


def _config_root(env: dict, root: str) -> None:
    config = Path(env["XDG_CONFIG_HOME"]) / "pybuild" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'root = "{root}"\n')


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("given", ["flag", "env", "config"])
def test_a_relative_root_builds_a_run_step(tmp_path, busybox_image, isolation, given):
    work = tmp_path / "work"
    write_context(work / "ctx", f"FROM {busybox_image.ref}\nRUN echo ran > /ran\n")
    env = pybuild_env(tmp_path)
    flags = []
    if given == "flag":
        flags = ["--root", "rel-root"]
    elif given == "env":
        env["PYBUILD_ROOT"] = "rel-root"
    else:
        _config_root(env, "rel-root")
    result = subprocess.run([*PYBUILD, "build", *flags, "--isolation", isolation, "--progress", "plain",
                             "-o", "type=local,dest=out", "ctx"], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert (work / "out" / "ran").read_text() == "ran\n"
    # the step's layer is in the root below the working directory
    assert [path.read_text() for path in (work / "rel-root" / "snapshots").glob("*/fs/ran")] == ["ran\n"]


@pytest.mark.parametrize("given", ["argument", "env"])
def test_the_python_api_takes_a_relative_root_from_the_working_directory(tmp_path, busybox_image, monkeypatch,
                                                                          given):
    work = tmp_path / "work"
    context = write_context(work / "ctx", f"FROM {busybox_image.ref}\nRUN echo ran > /ran\n")
    monkeypatch.chdir(work)
    if given == "env":
        monkeypatch.setenv("PYBUILD_ROOT", "rel-root")
    build(context, root="rel-root" if given == "argument" else None, isolation="builtin",
          outputs=[f"type=local,dest={work / 'out'}"])
    assert (work / "out" / "ran").read_text() == "ran\n"
    assert [path.read_text() for path in (work / "rel-root" / "snapshots").glob("*/fs/ran")] == ["ran\n"]
