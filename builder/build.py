"""The Python API: one call builds an image (the CLI is a thin layer on it).

    from builder import build
    result = build("testdata/hello", tags=["app"], root="/tmp/pb")
    print(result.image_id)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from builder.assemble import ExportOptions, assemble
from builder.errors import PybuildError
from builder.image import Image
from builder.layers import LayerMaker
from builder.outputs import OutputSpec, OutputType, parse_output
from builder.progress import BuildReporter
from builder.reference import Reference
from builder.secrets import Secrets, parse_secrets, parse_ssh
from builder.session import BuildSession
from builder.solver import Solver
from builder.worker import Worker
from frontend.ops import Platform
from runtime.spec import NetworkMode


@dataclass(frozen=True)
class BuildResult:
    image: Image
    tags: tuple[str, ...]
    cached_steps: int
    executed_steps: int
    duration: float
    pushed: Mapping[str, str] = field(default_factory=dict)  # tag -> manifest digest

    @property
    def image_id(self) -> str:
        return str(self.image.config.digest)

    @property
    def manifest_digest(self) -> str:
        return str(self.image.manifest.digest)


def parse_platform(text: str | None) -> Platform:
    if not text:
        return Platform()
    parts = text.split("/")
    if len(parts) < 2 or len(parts) > 3 or not all(parts):
        raise PybuildError(f"invalid platform {text!r}: expected os/arch[/variant]")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def build(
    context: str | os.PathLike,
    *,
    dockerfile: str | os.PathLike | None = None,
    dockerfile_text: str | None = None,
    tags: Sequence[str] = (),
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    platform: str | None = None,
    outputs: Sequence[str | OutputSpec] = (),
    push: bool = False,
    root: str | os.PathLike | None = None,
    isolation: str | None = None,
    network: str = "host",
    no_cache: bool = False,
    pull: bool = False,
    secrets: Sequence[str] = (),
    ssh: Sequence[str] = (),
    insecure_registries: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    reporter: BuildReporter | None = None,
) -> BuildResult:
    started = time.monotonic()
    reporter = reporter or BuildReporter()
    context_dir = Path(context)
    if not context_dir.is_dir():
        raise PybuildError(f"build context {context} is not a directory")
    dockerfile_path = Path(dockerfile) if dockerfile else context_dir / "Dockerfile"
    if dockerfile_text is None:
        try:
            dockerfile_text = dockerfile_path.read_text()
        except FileNotFoundError:
            raise PybuildError(f"failed to read dockerfile: open {dockerfile_path}: no such file or directory") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PybuildError(f"failed to read dockerfile {dockerfile_path}: {exc}") from None
    specs = [o if isinstance(o, OutputSpec) else parse_output(o) for o in outputs]
    tags = tuple(str(Reference.parse(t)) for t in tags)
    if network not in ("host", "none", "default"):
        raise PybuildError(f"invalid --network {network!r}: expected default, host or none")
    worker = Worker.open(Path(root) if root else None, isolation)
    try:
        session = BuildSession.start(
            worker=worker,
            context_dir=context_dir,
            dockerfile_path=dockerfile_path,
            reporter=reporter,
            network=NetworkMode.NONE if network == "none" else NetworkMode.HOST,
            secrets=parse_secrets(secrets),
            ssh=parse_ssh(ssh),
            insecure_registries=insecure_registries,
            pull=pull,
        )
        try:
            definition = session.convert(
                dockerfile_text,
                path=dockerfile_path.name if dockerfile is None else str(dockerfile),
                build_args=dict(build_args or {}),
                target=target,
                platform=parse_platform(platform),
            )
            reporter.set_names(definition.metadata)
            for warning in definition.warnings:
                reporter.warning(str(warning))
            for name in definition.unused_build_args:
                reporter.warning(f"[UnusedBuildArg] build argument {name!r} was not consumed by any stage")
            solver = Solver(definition.graph, session.impl_for, session.results, reporter,
                            on_cancel=session.cancel_running)
            force = (lambda v: True) if no_cache else (lambda v: False)
            solution = solver.solve(definition.target, force=force)
            created = session.results.created(solution.keys[definition.target])
            image = assemble(worker.store, LayerMaker(worker.store, worker.index, worker.snapshots),
                             definition.image, solution.result, created,
                             ExportOptions(labels=tuple((labels or {}).items()),
                                           source_date_epoch=_epoch(build_args)))
            pushed = session.export(image, solution.result, tags, specs, push)
        finally:
            session.close()
    finally:
        worker.close()
    return BuildResult(image, tags, len(solution.cached), len(solution.executed), time.monotonic() - started, pushed)


def _epoch(build_args) -> int | None:
    value = (build_args or {}).get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise PybuildError(f"invalid SOURCE_DATE_EPOCH {value!r}: expected seconds since 1970") from None
