"""The harness's own promises, without docker: what a record keeps of a
layer stack, that a comparison reports each kind of difference, how known
differences and rebuild steps are read, and record.py's refusals."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from compat.builders import Flags, docker_error, steps_that_ran
from compat.cases import Case, CaseError, load_case
from compat.compare import differences, unexplained
from compat.layers import NEW_SINCE, filesystem_change
from compat.rebuilds import case_record

RECORD = Path(__file__).with_name("record.py")


def _layer(*members) -> bytes:
    """A layer tar of (name, kind, extra) members: kind "file" (extra: bytes),
    "dir", "link" (extra: hard link target), "sym" (extra: target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, *extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = extra[1] if len(extra) > 1 else 100
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, extra[0]
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra[0]
                tar.addfile(info)
            else:
                data = extra[0] if extra else b""
                info.size, info.mode = len(data), 0o644
                if kind == "xattr":
                    info.pax_headers = {"SCHILY.xattr.user.k": "v"}
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


BASE = _layer(("etc", "dir"), ("etc/passwd", "file", b"root\n"), ("etc/group", "file", b"g\n"),
              ("home", "dir"), ("home/app", "dir"), ("home/app/x", "file", b"x"), ("tmp", "dir"))


def test_the_record_keeps_what_the_layers_change_over_the_base():
    own = _layer(("etc", "dir"), ("etc/.wh.group", "file"), ("home", "dir"), ("home/.wh..wh..opq", "file"),
                 ("home/new", "file", b"n", NEW_SINCE + 5), ("tmp", "dir"),
                 ("a", "file", b"data"), ("b", "link", "a"), ("s", "sym", "a"), ("x", "xattr", b"1"))
    change = filesystem_change([BASE, own], 1)
    # /etc and /tmp are repeated unchanged: no difference; /home is too,
    # but its opaque marker hid the base's app/ (a deletion).
    assert sorted(change) == ["/a", "/b", "/etc/group", "/home/app", "/home/new", "/s", "/x"]
    assert change["/etc/group"] == change["/home/app"] == {"type": "deleted"}
    assert change["/home/new"]["mtime"] == "new"
    assert change["/a"]["mtime"] == 100 and change["/a"]["links"] == change["/b"]["links"] == "/a"
    assert change["/a"]["sha256"] == change["/b"]["sha256"] and change["/a"]["size"] == 4
    assert change["/s"]["target"] == "a" and change["/s"]["type"] == "symlink"
    assert change["/x"]["xattrs"] == {"user.k": "v"}


def test_only_the_topmost_deleted_path_is_recorded_and_a_scratch_image_records_all():
    gone = _layer(("home", "dir"), ("home/.wh.app", "file"))
    assert filesystem_change([BASE, gone], 1) == {"/home/app": {"type": "deleted"}}
    assert set(filesystem_change([BASE], 0)) == {"/etc", "/etc/passwd", "/etc/group", "/home", "/home/app",
                                                 "/home/app/x", "/tmp"}


def _case(**settings) -> Case:
    return Case("probe", Path("/nonexistent"), **settings)


IMAGE = {"image": {"config": {"Cmd": ["sh"]}, "history": [], "files": {"/a": {"type": "file", "mode": "0644"}}}}


def test_each_difference_is_reported_under_its_key():
    got = json.loads(json.dumps(IMAGE))
    got["image"]["config"]["User"] = "1"
    got["image"]["files"]["/a"]["mode"] = "0600"
    got["image"]["files"]["/b"] = {"type": "dir"}
    got["image"]["history"] = [{"created_by": "RUN x"}]
    found = differences(_case(), IMAGE, got)
    assert sorted(found) == ["/a", "/b", "config User", "history"]
    assert 'mode docker "0644" pybuild "0600"' in found["/a"]
    assert differences(_case(), IMAGE, IMAGE) == {}
    rebuilt = {**IMAGE, "rebuilds": [{"ran": ["RUN x"]}]}
    assert list(differences(_case(), rebuilt, {**IMAGE, "rebuilds": [{"ran": []}]})) == ["rebuild 1"]


def test_a_case_fails_on_a_difference_it_does_not_name_and_when_a_named_one_is_gone():
    found = {"/a": "mode differs", "config User": "User differs"}
    assert unexplained(_case(known_differences={"/a": "why", "config User": "why"}), "docker 26", found) == ""
    failure = unexplained(_case(known_differences={"/a": "why"}), "docker 26", found)
    assert failure.startswith("probe: pybuild differs from docker 26:") and "- config User: User differs" in failure
    assert "/a" not in failure
    failure = unexplained(_case(known_differences={"/a": "why", "history": "why"}), "docker 26", {"/a": "x"})
    assert failure == "probe: known differences gone, drop them from case.json: ['history']"
    assert unexplained(_case(), "docker 26", {}) == ""


def test_an_error_must_match_in_key_line_exit_and_have_no_traceback():
    want = {"error": {"message": 'failed to solve: "/m": not found', "line": 3}}
    good = {"error": {"message": 'ERROR: "/m": not found\nat Dockerfile:3:', "line": 3}, "exit": 1,
            "traceback": False}
    case = _case(error_key='"/m": not found')
    assert differences(case, want, good) == {}
    bad = {"error": {"message": "Traceback (most recent call last): boom", "line": 2}, "exit": 2, "traceback": True}
    assert sorted(differences(case, want, bad)) == ["error key", "exit", "line", "traceback"]
    assert list(differences(case, want, IMAGE)) == ["outcome"]
    assert list(differences(_case(), IMAGE, good)) == ["outcome"]


def test_docker_error_keeps_the_last_error_and_the_excerpt_line_without_random_ids():
    output = ("#6 ERROR: x\nDockerfile:3\n--------------------\n   3 | >>> COPY m /\n"
              "ERROR: failed to solve: failed to compute cache key: failed to calculate checksum of ref "
              'ab-12::k9x: "/m": not found\n')
    assert docker_error(output) == {"message": 'failed to solve: failed to compute cache key: "/m": not found',
                                    "line": 3}
    mounts = ("ERROR: failed to solve: lstat /tmp/pb-d26-u6yi/data/buildkit/containerd-overlayfs/cachemounts/"
              "buildkit1125907098/f/sub: not a directory; open /tmp/pb-d26-ef6y/data/tmp/buildkit-mount12707/x: no")
    assert docker_error(mounts)["message"] == "failed to solve: lstat <mount>/f/sub: not a directory; open <mount>/x: no"


def test_steps_that_ran_leave_out_cached_steps_numbers_from_and_unnamed_stages():
    events = [{"vertexes": [{"digest": str(n), "name": name, "completed": "t", "cached": cached}]}
              for n, (name, cached) in enumerate([
                  ("[1/3] FROM 127.0.0.1:5000/busybox@sha256:x", False), ("[2/3] COPY a /", True),
                  ("[3/3] RUN x", False), ("[deps 2/2] RUN y", False), ("[stage-1 2/2] WORKDIR /w", False),
                  ("[internal] load build context", False)])]
    assert steps_that_ran("\n".join(map(json.dumps, events))) == ["RUN x", "WORKDIR /w", "deps: RUN y"]


def test_a_case_that_breaks_the_format_is_refused(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    (tmp_path / "case.json").write_text('{"judge": "reference"}')
    with pytest.raises(CaseError, match="needs a note"):
        load_case(tmp_path)
    (tmp_path / "case.json").write_text('{"targte": "x"}')
    with pytest.raises(CaseError, match="unknown keys"):
        load_case(tmp_path)


def test_rebuilds_edit_the_context_between_builds_and_refuse_what_leaves_it(tmp_path):
    (tmp_path / "old.txt").write_text("old\n")
    os.utime(tmp_path / "old.txt", (100, 100))
    seen = []  # (flags, the context's names, old.txt's mtime) of each build

    def build(flags: Flags) -> dict:
        old = tmp_path / "old.txt"
        seen.append((flags, sorted(path.name for path in tmp_path.iterdir()),
                     old.stat().st_mtime if old.exists() else None))
        return {"image": len(seen), **({"ran": [f"RUN {len(seen)}"]} if flags.steps else {})}
    case = _case(rebuilds=[{"touch": ["old.txt"]}, {"write": {"d/new.txt": "n"}, "remove": ["old.txt"],
                                                     "no_cache_filter": "deps"}])
    assert case_record(case, tmp_path, build, lambda: None) == {"image": 3, "rebuilds": [{"ran": ["RUN 2"]},
                                                                                        {"ran": ["RUN 3"]}]}
    assert [names for _, names, _ in seen] == [["old.txt"], ["old.txt"], ["d"]]
    assert seen[0][2] == 100 and seen[1][2] > NEW_SINCE
    assert seen[2][0] == Flags(no_cache_filter="deps", steps=True)
    with pytest.raises(CaseError, match="unknown keys"):
        case_record(_case(rebuilds=[{"wirte": {}}]), tmp_path, build, lambda: None)
    with pytest.raises(CaseError, match="leaves the context"):
        case_record(_case(rebuilds=[{"remove": ["../x"]}]), tmp_path, build, lambda: None)
    assert (tmp_path / "d" / "new.txt").read_text() == "n"


def test_record_refuses_bad_input_in_one_line(tmp_path):
    def record(*args):
        return subprocess.run([sys.executable, str(RECORD), *args], capture_output=True, text=True, timeout=60)
    assert "--docker-host" in record("--help").stdout
    done = record(str(tmp_path))
    assert done.returncode == 1 and done.stderr.strip() == f"record.py: {tmp_path}: no Dockerfile"
    done = record()
    assert done.returncode == 2 and "name case directories or give --all" in done.stderr


def test_record_refuses_a_graph_driver_daemon_and_writes_nothing(docker26, busybox_image, tmp_path):
    """On a graph driver moby's exporter writes the image, not BuildKit's:
    its RUN layers differ (they carry /etc), so it must not be recorded."""
    case = Path(__file__).parents[2] / "testdata" / "compat" / "interop-copy-plain"
    before = (case / "expected.json").read_bytes()
    temp = tmp_path / "temp"
    temp.mkdir()
    done = subprocess.run([sys.executable, str(RECORD), "--docker-host", docker26.socket, "--base", busybox_image.ref,
                           str(case)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(temp)})
    assert done.returncode == 1
    assert "graph driver, not containerd's store" in done.stderr and "Traceback" not in done.stderr
    assert (case / "expected.json").read_bytes() == before
    assert list(temp.iterdir()) == []  # its docker config with buildx is gone


def test_every_file_of_the_cases_is_in_git():
    # A case's file that git ignores or was never added builds another
    # context in a fresh clone than the one recorded (three ignore-* cases'
    # build/ directories once matched the root .gitignore).
    top = Path(__file__).resolve().parents[2]
    if not (top / ".git").exists():
        pytest.skip("not a git checkout: nothing to compare with")
    listed = subprocess.run(["git", "ls-files", "--others", "--", "testdata/compat"], cwd=top,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert [path for path in listed if "__pycache__" not in path] == []
