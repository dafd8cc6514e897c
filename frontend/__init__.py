"""The Dockerfile frontend: text in, a frozen build graph out.

The builder calls `convert`; `frontend.check.check` runs the build checks; the rest is
exposed for tools and tests. Nothing here imports builder, cache or runtime.
"""

import sys
import types

# Names are imported when first asked for (PEP 562): a submodule such as
# frontend.canonical, which the solver's cache keys and the no-op memo's
# replay read, or frontend.ops, which the builder's ops read, must not pull
# in the parser and converter through this package.
# `check` is not re-exported: `frontend.check` must stay the module, whose
# entry point is frontend.check.check.
_HOMES = {
    "convert": "frontend.convert",
    "parse": "frontend.parser",
    "Lexer": "frontend.lexer",
    "Platform": "frontend.ops",
    "Dockerfile": "frontend.nodes",
    "Node": "frontend.nodes",
    "Matcher": "frontend.dockerignore",
    "parse_dockerignore": "frontend.dockerignore",
    **dict.fromkeys(("ContextError", "DockerfileError", "FrontendError", "Location"), "frontend.errors"),
    **dict.fromkeys(("Definition", "HistoryEntry", "ImageResolver", "ResolvedImage", "StageImage",
                     "VertexMeta", "Warning"), "frontend.definition"),
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    import importlib

    if name not in _HOMES:
        raise AttributeError(f"module 'frontend' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)


class _Package(types.ModuleType):
    """Keeps `frontend.convert` the function: importing the submodule of
    the same name sets the package's attribute to the module, which the
    eager `from frontend.convert import convert` here used to undo."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _HOMES.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
