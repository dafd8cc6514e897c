"""A case of testdata/compat/ and the build inputs made from it
(tests/compat/README.md, "The case format")."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CASES = REPO / "testdata" / "compat"
# Every context file's mtime before setup.py runs: git keeps none.
CONTEXT_MTIME = 1_609_459_200  # 2021-01-01T00:00:00Z
CASE_KEYS = {"args", "target", "build_contexts", "error_key", "judge", "note", "known_differences", "rebuilds"}
JUDGES = ("docker26", "reference")


class CaseError(Exception):
    """A case directory that does not follow the format."""


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    args: dict = field(default_factory=dict)
    target: str | None = None
    build_contexts: dict = field(default_factory=dict)
    error_key: str | None = None
    judge: str = "docker26"
    note: str = ""
    rebuilds: list = field(default_factory=list)  # compat.rebuilds
    # what differs -> why, for differences of pybuild's not fixed yet (compat.compare's keys)
    known_differences: dict = field(default_factory=dict)

    @property
    def expected_path(self) -> Path:
        return self.path / "expected.json"

    def expected(self) -> dict:
        if not self.expected_path.exists():
            raise CaseError(f"{self.name}: no expected.json (python tests/compat/record.py {self.path})")
        return json.loads(self.expected_path.read_text())


def load_case(path: Path) -> Case:
    path = Path(path).resolve()
    if not (path / "Dockerfile").is_file():
        raise CaseError(f"{path}: no Dockerfile")
    settings = {}
    if (path / "case.json").exists():
        settings = json.loads((path / "case.json").read_text())
    unknown = set(settings) - CASE_KEYS
    if unknown:
        raise CaseError(f"{path.name}/case.json: unknown keys {sorted(unknown)}")
    if settings.get("judge", "docker26") not in JUDGES:
        raise CaseError(f"{path.name}/case.json: judge must be one of {JUDGES}")
    if settings.get("judge") == "reference" and not settings.get("note"):
        raise CaseError(f"{path.name}/case.json: a reference judge needs a note saying why")
    for name, folder in settings.get("build_contexts", {}).items():
        if not (path / folder).is_dir():
            raise CaseError(f"{path.name}/case.json: build context {name!r}: no directory {folder!r}")
    return Case(path.name, path, **settings)


def all_cases() -> list[Case]:
    if not CASES.is_dir():
        return []
    return [load_case(path) for path in sorted(CASES.iterdir()) if (path / "Dockerfile").is_file()]


@dataclass(frozen=True)
class Inputs:
    """One case's build inputs, made fresh in a work directory."""

    dockerfile: Path
    context: Path
    build_contexts: dict  # name -> directory
    args: dict
    target: str | None


def _fix_mtimes(top: Path) -> None:
    for folder, dirs, files in os.walk(top, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(folder, name), (CONTEXT_MTIME, CONTEXT_MTIME), follow_symlinks=False)
    os.utime(top, (CONTEXT_MTIME, CONTEXT_MTIME))


def _copy_tree(source: Path | None, dest: Path) -> None:
    if source is not None and source.is_dir():
        shutil.copytree(source, dest, symlinks=True)
    else:
        dest.mkdir(parents=True)
    _fix_mtimes(dest)


def prepare(case: Case, work: Path) -> Inputs:
    """Copy the case's Dockerfile, context and named contexts into `work`
    (the Dockerfile outside the context), fix their mtimes, then run its
    setup.py's make(context)."""
    work.mkdir(parents=True, exist_ok=True)
    dockerfile = work / "Dockerfile"
    shutil.copyfile(case.path / "Dockerfile", dockerfile)
    context = work / "context"
    _copy_tree(case.path / "context", context)
    named = {}
    for name, folder in case.build_contexts.items():
        named[name] = work / "named" / name
        _copy_tree(case.path / folder, named[name])
    setup = case.path / "setup.py"
    if setup.exists():
        spec = importlib.util.spec_from_file_location(f"compat_setup_{case.name.replace('-', '_')}", setup)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.make(context)
    return Inputs(dockerfile, context, named, dict(case.args), case.target)
