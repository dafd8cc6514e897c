"""What the provenance tests share: a Dockerfile converted with the real
frontend against the real registry fixture (the graph a build solves), a
BuildRecord observed from it, and a git repository served by a real
`git daemon` on loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path

from builder.attest.record import BuildRecord, frontend_args, platform_text
from builder.registry.reference import Reference
from builder.solver.resolver import RegistryAccess
from cache.store import ContentStore
from frontend.convert import convert
from frontend.definition import Definition, ResolvedImage
from frontend.ops import Platform


def real_definition(dockerfile: str, store: ContentStore, *, build_args=None, platform: Platform = Platform(),
                    target: str | None = None, record: BuildRecord | None = None) -> Definition:
    """The graph pybuild's build would solve, base images resolved against
    the registry (loopback, plain HTTP) into `store`. With `record`, each
    resolution is reported to it as the hook proposed for
    builder/solver/resolver.py reports it: the digest the name resolved to
    (an index's, for a multi-platform base) and the platform."""
    access = RegistryAccess(store)  # a loopback registry is plain HTTP

    def resolve(text: str, wanted: Platform) -> ResolvedImage:
        ref = Reference.parse(text)
        resolved = access.resolve(ref, str(wanted))
        if record is not None:
            record.add_image(str(ref), resolved.ref.digest, platform_text(wanted))
        return ResolvedImage(str(ref), str(resolved.manifest.digest), resolved.config_json)

    return convert(dockerfile, build_args=build_args or {}, resolve_image=resolve, platform=platform,
                   target=target, explicit_platform=platform != Platform())


def observed_record(dockerfile: str, store: ContentStore, *, build_args=None, platform: Platform = Platform(),
                    reported: bool = True, **args) -> BuildRecord:
    """The record of a build of `dockerfile`: its graph observed and, if
    `reported`, its base images' resolutions reported as they happen."""
    record = BuildRecord(dockerfile=dockerfile.encode(), args=frontend_args(build_args=build_args or {}, **args))
    definition = real_definition(dockerfile, store, build_args=build_args, platform=platform,
                                 record=record if reported else None)
    record.observe_graph(definition)
    record.finish()
    return record


def git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def make_repository(path: Path, files: dict[str, str]) -> str:
    """A repository at `path` (branch master) with `files` committed; its commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "master")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one")
    return git(path, "rev-parse", "HEAD").strip()
