"""Issue 17 and the no-op memo (builder.root.memo): a memo is keyed by the
command line, --platform included, so one platform's memo never answers
another's command; and an identical build for several platforms is
answered from its memo while the index, its tag, every platform's manifest,
config and target result are still in the root, and is not once a context
file one platform's COPY reads has changed.

A replay is detected as tests/cli/test_memo.py does: builder.root.replay's
`replay` run here, in the command's working directory and environment,
returns 0 when the memo answered and None when the full build must run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.root.replay import replay
from e2e.test_multiplatform import PLATFORMS, pybuild
from fixtures.pybuild import pybuild_env

pytestmark = pytest.mark.e2e


@pytest.fixture
def here(tmp_path, monkeypatch):
    """The command's working directory and environment, as the console
    script the tests spawn sees them (both are part of a memo's key)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "environ", pybuild_env(tmp_path))
    return tmp_path


def _context(tmp_path: Path, dockerfile: str, files: dict[str, str]) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (context / name).write_text(text)
    time.sleep(0.3)  # settled: the first build may write its memo
    return context


def _architecture(tmp_path: Path, root: Path, tag: str) -> str:
    inspected = json.loads(pybuild("inspect", "--root", str(root), tag, tmp_path=tmp_path).stdout)
    return inspected["Config"]["architecture"]


def _memos(root: Path) -> list[Path]:
    directory = root / "memo"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def test_a_platforms_memo_never_answers_another_platform(here, busybox_index, capsys):
    context = _context(here, f"FROM {busybox_index.ref}\nCOPY a.txt /a.txt\n", {"a.txt": "a\n"})
    root = here / "root"

    def command(platform: str | None) -> list[str]:
        return ["build", *(["--platform", platform] if platform else []), "--root", str(root), "-t", "same",
                str(context)]

    pybuild(*command("linux/arm64"), tmp_path=here)
    assert _memos(root), "the arm64 build wrote its memo"
    assert replay(command("linux/arm64")) == 0  # its own command is answered
    capsys.readouterr()
    # The same tag for another platform, and for the default one (this
    # host's), each right after arm64's: the image stored must be theirs.
    for platform, arch in [("linux/amd64", "amd64"), ("linux/arm64", "arm64"), (None, "amd64"),
                           ("linux/arm64", "arm64")]:
        pybuild(*command(platform), tmp_path=here)
        assert _architecture(here, root, "same") == arch, platform
    # The tag names arm64's image now: amd64's memo must not answer.
    assert replay(command("linux/amd64")) is None
    assert replay(command(None)) is None


def test_a_no_op_build_for_several_platforms_is_replayed(here, busybox_index, capsys):
    context = _context(here, f"FROM {busybox_index.ref}\nARG TARGETARCH\nCOPY ${{TARGETARCH}}.txt /own.txt\n",
                       {"amd64.txt": "for amd64\n", "arm64.txt": "for arm64\n"})
    root = here / "root"
    command = ["build", "--platform", PLATFORMS, "--root", str(root), "--progress=plain", "-t", "multi",
               str(context)]
    first = pybuild(*command, tmp_path=here)
    memos = _memos(root)
    assert len(memos) == 1, first.stderr
    body = json.loads(memos[0].read_text())
    assert len(body["targets"]) == 2  # each platform's target result is checked

    capsys.readouterr()
    assert replay(command) == 0
    replayed = capsys.readouterr().err
    assert "[linux/arm64 2/2] COPY arm64.txt /own.txt" in replayed and "[linux/amd64 2/2] COPY amd64.txt" in replayed
    # What the full cached build prints (the CLI module never reads a memo).
    full = subprocess.run([sys.executable, "-m", "builder.cli", *command], capture_output=True, text=True,
                          env=os.environ, timeout=300)
    assert full.returncode == 0, full.stderr
    # Each step once, CACHED; the platforms' graphs are solved at once, so
    # the full build's numbering follows whichever thread came first.
    assert sorted(re.findall(r"^#\d+ (\[.*)$", replayed, re.M)) == sorted(re.findall(r"^#\d+ (\[.*)$", full.stderr,
                                                                                       re.M))
    assert replayed.count(" CACHED") == full.stderr.count(" CACHED") == 5  # the context, 2 FROM, 2 COPY
    written = re.compile(r"writing image (sha256:[0-9a-f]{64}) done")
    assert written.search(replayed).group(1) == written.search(full.stderr).group(1)
    index = json.loads((root / "content" / "blobs" / "sha256" / body["manifest"].split(":")[1]).read_bytes())
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]

    # A file only arm64's COPY reads: touched, the memo cannot vouch for the build.
    os.utime(context / "arm64.txt")
    assert replay(command) is None
    time.sleep(0.3)
    pybuild(*command, tmp_path=here)  # the full build (all cached) writes the memo again
    assert replay(command) == 0

    # arm64's manifest gone from the store: a full build would make it again.
    arm64 = next(m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    (root / "content" / "blobs" / "sha256" / arm64.split(":")[1]).unlink()
    assert replay(command) is None
    again = pybuild(*command, tmp_path=here)
    assert (root / "content" / "blobs" / "sha256" / arm64.split(":")[1]).is_file(), again.stderr
