"""What the converter knows about each stage and each image while it
converts: the links found before dispatch, and the filesystem vertex,
image config, history and variable scope filled in while dispatching."""

from __future__ import annotations

from dataclasses import dataclass, field

from frontend import instructions as ins
from frontend.definition import NamedContext, ResolvedImage
from frontend.ops import Platform

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")
HISTORY_COMMENT = "buildkit.dockerfile.v0"
# BuildKit keeps these ARGs out of the RUN environment.
NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})


@dataclass(eq=False)
class ImageRef:
    """A base image or `--from` image, resolved once per reference and
    platform; `vertex` is its source op, once a stage reads it."""

    ref: str
    platform: Platform
    resolved: ResolvedImage | None = None
    vertex: str = ""


@dataclass(eq=False)
class StageState:
    stage: ins.Stage
    index: int
    display: str  # "builder" or "stage-2"; "" when the file has one stage
    base_name: str = ""
    base_stage: StageState | None = None
    platform: Platform | None = None
    deps: dict = field(default_factory=dict)  # StageState | ImageRef | NamedContext -> Instruction
    commands: list = field(default_factory=list)  # (Instruction, is_onbuild)
    onbuild_done: bool = False
    image: ImageRef | None = None
    named: NamedContext | None = None  # a --build-context replacing the stage, or its FROM
    dispatched: bool = False
    # filled when dispatched
    rootfs: str = ""
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    env: dict = field(default_factory=dict)  # the RUN/expansion scope: image env + ARGs
    build_args: list = field(default_factory=list)  # ArgDef with their values, in order
    base_image: ResolvedImage | None = None
    cmd_set: bool = False
    workdir_set: bool = False
    from_vars: set = field(default_factory=set)
    cmd_total: int = 0
    cmd_index: int = 0
