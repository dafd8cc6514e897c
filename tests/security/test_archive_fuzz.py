"""Hypothesis fuzzing of archive member sequences (issue 14): files,
directories, fifos, symlinks with absolute and `..` targets, hard links,
replacements of any earlier member and deep nesting, each sequence extracted
by both extractors (ADD's builder.ops.archive.extract and the base layers'
runtime.layer.apply_layer) into destinations that sit beside a sentinel
tree. A refusal is allowed (apply_layer refuses more), an escape is not:
after every example the lstat and content of everything outside the
destinations is unchanged, and no member name appeared at the host's `/`.
Runs with openat2 and with the fallback walk of runtime.confine."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from builder.ops import archive
from runtime import confine
from runtime.errors import UnsafeLayer
from runtime.layer import apply_layer
from fixtures.victims import tree_state

# Unusual names, so that one appearing at the host's / or /tmp is ours.
_PARTS = ["fz_a", "fz_b", "fz_s"]
_MODES = [0o644, 0o777, 0o000, 0o4755, 0o2775, 0o1777, 0o555, 0o600]
# Weighted by repetition: the attacks are sequences of links and
# directories more than of files.
_KINDS = ["dir"] * 5 + ["symlink"] * 5 + ["hardlink"] * 4 + ["file"] * 4 + ["fifo"]
# {S} is the sentinel's absolute host path, {UP} enough `../` to climb from
# the destination to the host's `/`: filled in per example.
_ABSOLUTE_TARGETS = ["{S}", "{S}/file", "{S}/dir", "{S}/dir/x", "{S}/link", "{S}/dlink", "/"]
_CLIMBING_TARGETS = ["{UP}{S}/file", "{UP}{S}/dir", "../sentinel/file", "../../sentinel/dir", "../.."]
_INNER_TARGETS = ["..", ".", "fz_a", "fz_a/fz_b", "/fz_a", "../fz_s"]
_HOSTILE_TARGETS = _ABSOLUTE_TARGETS + _CLIMBING_TARGETS


def _earlier_paths(earlier: list[tuple[str, str]]) -> list[str]:
    """Every earlier member name and each directory on its way."""
    found = []
    for name, _ in earlier:
        parts = name.strip("/").split("/")
        found += ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    return sorted(set(p for p in found if p not in ("", ".")))


@st.composite
def _name(draw, earlier: list[tuple[str, str]]) -> str:
    known = _earlier_paths(earlier)
    how = draw(st.sampled_from(["replace", "replace", "below", "fresh", "fresh"] if known else ["fresh"]))
    if how == "replace":  # any earlier member, or a directory on its way
        return draw(st.sampled_from(known))
    depth = draw(st.integers(1, 8)) if draw(st.integers(0, 3)) == 0 else draw(st.integers(1, 3))
    parts = [draw(st.sampled_from(_PARTS)) for _ in range(depth)]
    if draw(st.integers(0, 19)) == 0:  # rare: ADD refuses it if it climbs out, a layer always
        parts.insert(draw(st.integers(0, len(parts) - 1)), "..")
    if how == "below":  # nest under an earlier one
        parts.insert(0, draw(st.sampled_from(known)))
    lead = draw(st.sampled_from(["", "./"] * 9 + ["/"]))  # a layer refuses a leading /
    return lead + "/".join(parts)


def _link_target(draw, kind: str, earlier: list[tuple[str, str]]) -> str:
    known = _earlier_paths(earlier)
    if kind == "hardlink":
        members = [name for name, was in earlier if was != "dir"]
        if members and draw(st.integers(0, 9)) < 7:
            return draw(st.sampled_from(members))  # as written: `./x`, `/x` and `x` are one member
        return draw(st.sampled_from(_HOSTILE_TARGETS + known))
    pick = draw(st.integers(0, 19))
    if pick < 10:
        return draw(st.sampled_from(_ABSOLUTE_TARGETS))
    if pick < 13:  # ADD refuses a relative target climbing out
        return draw(st.sampled_from(_CLIMBING_TARGETS))
    return draw(st.sampled_from(_INNER_TARGETS + known))


@st.composite
def member_sequences(draw) -> list[tuple]:
    members: list[tuple] = []
    earlier: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, 10))):
        name = draw(_name(earlier))
        kind = draw(st.sampled_from(_KINDS))
        link = _link_target(draw, kind, earlier) if kind in ("symlink", "hardlink") else ""
        data = draw(st.binary(max_size=32)) if kind == "file" else b""
        mode = draw(st.sampled_from(_MODES))
        uid = draw(st.sampled_from([0, 1234]))
        mtime = draw(st.sampled_from([0, 1_500_000_000]))
        members.append((name, kind, link, data, mode, uid, mtime))
        earlier.append((name, kind))
    return members


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}


def _tar(members, sentinel: Path, dest: Path) -> bytes:
    up = "../" * (len(dest.parts) + 1)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link, data, mode, uid, mtime in members:
            info = tarfile.TarInfo(name + ("/" if kind == "dir" and not name.endswith("/") else ""))
            link = link.replace("{UP}", up).replace("{S}", str(sentinel)).replace("//", "/")
            info.type, info.linkname, info.mode = _TYPES[kind], link, mode
            info.uid = info.gid = uid
            info.mtime, info.size = mtime, len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _make_sentinel(top: Path) -> None:
    (top / "dir" / "x").mkdir(parents=True)
    (top / "file").write_text("sentinel\n")
    (top / "dir" / "x" / "inside").write_text("inside\n")
    os.symlink("file", top / "link")
    os.symlink(str(top / "dir"), top / "dlink")
    for path, mode in [(top / "file", 0o600), (top / "dir" / "x", 0o700), (top / "dir", 0o750)]:
        os.chmod(path, mode)
        os.utime(path, ns=(10**18, 10**18))


def _nothing_at_host_root() -> None:
    for top in ("/", "/tmp", "/tmp/pytest-of-root"):
        found = [name for name in os.listdir(top) if name.startswith("fz_")] if os.path.isdir(top) else []
        assert found == [], f"{top} got {found}"


@pytest.fixture(params=["openat2", "walk"])
def confine_mode(request, monkeypatch):
    if request.param == "walk":
        monkeypatch.setattr(confine, "HAVE_OPENAT2", False)
    return request.param


def _outside(tree: dict, dests: list[Path]) -> dict:
    return {path: state for path, state in tree.items()
            if not any(path == str(d) or path.startswith(str(d) + "/") for d in dests)}


# The issue's attacks, which the 130 drawn sequences do not all reach (the
# old extractors passed them; 1500 found the second), tried every run:
_ISSUE_ATTACKS = [
    # attack 1: a symlink to a host file, then a hard link to it with mode 0666
    [("fz_s", "symlink", "{S}/file", b"", 0o777, 0, 0), ("fz_a", "hardlink", "fz_s", b"", 0o666, 0, 0)],
    # ... and directories whose deferred metadata lands on the host's once
    # their parent is replaced by a symlink to a host directory
    [("fz_a", "dir", "", b"", 0o755, 0, 0), ("fz_a/x", "dir", "", b"", 0o777, 1234, 0),
     ("fz_a", "symlink", "{S}/dir", b"", 0o777, 0, 0)],
    [("fz_a", "dir", "", b"", 0o644, 0, 0), ("fz_a", "symlink", "{S}", b"", 0o644, 0, 0)],
]


@settings(max_examples=130, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(members=member_sequences())
@example(members=_ISSUE_ATTACKS[0])
@example(members=_ISSUE_ATTACKS[1])
@example(members=_ISSUE_ATTACKS[2])
def test_no_member_sequence_changes_anything_outside_the_destination(tmp_path, confine_mode, members):
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        _make_sentinel(work / "sentinel")
        dests = [work / "add", work / "layer"]
        for dest in dests:
            dest.mkdir()
        source = work / "archive.tar"
        source.write_bytes(_tar(members, work / "sentinel", dests[0]))
        before = _outside(tree_state(work), dests)
        try:
            archive.extract(source, dests[0])
        except archive.ArchiveError:
            pass  # refused: fine; any other error is a bug
        try:
            apply_layer(io.BytesIO(source.read_bytes()), dests[1])
        except UnsafeLayer:
            pass
        assert _outside(tree_state(work), dests) == before
        _nothing_at_host_root()
    finally:
        shutil.rmtree(work)
