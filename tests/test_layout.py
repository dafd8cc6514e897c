"""The layout rules of docs/architecture.md that a reader relies on: no
import loops in any package (counting imports inside functions, which
only hide a loop), modules small enough to read, and no function whose
parameter list stands in for a record."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("frontend", "builder", "cache", "runtime")
MAX_MODULE_LINES = 500
MAX_PARAMETERS = 12


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> set[str]:
    """The project modules `module` imports anywhere in its body, except
    under `if TYPE_CHECKING:` (annotations only, never executed)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for branch in ast.walk(tree)
                   if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
                   for node in ast.walk(branch)}
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[:len(package) - node.level + 1], *filter(None, [node.module])])
            names |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    targets = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        # A submodule importing its own package's __init__ is how Python loads it, not a loop.
        if name and name != module and not module.startswith(name + "."):
            targets.add(name)
    return targets


def test_no_import_loops():
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        graph.add_node(module)
        graph.add_edges_from((module, target) for target in _imported(module, path))
    loops = [sorted(group) for group in nx.strongly_connected_components(graph) if len(group) > 1]
    assert not loops


def test_the_loop_finder_sees_a_loop_inside_a_function(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("import builder.b\n")
    (tmp_path / "b.py").write_text("def f():\n    from builder import a\n")
    monkeypatch.setitem(MODULES, "builder.a", tmp_path / "a.py")
    monkeypatch.setitem(MODULES, "builder.b", tmp_path / "b.py")
    assert _imported("builder.b", tmp_path / "b.py") == {"builder.a"}
    assert _imported("builder.a", tmp_path / "a.py") == {"builder.b"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small_enough_to_read(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module}: {lines} lines"


def test_no_function_takes_a_record_as_parameters():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                count = len(names) - (names[:1] in (["self"], ["cls"]))
                if count > MAX_PARAMETERS:
                    long.append(f"{module}.{node.name}: {count}")
    assert not long
