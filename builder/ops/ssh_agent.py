"""The SSH agents a build forwards to `RUN --mount=type=ssh`.

`--ssh ID` (or `ID=SOCKET`) forwards an agent that already runs: $SSH_AUTH_SOCK
for `default`, or the socket named. `--ssh ID=KEY[,KEY...]` names private
key files instead, as with `docker buildx build --ssh default=~/.ssh/id_ed25519`:
buildx serves such keys from an agent inside the client; pybuild starts a
real `ssh-agent` for the build, loads the keys into it with `ssh-add`, and
stops it when the build ends.

The agent is started on the first step that mounts its ID, so a build that
never uses it never runs one. Its socket lives in a private 0700 directory
with the steps' scratch on /dev/shm (not under the root: a socket path
must stay within 108 bytes), and keys are fed to `ssh-add -` on stdin, so
they are never copied to disk and ssh-add's file permission check does not
apply. The agent runs under runtime/supervise.py: it dies with pybuild,
even one killed by SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

from builder.errors import PybuildError
from runtime.executor import scratch_dir
from runtime.lifeline import Supervised

_START_TIMEOUT = 10.0  # seconds for ssh-agent to create its socket
_STOP_TIMEOUT = 5.0


class SshAgentError(PybuildError):
    pass


def is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


class _KeyAgent:
    """One `ssh-agent -D` holding the keys of one --ssh ID."""

    def __init__(self, ssh_id: str, keys: Sequence[str]):
        agent = shutil.which("ssh-agent")
        add = shutil.which("ssh-add")
        if agent is None or add is None:
            raise SshAgentError(f"ssh {ssh_id}: loading key files needs ssh-agent and ssh-add (openssh-client)")
        # 0700, and like the agent, taken back if pybuild dies (SIGKILL
        # included): runtime.lifeline, runtime.executor.remove_stale_scratch
        self.dir = scratch_dir(None, "pybuild-ssh-")
        self.socket = str(self.dir / "agent.sock")
        self.process: subprocess.Popen | None = None
        try:
            self.process = Supervised(
                [agent, "-D", "-a", self.socket], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE)  # fmt: skip
            self._wait_for_socket(ssh_id)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SSH_AUTH_SOCK": self.socket,
                   "SSH_ASKPASS_REQUIRE": "never"}  # fmt: skip
            for key in keys:
                try:
                    data = Path(key).read_bytes()
                except OSError as exc:
                    raise SshAgentError(f"ssh {ssh_id}: cannot read key {key}: {exc.strerror}") from None
                done = subprocess.run([add, "-q", "-"], input=data, env=env, capture_output=True,
                                      timeout=30, check=False)  # fmt: skip
                if done.returncode != 0:
                    detail = done.stderr.decode(errors="replace").strip().splitlines()
                    raise SshAgentError(f"ssh {ssh_id}: ssh-add {key} failed: "
                                        f"{detail[-1] if detail else f'exit code {done.returncode}'}")
        except BaseException:
            self.close()
            raise

    def _wait_for_socket(self, ssh_id: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while not is_socket(self.socket):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip()
                raise SshAgentError(f"ssh {ssh_id}: ssh-agent exited with status {self.process.returncode}: {err}")
            if time.monotonic() > deadline:
                raise SshAgentError(f"ssh {ssh_id}: ssh-agent did not create {self.socket}")
            time.sleep(0.02)

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stderr is not None:
                process.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class SshAgents:
    """--ssh ID → the agent socket a step binds at its ssh mount target.

    `specs` maps each ID to what followed `ID=`: one socket, or key files.
    Thread-safe: parallel steps may ask for the same ID at once."""

    def __init__(self, specs: Mapping[str, Sequence[str]]):
        self._specs = {k: tuple(v) for k, v in specs.items()}
        self._agents: dict[str, _KeyAgent] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __contains__(self, ssh_id: str) -> bool:
        return ssh_id in self._specs

    def get(self, ssh_id: str) -> str | None:
        """The socket for ssh_id, or None when the build was not given it."""
        paths = self._specs.get(ssh_id)
        if paths is None:
            return None
        if len(paths) == 1 and is_socket(paths[0]):
            return paths[0]
        with self._lock:
            if self._closed:
                raise SshAgentError("the build's SSH agents are already stopped")
            agent = self._agents.get(ssh_id)
            if agent is None:
                agent = self._agents[ssh_id] = _KeyAgent(ssh_id, paths)
            return agent.socket

    def close(self) -> None:
        """Stop every agent this build started (idempotent)."""
        with self._lock:
            self._closed = True
            agents, self._agents = list(self._agents.values()), {}
        for agent in agents:
            agent.close()
