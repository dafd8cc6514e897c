"""Fuzzing untrusted inputs with hypothesis: layer tars (runtime.layer's
apply_layer on mutated archives) and .dockerignore patterns. The Dockerfile
parser is fuzzed in tests/frontend/test_fuzz.py."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from frontend.dockerignore import Matcher, parse_dockerignore
from frontend.errors import FrontendError
from runtime.errors import RuntimeFailure, UnsafeLayer
from runtime.layer import apply_layer

_NAMES = st.sampled_from(["a", "b", "a/b", "a/b/c", "../x", "/abs", "a/../../y", ".", "./a", "a/.wh.b",
                          ".wh..wh..opq", "a/.wh..wh..opq", ".wh.a", "l", "l/x", "d/", "h"])
_TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                          tarfile.CHRTYPE, tarfile.FIFOTYPE, b"Z"])
_LINKS = st.sampled_from(["", "a", "/", "..", "../../..", "/etc/passwd", "a/b", "l", "/tmp"])


@st.composite
def _archives(draw) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for _ in range(draw(st.integers(1, 8))):
            info = tarfile.TarInfo(draw(_NAMES))
            info.type = draw(_TYPES)
            info.linkname = draw(_LINKS)
            info.mode = draw(st.integers(0, 0o7777))
            data = draw(st.binary(max_size=64)) if info.type == tarfile.REGTYPE else b""
            info.size = len(data)
            info.devmajor, info.devminor = 1, 3
            tar.addfile(info, io.BytesIO(data))
    raw = bytearray(out.getvalue())
    # then flip, cut or overwrite bytes anywhere, headers included
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "set"]))
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del raw[at:]
        else:
            raw[at] = draw(st.integers(0, 255))
    return bytes(raw)


def _snapshot_of(tmp: Path) -> Path:
    fs = tmp / "snap" / "fs"
    fs.mkdir(parents=True)
    return fs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(archive=_archives())
def test_apply_layer_on_mutated_tars_only_refuses_or_extracts_inside(tmp_path, archive):
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        fs = _snapshot_of(work)
        outside = work / "outside"
        outside.mkdir()
        before = set(os.listdir(work))
        try:
            apply_layer(io.BytesIO(archive), fs)
        except (UnsafeLayer, RuntimeFailure, tarfile.TarError):
            pass  # refused: fine; anything else is a bug
        assert set(os.listdir(work)) == before
        assert os.listdir(outside) == []
        for path in fs.rglob("*"):
            # nothing extracted is a symlink followed out: every entry's real
            # parent directory is inside the snapshot
            assert os.path.realpath(path.parent).startswith(str(fs.resolve()))
    finally:
        shutil.rmtree(work)


_PATTERN_CHARS = st.sampled_from(list("ab*?[]!^-/\\.#  \n") + ["**", "..", "!a", "[a-", "\\"])


@settings(max_examples=300, deadline=None)
@given(text=st.lists(_PATTERN_CHARS, max_size=30).map("".join),
       paths=st.lists(st.lists(st.sampled_from(["a", "b", "ab", ".a", "a.b", "x"]), min_size=1, max_size=4)
                      .map("/".join), max_size=5))
def test_dockerignore_matcher_never_crashes(text, paths):
    try:
        patterns = parse_dockerignore(text)
        matcher = Matcher(patterns)
    except FrontendError:
        return  # an invalid pattern is reported as a Dockerfile error
    for path in paths:
        assert isinstance(matcher.excluded(path), bool)
        assert isinstance(matcher.may_reinclude_below(path), bool)
