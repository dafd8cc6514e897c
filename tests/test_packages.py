"""pybuild's packages have generic names (PyPI has unrelated `builder`,
`cache`, `runtime` and `frontend` distributions): each must come from this
project, and imports must point one way (docs/architecture.md)."""

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["frontend", "builder", "cache", "runtime"]
# What each package may import of the others.
ALLOWED = {"frontend": set(), "cache": set(), "runtime": {"cache"}, "builder": {"frontend", "cache", "runtime"}}


@pytest.mark.parametrize("name", PACKAGES)
def test_package_is_this_projects(name):
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == REPO / name


@pytest.mark.parametrize("name", PACKAGES)
def test_imports_point_one_way(name):
    wrong = set()
    for path in (REPO / name).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top = node.module.split(".")[0]
            elif isinstance(node, ast.Import):
                tops = {alias.name.split(".")[0] for alias in node.names}
                wrong |= {(path.name, t) for t in tops if t in PACKAGES and t != name and t not in ALLOWED[name]}
                continue
            else:
                continue
            if top in PACKAGES and top != name and top not in ALLOWED[name]:
                wrong.add((path.name, top))
    assert not wrong


def test_every_package_is_listed_for_installation():
    """A package missing from pyproject's explicit list works in an editable
    install and is absent from a real one."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(path.parent.relative_to(REPO).parts)
        for name in PACKAGES
        for path in (REPO / name).rglob("__init__.py")
    }
    assert found == listed
