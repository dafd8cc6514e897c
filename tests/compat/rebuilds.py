"""A case built more than once: case.json's "rebuilds" edit the context
between builds, and the record says which steps each rebuild ran (the
cache hits and misses BuildKit has) besides the last build's image.

    "rebuilds": [{"write": {"src/new.txt": "x\\n"}, "remove": ["notes.txt"],
                  "touch": ["a.txt"], "no_cache": true, "no_cache_filter": "deps"}]

Every key is optional; `write`, `remove` and `touch` name context paths
(`touch` gives a file the current time, changing nothing else)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Callable

from compat.builders import BaseImage, Flags, docker_prune, docker_record, pybuild_record
from compat.cases import Case, CaseError, prepare

REBUILD_KEYS = {"write", "remove", "touch", "no_cache", "no_cache_filter"}


@dataclass(frozen=True)
class Rebuild:
    write: dict = field(default_factory=dict)
    remove: tuple = ()
    touch: tuple = ()
    no_cache: bool = False
    no_cache_filter: str = ""


def rebuilds(case: Case) -> list[Rebuild]:
    found = []
    for number, spec in enumerate(case.rebuilds, 1):
        unknown = set(spec) - REBUILD_KEYS
        if unknown:
            raise CaseError(f"{case.name}/case.json: rebuild {number}: unknown keys {sorted(unknown)}")
        found.append(Rebuild(spec.get("write", {}), tuple(spec.get("remove", ())), tuple(spec.get("touch", ())),
                             bool(spec.get("no_cache")), spec.get("no_cache_filter", "")))
    return found


def _inside(context, name: str):
    path = (context / name).resolve()
    if not path.is_relative_to(context.resolve()):
        raise CaseError(f"rebuild path {name!r} leaves the context")
    return path


def _edit(context, rebuild: Rebuild) -> None:
    for name, text in rebuild.write.items():
        path = _inside(context, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name in rebuild.remove:
        path = _inside(context, name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    for name in rebuild.touch:
        os.utime(_inside(context, name))


def case_record(case: Case, context, build: Callable[[Flags], dict], clean: Callable[[], None],
                plain: Flags = Flags()) -> dict:
    """The record of `case`, built by `build(flags)` after `clean()`: once
    with `plain` for a case without rebuilds; else the first build, then
    each edit and rebuild, the record being the last build's with
    "rebuilds": [{"ran": [...]}, ...]."""
    clean()
    steps = rebuilds(case)
    if not steps:
        return build(plain)
    first = build(Flags())
    if "error" in first:
        return first
    ran = []
    for step in steps:
        _edit(context, step)
        record = build(Flags(no_cache=step.no_cache, no_cache_filter=step.no_cache_filter, steps=True))
        if "error" in record:
            return record
        ran.append({"ran": record.pop("ran")})
    return {**record, "rebuilds": ran}


def docker_case(case: Case, image: BaseImage, docker, work) -> dict:
    """docker's record of `case`, its inputs made under `work`. Its build
    cache is emptied first: BuildKit's cache keys leave mtimes out, so a
    result cached by another case with the same content would bring that
    case's mtimes, and buildx's context transfer reuses what the last
    build received (a directory it made keeps its mtime)."""
    inputs = prepare(case, work)
    return case_record(case, inputs.context, lambda flags: docker_record(inputs, image, docker, work, flags),
                       lambda: docker_prune(docker))


def pybuild_case(case: Case, image: BaseImage, shared_root, work) -> dict:
    """pybuild's record of `case`, its inputs made under `work`, its store
    `shared_root`, where it builds with --no-cache (a cache hit of another
    case with the same content would bring that case's mtimes, as in
    BuildKit), the base's extraction being all it shares. A case with
    rebuilds has a root of its own: its cache hits must be its own."""
    inputs = prepare(case, work)
    root = work / "root" if case.rebuilds else shared_root
    return case_record(case, inputs.context, lambda flags: pybuild_record(inputs, image, root, work, flags),
                       lambda: None, Flags(no_cache=True))
