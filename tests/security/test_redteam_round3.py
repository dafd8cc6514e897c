"""Red-team round 3: a lazy blob's recipe damaged on disk (ROOT/content/lazy/
<alg>/<hex>, the JSON that says how to make a layer's bytes from a snapshot)
is a Python traceback from `pybuild doctor`, the command meant to report
damage: ContentStore.recipe() json.loads the file unchecked, unlike the
manifests and configs that 6539ceb moved to read_json. An empty or
truncated recipe is what put_lazy leaves after a crash (tmp + rename, no
fsync). Expected: doctor names the damaged blob and exits 1, no traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.pybuild import pybuild_env

PYBUILD = [shutil.which("pybuild") or sys.executable, *([] if shutil.which("pybuild") else ["-m", "builder.cli"])]


def _run(env, *args):
    return subprocess.run([*PYBUILD, *args], capture_output=True, timeout=120, env=env)


@pytest.mark.parametrize("damage", [b"", b"garbage{", b'{"kind": "snapshot-tar"'])
def test_doctor_on_a_damaged_lazy_recipe(tmp_path: Path, damage: bytes):
    env = pybuild_env(tmp_path)
    root = tmp_path / "root"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (ctx / "a").write_text("a\n")
    done = _run(env, "build", "--root", str(root), "-q", "-t", "app", str(ctx))
    assert done.returncode == 0, done.stderr
    recipes = list((root / "content" / "lazy" / "sha256").iterdir())
    assert recipes, "the build left no lazy layer"
    for recipe in recipes:
        recipe.write_bytes(damage)

    done = _run(env, "doctor", "--root", str(root))
    out = done.stdout.decode() + done.stderr.decode()
    assert "Traceback" not in out, out
    assert done.returncode == 1, out
    assert any(recipe.name in out for recipe in recipes), out
