"""Helpers of the CLI tests: `pybuild` run as a user runs it (a real
subprocess), with a root and a config home of its own."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The console script pip installs, as a user runs it.
PYBUILD = [shutil.which("pybuild") or "pybuild"]


@dataclass
class Cli:
    """Runs `pybuild` with `root`, isolated from the host's config files."""

    root: Path
    env: dict

    def run(self, *args: str, input: bytes | str | None = None, cwd=None, timeout: float = 120,
            env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*PYBUILD, *args], input=input.encode() if isinstance(input, str) else input,
                              capture_output=True, cwd=cwd, timeout=timeout, env={**self.env, **(env or {})})

    def build(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("--root", str(self.root), *args, **kwargs)


def write_context(directory: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


def mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [line for line in text.splitlines() if str(path) in line]
