"""The live view, read back as a terminal shows it: pybuild runs in a real
tmux pane (a pseudo-terminal) and the pane is captured."""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid

import pytest

from cli_helpers import PYBUILD, write_context
from fixtures.tools import require_tools


class Pane:
    def __init__(self, socket: str):
        self.socket = socket

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=30).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "build")

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r} on the screen:\n{screen}")
            time.sleep(0.05)


@pytest.fixture
def pane():
    require_tools("tmux")
    pane = Pane(f"pybuild-test-{uuid.uuid4().hex[:8]}")
    yield pane
    subprocess.run(["tmux", "-L", pane.socket, "kill-server"], capture_output=True, timeout=30)


def test_tty_view_shows_running_steps_and_collapses_them(cli, busybox_image, tmp_path, pane):
    context = write_context(tmp_path / "ctx", f"FROM {busybox_image.ref}\n"
                                              "RUN echo tick-1; echo tick-2; sleep 2; echo tock\n"
                                              "RUN echo second\n")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cli.env.items() if k in ("PATH", "PYTHONPATH", "XDG_CONFIG_HOME"))
    command = (f"env -i TERM=xterm {env} {shlex.join(PYBUILD)} --root {shlex.quote(str(tmp_path / 'root'))} "
               f"-t tty-app {shlex.quote(str(context))}; echo EXIT=$?; sleep 600")
    pane.tmux("new-session", "-d", "-s", "build", "-x", "120", "-y", "40", command)

    running = pane.wait_for("=> => # tick-2")
    assert "[+] Building " in running
    step = next(line for line in running.splitlines() if "RUN echo tick-1" in line)
    assert step.startswith(" => [2/3] RUN echo tick-1; echo tick-2; sleep 2; echo tock")
    assert step.rstrip().endswith("s")  # the step's timer
    assert "=> => # tick-1" in running

    final = pane.wait_for("EXIT=")
    lines = [line.rstrip() for line in final.splitlines() if line.strip()]
    assert "EXIT=0" in lines
    # Finished steps collapse to one line with their time; their output is gone.
    assert any(line.startswith(" => [1/3] FROM ") for line in lines)
    assert any(line.startswith(" => [2/3] RUN echo tick-1") and line.endswith("s") for line in lines)
    assert any(line.startswith(" => [3/3] RUN echo second") for line in lines)
    assert not any("=> => #" in line for line in lines)
    assert any(line.startswith("[+] Building ") and line.endswith("(3/3) FINISHED") for line in lines)
    assert "naming to docker.io/library/tty-app:latest done" in final
    assert "\x1b" not in final
