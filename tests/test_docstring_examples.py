"""The examples in the packages' module docstrings run as written: each
indented block of a module docstring that starts with an import is a Python
example, run in order (later blocks may rely on what earlier ones built),
with the registry and root the examples name replaced by the suite's."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("builder", "frontend", "cache", "runtime")
# What the examples name, and what the suite has instead.
EXAMPLE_BASE = "127.0.0.1:5000/busybox:latest"
EXAMPLE_ROOT = "/tmp/pb"


def _blocks(docstring: str) -> list[str]:
    """The indented blocks of a docstring, dedented; a blank line inside a
    block belongs to it."""
    blocks, current = [], []
    for line in docstring.splitlines() + [""]:
        if line.startswith("    ") or (current and not line.strip()):
            current.append(line)
            continue
        if current:
            blocks.append(textwrap.dedent("\n".join(current)).strip() + "\n")
        current = []
    return blocks


def _examples() -> dict[str, list[str]]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
            code = [b for b in _blocks(docstring) if b.startswith(("from ", "import "))]
            if code:
                parts = path.relative_to(REPO).with_suffix("").parts
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = code
    return found


EXAMPLES = _examples()


def test_the_python_api_has_examples():
    # Never a test of nothing: the Python API's module shows how to call it.
    assert "builder.build" in EXAMPLES


@pytest.mark.parametrize("module", sorted(EXAMPLES))
def test_module_examples_run(module, busybox_image, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the examples name paths as the README does, from the checkout
    for number, code in enumerate(EXAMPLES[module], 1):
        code = code.replace(EXAMPLE_BASE, busybox_image.ref).replace(EXAMPLE_ROOT, str(tmp_path / "root"))
        exec(compile(code, f"<{module} docstring example {number}>", "exec"), {"__name__": f"example_{number}"})
