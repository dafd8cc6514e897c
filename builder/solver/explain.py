"""`--explain`: why a step did not come from the cache.

After every build, a compact description of each named step is stored in
the index `builds` table under one id per (context, Dockerfile, target):
its cache key, its inputs' keys, and what it read from outside the graph
(a COPY's selected files as path -> content digest, a RUN's environment,
a FROM's pinned digest). With --explain, each step that ran is compared with
the previous build's description of the step of the same name, and the
first differences found become the reason:

    #7 [stage-1 4/5] COPY src/ .: rebuilt because src/a.txt changed

Steps are matched by display name ("[build 3/4] COPY src/ ./"), with a
FROM's pinned digest taken out, since vertex ids change with any input;
failing that by place (stage, number, instruction), since a RUN's name
shows its expanded ARGs.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from typing import Mapping

from frontend import ops

RECORD_VERSION = 1
_PINNED = re.compile(r"@sha256:[0-9a-f]{64}")
_MAX_LISTED = 3


def build_id(context_dir, dockerfile_path, target: str | None, platform: str | None = None) -> str:
    """The record's id; a platform of a build for several has its own
    (its steps are named with it)."""
    parts = [os.path.abspath(context_dir), os.path.abspath(dockerfile_path), target or ""]
    text = "\0".join(parts + ([platform] if platform else []))
    return "explain:" + hashlib.sha256(text.encode()).hexdigest()


def step_name(meta) -> str:
    return _PINNED.sub("", meta.name)


_SLOT = re.compile(r"^\[(?:\S+/\S+ )?(\S+) (\d+)/\d+\] (\S+)")


def _slot(name: str) -> str:
    """"[stage-1 3/4] RUN echo 2" -> "stage-1 3 RUN": the step's place (a
    platform's name in a build for several, "[linux/arm64 stage-1 3/4]",
    left out: each platform has a record of its own)."""
    match = _SLOT.match(name)
    return " ".join(match.groups()) if match else ""


def describe(definition, contexts, solution, build_args: Mapping[str, str], previous: dict | None = None) -> dict:
    """This build's record: step name -> what decided its key. A COPY whose
    key the previous record already holds read the same files, so its file
    map is taken from there instead of walking the context again."""
    earlier = (previous or {}).get("steps", {})
    steps: dict[str, dict] = {}
    for vertex, key in solution.keys.items():
        meta = definition.metadata.get(vertex)
        if meta is None:
            continue
        op = definition.op(vertex)
        inputs = []
        for source in op.inputs:
            source_meta = definition.metadata.get(source)
            inputs.append([step_name(source_meta) if source_meta else "", solution.keys.get(source, "")])
        step = {"key": key, "inputs": inputs, "kind": type(op).__name__}
        if isinstance(op, ops.ImageSource):
            step["image"] = op.ref
        elif isinstance(op, ops.Exec):
            step["env"] = list(op.env)
        elif selections := _context_selections(definition, op):
            same = earlier.get(step_name(meta), {})
            if same.get("key") == key and "files" in same:
                step["files"] = same["files"]
            else:
                step["files"] = _file_map(contexts, selections, op)
        steps[step_name(meta)] = step
    return {"version": RECORD_VERSION, "build_args": dict(build_args), "steps": steps}


def _context_selections(definition, op) -> list[tuple[object, tuple[str, ...]]]:
    """(source op, paths) for what a COPY/ADD selects from a local context
    (the build context or a --build-context directory): one FileCopy's, or
    each local part's of a CopyParts."""
    if isinstance(op, ops.FileCopy):
        parts = [(1, op.sources)]
    elif isinstance(op, ops.CopyParts):
        parts = [(part.input, part.sources) for part in op.parts if part.input]
    else:
        return []
    found = [(definition.op(op.inputs[index]), sources) for index, sources in parts]
    return [(source, paths) for source, paths in found if isinstance(source, (ops.ContextSource, ops.NamedLocalSource))]


def _file_map(contexts, selections, op) -> dict[str, str]:
    """path -> short digest of what the COPY reads of it (kind, mode, bytes),
    through `contexts` (builder.solver.contexts.LocalContexts)."""
    files = {}
    for source, paths in selections:
        context = contexts.context_for(source)
        for entry in context.select(paths, excludes=op.excludes, follow_symlinks=op.follow_symlinks).entries:
            st = entry.stat
            if stat.S_ISREG(st.st_mode):
                what = str(context.stat_cache.file_digest(entry.path, st)) if context.stat_cache else ""
            elif stat.S_ISLNK(st.st_mode):
                what = "link:" + os.readlink(entry.path)
            else:
                what = "dir" if stat.S_ISDIR(st.st_mode) else "special"
            text = f"{what};{stat.S_IMODE(st.st_mode):o}"
            files[entry.relpath or "."] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return files


def explain(previous: dict | None, current: dict, executed_names: list[str], forced: Mapping[str, str]) -> dict[str, str]:
    """step name -> the reason it ran (for every name in executed_names)."""
    reasons = {}
    before = (previous or {}).get("steps", {}) if (previous or {}).get("version") == RECORD_VERSION else {}
    old_args = (previous or {}).get("build_args", {})
    new_args = current.get("build_args", {})
    for name in executed_names:
        now = current["steps"].get(name)
        if now is None:
            continue
        if name in forced:
            reasons[name] = forced[name]
            continue
        then = before.get(name)
        if then is None:
            # A RUN's shown text expands its ARGs: match by position instead.
            slot = _slot(name)
            then = next((step for other, step in before.items() if slot and _slot(other) == slot), None)
        if then is None:
            reasons[name] = "no earlier build of this step is recorded" if previous else "this is the first build recorded"
            continue
        if then["key"] == now["key"]:
            reasons[name] = "its cached result was no longer available (pruned?)"
            continue
        found = _own_changes(then, now, old_args, new_args)
        if not found:
            changed = [n or "an unnamed input" for (n, k), (_, k_old) in zip(now["inputs"], then["inputs"])
                       if k != k_old]
            if changed:
                found = [f"parent step {changed[0]} changed"]
            elif len(now["inputs"]) != len(then["inputs"]):
                found = ["its inputs changed"]
            else:
                found = ["the instruction changed"]
        reasons[name] = "; ".join(found)
    return reasons


def _own_changes(then: dict, now: dict, old_args: Mapping, new_args: Mapping) -> list[str]:
    if then.get("kind") != now.get("kind"):
        return ["the instruction changed"]
    if "image" in now and then.get("image") != now["image"]:
        return [f"base image digest changed ({_digest(then.get('image'))} -> {_digest(now['image'])})"]
    if "files" in now:
        return _file_changes(then.get("files") or {}, now["files"])
    if "env" in now:
        old_env = dict(e.split("=", 1) for e in then.get("env") or [])
        new_env = dict(e.split("=", 1) for e in now["env"])
        names = sorted(k for k in old_env.keys() | new_env.keys() if old_env.get(k) != new_env.get(k))
        out = []
        for var in names:
            is_arg = var in old_args or var in new_args
            out.append(f"build arg {var} changed" if is_arg else f"environment variable {var} changed")
        return out[:_MAX_LISTED] + ([f"and {len(out) - _MAX_LISTED} more"] if len(out) > _MAX_LISTED else [])
    return []


def _file_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    changes = []
    for path in sorted(old.keys() | new.keys()):
        if path not in old:
            changes.append(f"{path} was added")
        elif path not in new:
            changes.append(f"{path} was removed")
        elif old[path] != new[path]:
            changes.append(f"{path} changed")
    listed = changes[:_MAX_LISTED]
    if len(changes) > _MAX_LISTED:
        listed.append(f"and {len(changes) - _MAX_LISTED} more")
    return listed


def _digest(ref: str | None) -> str:
    if not ref or "@" not in ref:
        return ref or "?"
    return ref.rsplit("@", 1)[1][:19]


def report(definition, solution, index, contexts, reporter, build_args, forced: Mapping[str, str],
           explain_wanted: bool, record_key: str) -> dict[str, str]:
    """Store this build's record in `index`; with --explain, print why steps ran."""
    previous = index.get_build(record_key)
    current = describe(definition, contexts, solution, build_args, previous)
    index.put_build(record_key, current)
    if not explain_wanted:
        return {}
    executed = [step_name(definition.metadata[v]) for v in solution.executed if v in definition.metadata]
    reasons = explain(previous, current, executed, forced)
    number = reporter.step_number  # the display's #N, when it shows them
    by_name = {step_name(definition.metadata[v]): v for v in solution.executed if v in definition.metadata}
    for name in sorted(reasons, key=lambda n: (number(by_name[n]) or 0, n)):
        shown = number(by_name[name])
        prefix = f"#{shown} " if shown is not None else ""
        reporter.message(f"{prefix}{name}: rebuilt because {reasons[name]}")
    return reasons
