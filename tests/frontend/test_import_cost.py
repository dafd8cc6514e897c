"""The frontend is imported by every pybuild command (the CLI needs its error
types), so it must not drag networkx in: only a build that makes a graph pays
for it (~0.1 s of CPU)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _modules_after(statement: str) -> set[str]:
    """What `statement` imports, beyond what the interpreter's startup (its
    site, the host's .pth hooks) already has."""
    done = subprocess.run(
        [sys.executable, "-c",
         f"import sys; before = set(sys.modules); {statement}; print('\\n'.join(set(sys.modules) - before))"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    return set(done.stdout.split())


def test_importing_the_frontend_leaves_networkx_out():
    loaded = _modules_after("import frontend, frontend.check, frontend.errors")
    assert "frontend.definition" in loaded
    assert "networkx" not in loaded


def test_a_converted_definition_holds_a_frozen_networkx_graph():
    import networkx as nx

    from frontend import convert

    definition = convert("FROM scratch\nCOPY a /a\n", path="Dockerfile",
                         resolve_image=lambda ref, platform: None)
    assert isinstance(definition.graph, nx.DiGraph)
    assert nx.is_frozen(definition.graph)
    assert definition.target in definition.graph


def test_a_submodule_does_not_load_the_converter():
    """The package's names are lazy: importing one submodule (frontend.ops,
    which the ops of the builder read) costs no parser."""
    loaded = _modules_after("import frontend.ops")
    assert not {"frontend.convert", "frontend.parser", "frontend.lexer", "networkx"} & loaded


def test_the_memo_replay_does_not_load_the_ops():
    """Cache keys need the canonical form only (frontend.canonical); the
    ops' ~20 dataclasses cost ~10 ms to create, a seventh of a no-op build."""
    loaded = _modules_after("import builder.solver.keys, builder.solver.progress, builder.root.replay")
    assert "frontend.canonical" in loaded
    assert not {"frontend.ops", "frontend.convert", "networkx"} & loaded


def test_the_memo_replay_loads_no_thread_pool_and_no_toml_parser():
    """Only a build with steps to run starts the solver's pool, and only a
    config file needs tomllib: on a replay they cost ~10 ms of ~70."""
    loaded = _modules_after("import builder.solver.progress, builder.root.replay, builder.config")
    assert "builder.solver.scheduler" in loaded
    assert not {"concurrent.futures", "logging", "tomllib"} & loaded


def test_the_memo_replay_reads_leases_without_tempfile(tmp_path):
    """A replay asks whether a dead process left a lease (builder.root.replay
    ._left_over) and makes none: tempfile, shutil and random (~5 ms) are
    for making one."""
    loaded = _modules_after(f"import builder.root.replay; from runtime.lease import Leases; "
                            f"assert Leases({str(tmp_path)!r}).dead() == []")
    assert "runtime.lease" in loaded
    assert not {"shutil", "random"} & loaded


def test_the_package_still_exports_its_names():
    import frontend

    for name in frontend.__all__:
        assert getattr(frontend, name) is not None
    assert frontend.convert.__module__ == "frontend.convert"


def test_the_package_convert_stays_the_function_after_its_module_is_imported():
    """Importing the submodule frontend.convert (as the builder does) sets
    the package's attribute of that name; `frontend.convert` must stay the
    function, whichever is imported first (found by running this file after
    tests/test_docstring_examples.py)."""
    done = subprocess.run(
        [sys.executable, "-c", "import frontend.convert, frontend; print(callable(frontend.convert))"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    assert done.stdout.strip() == "True"


def test_a_root_processs_namespace_entry_imports_nothing_heavy():
    """builder/entry.py calls runtime.userns.enter() before the memo's
    replay: for root it must stay a uid check, not subprocess and shutil
    (~9 ms of a ~70 ms no-op rebuild)."""
    loaded = _modules_after("from runtime import userns; userns.enter(); import builder.root.replay")
    assert not {"subprocess", "shutil", "pwd"} & loaded


# What only a push, a signature, a registry client or a step that runs
# needs: a cached build whose output is local must not pay for it (~70 ms
# of a ~0.4 s process).
_NOT_FOR_A_LOCAL_OUTPUT = {"requests", "urllib3", "http.client", "ssl", "cryptography", "nacl",
                           "builder.registry.client", "builder.signing.sign", "builder.signing.store",
                           "concurrent.futures"}  # no step runs, no layer is compressed


def test_a_cached_build_with_an_oci_output_imports_no_registry_or_signing_code(busybox_image, tmp_path):
    """Run as the console script runs it: `-o` turns the no-op memo off, so
    this is the full cached path, with its import table read back."""
    from fixtures.pybuild import pybuild_env

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n")
    (context / "a.txt").write_text("a\n")
    console = "import sys; sys.argv[0] = 'pybuild'; from builder.entry import main; main()"
    args = ["--root", str(tmp_path / "root"), "--progress=plain", "-o", f"type=oci,dest={tmp_path / 'out.tar'}",
            str(context)]
    env = pybuild_env(tmp_path)

    def run() -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", console, *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    run()
    (tmp_path / "out.tar").unlink()
    warm = run()
    assert warm.stderr.count(" CACHED") >= 2  # the COPY and the RUN: the warm path, not a build
    assert (tmp_path / "out.tar").stat().st_size > 0
    imported = {line.rsplit("|", 1)[1].strip() for line in warm.stderr.splitlines()
                if line.startswith("import time:") and "cumulative" not in line}
    assert {"builder.build", "builder.export.oci"} <= imported  # the table was read
    assert not _NOT_FOR_A_LOCAL_OUTPUT & imported
