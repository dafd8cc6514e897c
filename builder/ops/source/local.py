"""Sources that make no snapshot: scratch, and the local directories
(the build context, --build-context directories) that the steps
selecting from them read directly."""

from __future__ import annotations

from typing import Sequence

from builder.solver.keys import CacheKey, cache_key
from frontend.ops import ContextSource, NamedLocalSource, Op, Scratch


class ScratchImpl:
    def __init__(self, op: Scratch, vertex: str, input_ops: Sequence[Op], session):
        self.op = op

    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
        return cache_key(self.op.canonical(), input_keys)

    def execute(self, inputs, cancel):
        return ()


class ContextImpl:
    """The context (or a named local context) is read by the steps that
    select from it; the source itself produces no snapshot."""

    def __init__(self, op: ContextSource | NamedLocalSource, vertex: str, input_ops: Sequence[Op], session):
        self.op = op

    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
        # Every step reading the context adds the checksum of what it
        # selects, and that selection already applies .dockerignore; keying
        # on the patterns too would rebuild everything after an edit that
        # leaves the selected files alone (BuildKit keys those steps on
        # content, so they stay cached).
        body = self.op.canonical()
        body.pop("excludes", None)
        return cache_key(body, input_keys)

    def execute(self, inputs, cancel):
        return ()
