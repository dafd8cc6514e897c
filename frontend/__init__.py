"""The Dockerfile frontend: text in, a frozen build graph out.

The builder calls `convert`; `frontend.check.check` runs the build checks; the rest is
exposed for tools and tests. Nothing here imports builder, cache or runtime.
"""

# `check` is not re-exported: `frontend.check` must stay the module, whose
# entry point is frontend.check.check.
from frontend.convert import convert
from frontend.definition import (
    Definition,
    HistoryEntry,
    ImageResolver,
    ResolvedImage,
    StageImage,
    VertexMeta,
    Warning,
)
from frontend.dockerignore import Matcher, parse_dockerignore
from frontend.errors import ContextError, DockerfileError, FrontendError, Location
from frontend.lexer import Lexer
from frontend.ops import Platform
from frontend.nodes import Dockerfile, Node
from frontend.parser import parse

__all__ = [
    "ContextError",
    "Definition",
    "Dockerfile",
    "DockerfileError",
    "FrontendError",
    "HistoryEntry",
    "ImageResolver",
    "Lexer",
    "Location",
    "Matcher",
    "Node",
    "Platform",
    "ResolvedImage",
    "StageImage",
    "VertexMeta",
    "Warning",
    "convert",
    "parse",
    "parse_dockerignore",
]
