"""What each pybuild process imports is most of what it costs (issue 20).
The frontend is imported by every pybuild command (the CLI needs its error
types), so it must not drag networkx in: only a build that makes a graph pays
for it (~0.1 s of CPU). A cached build with a local output loads no registry
or signing code, and the no-op memo's replay none of the build's."""

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
# What a replay of the memo does without: no pool, no config file here, and
# nothing written but the memo's own bookkeeping (~15 ms of ~80).
_NOT_FOR_A_REPLAY = {"builder.build", "networkx", "click", "concurrent.futures", "logging", "tomllib",
                     "tempfile", "shutil", "random", "subprocess"}


def _console(tmp_path: Path, *args: str) -> tuple[str, set[str]]:
    """Run the console script's main() under `-X importtime`: its stderr,
    and the modules it imported beyond a bare interpreter's startup."""
    from fixtures.pybuild import pybuild_env

    def run(*command: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, text=True,
                              env=pybuild_env(tmp_path), cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    def imported(stderr: str) -> set[str]:
        return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
                if line.startswith("import time:") and "cumulative" not in line}

    console = "import sys; sys.argv[0] = 'pybuild'; from builder.entry import main; main()"
    done = run("-c", console, "--root", str(tmp_path / "root"), "--progress=plain", *args)
    return done.stderr, imported(done.stderr) - imported(run("-c", "pass").stderr)


def _context(tmp_path: Path, base: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n")
    (context / "a.txt").write_text("a\n")
    return context


def test_a_cached_build_with_an_oci_output_imports_no_registry_or_signing_code(busybox_image, tmp_path):
    """Run as the console script runs it: `-o` turns the no-op memo off, so
    this is the full cached path, with its import table read back."""
    args = ["-o", f"type=oci,dest={tmp_path / 'out.tar'}", str(_context(tmp_path, busybox_image.ref))]
    _console(tmp_path, *args)
    (tmp_path / "out.tar").unlink()
    stderr, imported = _console(tmp_path, *args)
    assert stderr.count(" CACHED") >= 2  # the COPY and the RUN: the warm path, not a build
    assert (tmp_path / "out.tar").stat().st_size > 0
    assert {"builder.build", "builder.export.oci"} <= imported  # the table was read
    assert not _NOT_FOR_A_LOCAL_OUTPUT & imported


def test_a_memo_replay_imports_no_thread_pool_toml_or_tempfile(busybox_image, tmp_path):
    """The no-op memo's replay, run as the console script runs it, once the
    memo is written (a build, then the same command once its inputs have
    settled, builder/root/memo.py)."""
    args = ["-t", "import-cost", str(_context(tmp_path, busybox_image.ref))]
    _console(tmp_path, *args)
    _console(tmp_path, *args)
    stderr, imported = _console(tmp_path, *args)
    assert "writing image sha256:" in stderr
    assert {"builder.root.replay", "cache.store", "runtime.lease"} <= imported  # it replayed, and read the root
    assert not _NOT_FOR_A_REPLAY & imported
