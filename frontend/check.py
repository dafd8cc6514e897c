"""`pybuild check`: BuildKit's build checks over a whole Dockerfile, as
`docker build --check` runs them. The rules live in frontend.lint and run
while the converter dispatches the stages, so this entry point runs it."""

from __future__ import annotations

from typing import Mapping

from frontend.convert import lint_dockerfile
from frontend.definition import ImageResolver, ResolvedImage, Warning
from frontend.ops import Platform


def _no_image(ref: str, platform: Platform) -> ResolvedImage:
    # Without a registry the base image is assumed to set nothing.
    return ResolvedImage(ref=ref, digest="sha256:" + "0" * 64, config={"config": {}})


def check(
    dockerfile: str,
    path: str = "Dockerfile",
    *,
    build_args: Mapping[str, str] = {},
    target: str | None = None,
    excludes: tuple[str, ...] = (),
    platform: Platform = Platform(),
    resolve_image: ImageResolver | None = None,
) -> list[Warning]:
    """Run the build checks over every stage (or the target's), as
    `docker build --check` does. Errors that would stop a build are raised
    as DockerfileError. Without `resolve_image`, base images are assumed to
    have an empty config, so variables they define read as undefined."""
    return lint_dockerfile(
        dockerfile,
        path=path,
        build_args=build_args,
        target=target,
        excludes=excludes,
        platform=platform,
        resolve_image=resolve_image or _no_image,
    )
