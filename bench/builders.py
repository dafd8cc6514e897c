"""The builders under test, behind one small interface.

cold() puts a builder in the cold state (empty cache, no local base image);
build() and push() run one measured command; tag() is unmeasured set-up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench import measure, rootless
from bench.env import CACHE_DIR, DockerDaemon, remove_tree, retire

PYBUILD = str(Path(sys.executable).parent / "pybuild")
if not os.path.exists(PYBUILD):
    PYBUILD = shutil.which("pybuild") or "pybuild"


def pybuild_env() -> dict:
    """pybuild as installed: with bytecode. This machine sets
    PYTHONDONTWRITEBYTECODE=1, which would make every run compile pybuild's
    modules from source (~0.15 s of CPU); a pip-installed pybuild has its
    .pyc files. They go to a cache outside the tree.
    PYBUILD_BENCH_BYTECODE=0 keeps the environment as it is."""
    env = dict(os.environ)
    if env.get("PYBUILD_BENCH_BYTECODE", "1") != "0":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(CACHE_DIR / "pycache")
    return env


def _build_args(args: dict[str, str]) -> list[str]:
    out = []
    for key, value in args.items():
        out += ["--build-arg", f"{key}={value}"]
    return out


class Pybuild:
    name = "pybuild"

    def __init__(self, work: Path, log: Path):
        self.work, self.log = work, log
        self.root: Path | None = None
        self.retired: list[Path] = []
        self._n = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        for root in [*self.retired, self.root]:
            if root is not None:
                remove_tree(root)
        self.retired, self.root = [], None

    def version(self) -> str:
        done = subprocess.run([PYBUILD, "version"], capture_output=True, text=True, env=pybuild_env())
        return done.stdout.strip() or done.stderr.strip()

    def cold(self) -> None:
        # The old root stays until the run ends (env.retire says why).
        retire(self.retired, self.root)
        self._n += 1
        self.root = self.work / f"pybuild-root-{self._n}"

    def build(self, context: Path, tag: str, args: dict[str, str]) -> measure.Sample:
        return measure.run([PYBUILD, "build", "--root", str(self.root), "--progress", "plain", "-t", tag,
                            *_build_args(args), str(context)], log=self.log, env=pybuild_env())

    def tag(self, source: str, target: str) -> None:
        measure.quiet([PYBUILD, "tag", "--root", str(self.root), source, target], log=self.log, env=pybuild_env())

    def push(self, ref: str) -> measure.Sample:
        return measure.run([PYBUILD, "push", "--root", str(self.root), ref], log=self.log, env=pybuild_env())


class Docker:
    name = "docker"

    def __init__(self, work: Path, log: Path):
        self.work, self.log = work, log
        self.daemon = DockerDaemon(work / "docker", log.with_name("dockerd.log"))

    def start(self) -> None:
        self.daemon.start()

    def stop(self) -> None:
        self.daemon.stop()

    def version(self) -> str:
        return f"dockerd {self.daemon.version()} (BuildKit built in), client {DockerDaemon.CLIENT}"

    def cold(self) -> None:
        # A new dockerd on a new data root, the old one kept until the run
        # ends (env.retire): `docker system prune` deleted every file of the
        # last build just before the next one. BuildKit starts with the
        # daemon, so the build still meets a started daemon with no cache.
        if not self.daemon.restart():
            self.daemon.reset(self.log)  # a daemon of DOCKER_HOST's: prune it

    def build(self, context: Path, tag: str, args: dict[str, str]) -> measure.Sample:
        return measure.run([DockerDaemon.CLIENT, "build", "--progress", "plain", "--network", "host", "-t", tag,
                            *_build_args(args), str(context)],
                           log=self.log, env=self.daemon.env(), daemon_pid=self.daemon.pid)

    def tag(self, source: str, target: str) -> None:
        self.daemon.docker("tag", source, target, log=self.log)

    def push(self, ref: str) -> measure.Sample:
        return measure.run([DockerDaemon.CLIENT, "push", ref], log=self.log, env=self.daemon.env(),
                           daemon_pid=self.daemon.pid)


class Buildah:
    name = "buildah"
    isolation = os.environ.get("PYBUILD_BENCH_BUILDAH_ISOLATION", "oci")
    # Debian's buildah defaults to crun, which refuses this host's hybrid
    # cgroup setup; runc is also what docker's BuildKit runs.
    runtime = os.environ.get("PYBUILD_BENCH_BUILDAH_RUNTIME", "runc")

    def __init__(self, work: Path, log: Path):
        self.work, self.log = work, log
        self.state: Path | None = None
        self.retired: list[Path] = []
        self._n = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        for state in [*self.retired, self.state]:
            if state is None:
                continue
            self.state = state
            subprocess.run([*self._global(), "rm", "-a"], capture_output=True, env=self._env())
            subprocess.run([*self._global(), "rmi", "-af"], capture_output=True, env=self._env())
            remove_tree(state)
        self.retired, self.state = [], None

    def version(self) -> str:
        return subprocess.run(["buildah", "--version"], capture_output=True, text=True).stdout.strip()

    def _global(self) -> list[str]:
        return ["buildah", "--root", str(self.state / "root"), "--runroot", str(self.state / "run"),
                "--storage-driver", "overlay"]

    def _env(self) -> dict:
        # Cache mounts (type=cache without from=) live in $TMPDIR/buildah-cache-<uid>:
        # a per-state TMPDIR makes "cold" include them.
        return {**os.environ, "TMPDIR": str(self.state / "tmp")}

    def cold(self) -> None:
        retire(self.retired, self.state)
        self._n += 1
        self.state = self.work / f"buildah-{self._n}"
        (self.state / "tmp").mkdir(parents=True)

    def build(self, context: Path, tag: str, args: dict[str, str]) -> measure.Sample:
        return measure.run([*self._global(), "build", "--layers", "--tls-verify=false",
                            "--isolation", self.isolation,
                            *(["--runtime", self.runtime] if self.isolation == "oci" else []),
                            "--network", "host", "-t", tag,
                            *_build_args(args), str(context)], log=self.log, env=self._env())

    def tag(self, source: str, target: str) -> None:
        measure.quiet([*self._global(), "tag", source, target], env=self._env(), log=self.log)

    def push(self, ref: str) -> measure.Sample:
        return measure.run([*self._global(), "push", "--tls-verify=false", ref, f"docker://{ref}"],
                           log=self.log, env=self._env())


BUILDERS = {"pybuild": Pybuild, "docker": Docker, "buildah": Buildah}
# pybuild as the rootless user (and its root baseline on the same interpreter).
BUILDERS.update(rootless.BUILDERS)
