"""COPY/ADD/heredoc/WORKDIR into a rootfs directory, checked against
BuildKit's rules; ADD's archives and URLs with real files and real HTTP."""

from __future__ import annotations

import bz2
import email.utils
import hashlib
import http.server
import io
import lzma
import os
import stat
import tarfile

import pytest
import zstandard



from builder.context.trees import BuildContext  # noqa: E402
from builder.ops.copy import copy_into, make_dir, write_files  # noqa: E402
from builder.ops.copy_options import CopyError, parse_chmod  # noqa: E402
from builder.ops.source.http import FetchError, fetch_url  # noqa: E402
from fixtures.servers import LoopbackServer  # noqa: E402
from frontend.ops import InlineFile  # noqa: E402

T_FILE = 1_600_000_000_000_000_000  # a fixed source mtime, in ns


@pytest.fixture
def ctx_dir(tmp_path):
    root = tmp_path / "ctx"
    for rel, data, mode in [
        ("a.txt", b"a", 0o644),
        ("b.txt", b"bb", 0o600),
        ("run.sh", b"#!/bin/sh\n", 0o755),
        ("src/main.py", b"main", 0o644),
        ("src/util/helpers.py", b"helpers", 0o640),
    ]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, mode)
        os.utime(path, ns=(T_FILE, T_FILE))
    os.chmod(root / "src" / "util", 0o750)
    os.utime(root / "src" / "util", ns=(T_FILE, T_FILE))
    return root


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\napp:x:1001:\n")
    (root / "existing").mkdir()
    return root


def copy(ctx_dir, rootfs, sources, dest, **kw):
    excludes = kw.pop("excludes", ())
    sel = BuildContext(ctx_dir).select(sources, excludes=excludes)
    copy_into(rootfs, sel, dest, **kw)


def tree(root, under: str) -> dict[str, bytes | None]:
    """{relpath: content or None for a directory} below root/under."""
    base = root / under.lstrip("/")
    out = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), base)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, base)] = os.readlink(p).encode() if os.path.islink(p) else open(p, "rb").read()
    return out


# placement ---------------------------------------------------------------------

@pytest.mark.parametrize("sources, dest, look_at, expected", [
    (["a.txt"], "/dest", "/", {"dest": b"a"}),
    (["a.txt"], "/dest/", "/dest", {"a.txt": b"a"}),
    (["a.txt"], "/existing", "/existing", {"a.txt": b"a"}),
    (["a.txt"], "/deep/er/name.txt", "/deep", {"er": None, "er/name.txt": b"a"}),
    (["src"], "/app", "/app", {"main.py": b"main", "util": None, "util/helpers.py": b"helpers"}),
    (["src/"], "/app/", "/app", {"main.py": b"main", "util": None, "util/helpers.py": b"helpers"}),
    (["src/util"], "/existing", "/existing", {"helpers.py": b"helpers"}),
    (["*.txt"], "/d/", "/d", {"a.txt": b"a", "b.txt": b"bb"}),
    (["a.txt", "src"], "/m/", "/m", {"a.txt": b"a", "main.py": b"main", "util": None,
                                     "util/helpers.py": b"helpers"}),
    (["*.nothing"], "/never", "/", None),  # an empty wildcard does nothing at all
])
def test_placement(ctx_dir, rootfs, sources, dest, look_at, expected):
    before = tree(rootfs, "/")
    copy(ctx_dir, rootfs, sources, dest)
    if expected is None:
        assert tree(rootfs, "/") == before
    elif look_at == "/":
        assert {k: v for k, v in tree(rootfs, "/").items() if k not in before} == expected
    else:
        assert tree(rootfs, look_at) == expected


@pytest.mark.parametrize("sources", [["a.txt", "b.txt"], ["*.txt"]])
def test_several_sources_to_a_name_are_copied_there_in_turn(ctx_dir, rootfs, sources):
    # docker 26 (BuildKit 0.13): no "must be a directory" error; the last
    # file is what `dest` holds.
    copy(ctx_dir, rootfs, sources, "/d")
    assert (rootfs / "d").read_bytes() == b"bb"


def test_a_directory_then_a_file_to_a_name_merge_into_it(ctx_dir, rootfs):
    copy(ctx_dir, rootfs, ["src", "a.txt"], "/d")
    assert tree(rootfs, "/d") == {**tree(ctx_dir, "/src"), "a.txt": b"a"}


def test_parents_keeps_the_path_and_the_pivot_cuts_it(ctx_dir, rootfs):
    copy(ctx_dir, rootfs, ["src/util/helpers.py", "a.txt"], "/p/", parents=True)
    assert tree(rootfs, "/p") == {"a.txt": b"a", "src": None, "src/util": None, "src/util/helpers.py": b"helpers"}
    # intermediate directories copy the source's metadata
    assert stat.S_IMODE(os.stat(rootfs / "p/src/util").st_mode) == 0o750
    assert os.stat(rootfs / "p/src/util").st_mtime_ns == T_FILE
    copy(ctx_dir, rootfs, ["src/./util/helpers.py"], "/q/", parents=True)
    assert tree(rootfs, "/q") == {"util": None, "util/helpers.py": b"helpers"}


# metadata ----------------------------------------------------------------------

def test_modes_and_mtimes_kept_parents_0755_root(ctx_dir, rootfs):
    os.chown(ctx_dir / "a.txt", 4321, 4321)  # host owners never reach the image
    copy(ctx_dir, rootfs, ["src", "a.txt", "run.sh"], "/opt/app/")
    app = rootfs / "opt" / "app"
    for path, mode in [(app / "run.sh", 0o755), (app / "util" / "helpers.py", 0o640), (app / "util", 0o750),
                       (rootfs / "opt", 0o755), (app, 0o755)]:
        st = os.lstat(path)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, 0, 0), path
    assert os.stat(app / "util" / "helpers.py").st_mtime_ns == T_FILE
    assert os.stat(app / "util").st_mtime_ns == T_FILE


@pytest.mark.parametrize("spec, file_mode, dir_mode", [
    ("0640", 0o640, 0o640),
    ("4755", 0o4755, 0o4755),
    ("u+x", 0o744, 0o750),
    ("go-rwx", 0o600, 0o700),
    ("a=rX", 0o444, 0o555),
    ("u=rwx,g=rx,o=", 0o750, 0o750),
])
def test_chmod(ctx_dir, rootfs, spec, file_mode, dir_mode):
    copy(ctx_dir, rootfs, ["src"], "/app", chmod=spec)
    assert stat.S_IMODE(os.stat(rootfs / "app/util/helpers.py").st_mode) == parse_chmod(spec)(0o100640)
    assert stat.S_IMODE(os.stat(rootfs / "app/main.py").st_mode) == file_mode
    assert stat.S_IMODE(os.stat(rootfs / "app/util").st_mode) == dir_mode
    assert stat.S_IMODE(os.stat(rootfs / "app").st_mode) == 0o755  # created, not copied


@pytest.mark.parametrize("spec", ["8755", "07777777", "u+q", "rwx"])
def test_bad_chmod(spec):
    with pytest.raises(CopyError, match="invalid chmod"):
        parse_chmod(spec)


@pytest.mark.parametrize("spec, owner", [("app", (1000, 1001)), ("app:staff", (1000, 50)),
                                         ("1234", (1234, 1234)), ("1234:staff", (1234, 50))])
def test_chown_resolved_in_the_destination_rootfs(ctx_dir, rootfs, spec, owner):
    copy(ctx_dir, rootfs, ["src"], "/new/app/", chown=spec)
    for rel in ("new", "new/app", "new/app/main.py", "new/app/util", "new/app/util/helpers.py"):
        st = os.lstat(rootfs / rel)
        assert (st.st_uid, st.st_gid) == owner, rel
    assert os.lstat(rootfs / "etc").st_uid == 0  # existing directories are left alone


def test_chown_unknown_user_fails(ctx_dir, rootfs):
    with pytest.raises(Exception, match="unable to find user nobody"):
        copy(ctx_dir, rootfs, ["a.txt"], "/x", chown="nobody")


def test_from_a_stage_keeps_owners(tmp_path, rootfs):
    stage = tmp_path / "stage"
    (stage / "srv").mkdir(parents=True)
    (stage / "srv" / "data").write_bytes(b"d")
    os.chown(stage / "srv" / "data", 33, 33)
    copy_into(rootfs, BuildContext.of_tree(stage).select(["/srv/data"]), "/data")
    st = os.lstat(rootfs / "data")
    assert (st.st_uid, st.st_gid) == (33, 33)


# links and confinement ---------------------------------------------------------

def test_symlinks_and_hardlinks(ctx_dir, rootfs):
    os.symlink("main.py", ctx_dir / "src" / "alias")
    os.symlink("/etc/shadow", ctx_dir / "src" / "abs")
    os.link(ctx_dir / "src" / "main.py", ctx_dir / "src" / "hard")
    copy(ctx_dir, rootfs, ["src"], "/app")
    assert os.readlink(rootfs / "app" / "alias") == "main.py"
    assert os.readlink(rootfs / "app" / "abs") == "/etc/shadow"
    assert os.stat(rootfs / "app" / "hard").st_ino == os.stat(rootfs / "app" / "main.py").st_ino


@pytest.mark.parametrize("target", ["/", "../../..", "/../../outside"])
def test_a_symlink_in_the_image_never_takes_writes_out(tmp_path, ctx_dir, rootfs, target):
    os.symlink(target, rootfs / "jump")
    copy(ctx_dir, rootfs, ["a.txt"], "/jump/escaped.txt")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    landed = rootfs / ("outside/escaped.txt" if "outside" in target else "escaped.txt")
    assert landed.read_bytes() == b"a"


def test_merging_into_a_symlinked_directory_is_refused(tmp_path, ctx_dir, rootfs):
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "app").mkdir()
    os.symlink(str(outside), rootfs / "app" / "util")  # a host path: must not be followed
    with pytest.raises(CopyError, match="cannot copy to non-directory: /app/util"):
        copy(ctx_dir, rootfs, ["src"], "/app")
    assert list(outside.iterdir()) == []


def test_a_file_replaces_a_symlink_instead_of_writing_through_it(tmp_path, ctx_dir, rootfs):
    victim = tmp_path / "victim"
    victim.write_bytes(b"safe")
    os.symlink(str(victim), rootfs / "existing" / "a.txt")
    copy(ctx_dir, rootfs, ["a.txt"], "/existing/")
    assert victim.read_bytes() == b"safe"
    assert not os.path.islink(rootfs / "existing" / "a.txt")


# ADD archives ------------------------------------------------------------------

def make_tar(members, compression="") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_500_000_000
            info.uid = info.gid = 7
            if kind == "file":
                info.size = len(payload)
                info.mode = 0o4755 if name.endswith(".suid") else 0o644
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o711
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "hardlink":
                # As tar writers do: a link's header repeats its file's mode.
                info.type, info.linkname = tarfile.LNKTYPE, payload
                info.mode = 0o4755 if payload.endswith(".suid") else 0o644
                tar.addfile(info)
    data = buf.getvalue()
    return {"": lambda d: d, "gzip": lambda d: __import__("gzip").compress(d), "bzip2": bz2.compress,
            "xz": lzma.compress, "zstd": lambda d: zstandard.ZstdCompressor().compress(d)}[compression](data)


@pytest.mark.parametrize("compression", ["", "gzip", "bzip2", "xz", "zstd"])
def test_add_extracts_local_archives(ctx_dir, rootfs, compression):
    (ctx_dir / "pkg.bin").write_bytes(make_tar([
        ("./", "dir", None), ("bin/", "dir", None), ("bin/tool.suid", "file", b"tool"),
        ("bin/alias", "symlink", "tool.suid"), ("bin/again", "hardlink", "bin/tool.suid"),
    ], compression))
    copy(ctx_dir, rootfs, ["pkg.bin"], "/opt", unpack=True)
    assert tree(rootfs, "/opt") == {"bin": None, "bin/tool.suid": b"tool", "bin/alias": b"tool.suid",
                                    "bin/again": b"tool"}
    st = os.lstat(rootfs / "opt/bin/tool.suid")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime) == (0o4755, 7, 1_500_000_000)
    assert stat.S_IMODE(os.lstat(rootfs / "opt/bin").st_mode) == 0o711
    assert os.stat(rootfs / "opt/bin/again").st_ino == st.st_ino


def test_add_chown_leaves_extracted_members_their_own_owners(ctx_dir, rootfs):
    # docker 26 (BuildKit 0.13, case add-archive-chown): --chown owns the
    # destination it makes; the members keep the archive's owners.
    (ctx_dir / "a.tar").write_bytes(make_tar([("f", "file", b"x")]))
    copy(ctx_dir, rootfs, ["a.tar"], "/x/", unpack=True, chown="app")
    assert (os.lstat(rootfs / "x/f").st_uid, os.lstat(rootfs / "x/f").st_gid) == (7, 7)


def test_add_archive_parents_are_roots_and_links_take_their_own_header(ctx_dir, rootfs):
    # docker's archive unpacking (what BuildKit's ADD uses): parents the
    # archive does not list are made 0755 and owned 0:0 whatever --chown
    # says; a hard link's header sets owner, mode and times of the inode it
    # shares; a file member replaces a directory that is in its way.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, mode, uid, mtime in [("deep/er/f", "file", 0o600, 7, 1_500_000_000),
                                             ("deep/link", "link", 0o640, 8, 1_600_000_000),
                                             ("existing", "file", 0o644, 7, 1_500_000_000)]:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, uid, mtime
            if kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, "deep/er/f"
                tar.addfile(info)
            else:
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
    (ctx_dir / "t.tar").write_bytes(buf.getvalue())
    (rootfs / "existing" / "old.txt").write_text("old")
    copy(ctx_dir, rootfs, ["t.tar"], "/", unpack=True)
    for parent in ("deep", "deep/er"):
        st = os.lstat(rootfs / parent)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0), parent
    st = os.lstat(rootfs / "deep/er/f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime, st.st_nlink) == (0o640, 8, 1_600_000_000, 2)
    assert (rootfs / "existing").read_bytes() == b"x"

    (ctx_dir / "u.tar").write_bytes(make_tar([("sub/f", "file", b"y")]))
    copy(ctx_dir, rootfs, ["u.tar"], "/chowned/", unpack=True, chown="app")
    assert (os.lstat(rootfs / "chowned/sub").st_uid, os.lstat(rootfs / "chowned/sub/f").st_uid) == (0, 7)


def test_copy_and_non_archives_are_not_extracted(ctx_dir, rootfs):
    (ctx_dir / "a.tar").write_bytes(make_tar([("f", "file", b"x")]))
    copy(ctx_dir, rootfs, ["a.tar"], "/copied/")
    copy(ctx_dir, rootfs, ["a.txt"], "/added/", unpack=True)
    assert set(tree(rootfs, "/copied")) == {"a.tar"}
    assert tree(rootfs, "/added") == {"a.txt": b"a"}


@pytest.mark.parametrize("members", [
    [("../evil", "file", b"x")],
    [("a/../../evil", "file", b"x")],
    [("link", "symlink", "../../.."), ("link/evil", "file", b"x")],
])
def test_archive_names_climbing_out_land_in_the_destination(tmp_path, ctx_dir, rootfs, members):
    # BuildKit 0.13 extracts in a chroot of the destination (containerd's
    # archive.Apply): a name or a link climbing out of it stops at its top.
    (ctx_dir / "bad.tar").write_bytes(make_tar(members))
    copy(ctx_dir, rootfs, ["bad.tar"], "/opt/", unpack=True)
    assert (rootfs / "opt/evil").read_bytes() == b"x"
    assert not (tmp_path / "evil").exists() and not (rootfs / "evil").exists()


def test_a_hard_link_to_a_file_outside_the_destination_is_refused(tmp_path, ctx_dir, rootfs):
    (ctx_dir / "bad.tar").write_bytes(make_tar([("x", "hardlink", "../../etc/passwd")]))
    with pytest.raises(CopyError):
        copy(ctx_dir, rootfs, ["bad.tar"], "/opt/", unpack=True)
    assert not (rootfs / "opt/x").exists()


def test_archive_symlinks_are_followed_inside_the_destination_only(tmp_path, ctx_dir, rootfs):
    (ctx_dir / "t.tar").write_bytes(make_tar([("root", "symlink", "/"), ("root/etc/evil", "file", b"x")]))
    copy(ctx_dir, rootfs, ["t.tar"], "/opt/", unpack=True)
    assert (rootfs / "opt/etc/evil").read_bytes() == b"x"
    assert not (rootfs / "etc/evil").exists()


# heredocs and WORKDIR ----------------------------------------------------------

def test_write_files(rootfs):
    write_files(rootfs, (InlineFile("hello.sh", b"echo hi\n"), InlineFile("b", b"")), "/scripts/",
                chown="app", mtime_ns=T_FILE)
    st = os.lstat(rootfs / "scripts/hello.sh")
    assert (rootfs / "scripts/hello.sh").read_bytes() == b"echo hi\n"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime_ns) == (0o644, 1000, T_FILE)
    write_files(rootfs, (InlineFile("run", b"x"),), "/usr/local/bin/run", chmod="755")
    assert stat.S_IMODE(os.stat(rootfs / "usr/local/bin/run").st_mode) == 0o755


def test_make_dir_owns_what_it_creates(rootfs):
    make_dir(rootfs, "/existing/work/dir", user="app")
    assert os.lstat(rootfs / "existing").st_uid == 0
    for rel in ("existing/work", "existing/work/dir"):
        st = os.lstat(rootfs / rel)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o755)
    (rootfs / "afile").write_bytes(b"")
    with pytest.raises(CopyError, match="not a directory"):
        make_dir(rootfs, "/afile/sub")


# ADD <url> ---------------------------------------------------------------------

PAYLOAD = b"downloaded bytes\n" * 100
LAST_MODIFIED = 1_400_000_000


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        if self.path.startswith("/dated"):
            self.send_header("Last-Modified", email.utils.formatdate(LAST_MODIFIED, usegmt=True))
        if self.path.startswith("/named"):
            self.send_header("Content-Disposition", 'attachment; filename="../report.csv"')
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server():
    with LoopbackServer(_Handler) as served:
        yield served.url


def test_fetch_url(server, tmp_path):
    out = tmp_path / "dl"
    name, digest = fetch_url(f"{server}/dated/tool-1.2.tar.gz?x=1", out)
    assert name == "tool-1.2.tar.gz"
    assert str(digest) == "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    st = os.stat(out)
    assert (out.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime) == (PAYLOAD, 0o600, LAST_MODIFIED)


def test_fetch_url_without_last_modified_uses_the_epoch(server, tmp_path):
    name, _ = fetch_url(f"{server}/", tmp_path / "dl")
    assert name == "download" and os.stat(tmp_path / "dl").st_mtime == 0
    name, _ = fetch_url(f"{server}/named/x", tmp_path / "dl2")
    assert name == "report.csv"
    assert fetch_url(f"{server}/a", tmp_path / "dl3", filename="given")[0] == "given"


def test_fetch_url_checksum(server, tmp_path):
    good = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    fetch_url(f"{server}/f", tmp_path / "ok", good)
    fetch_url(f"{server}/f", tmp_path / "ok512", "sha512:" + hashlib.sha512(PAYLOAD).hexdigest())
    with pytest.raises(FetchError, match="digest mismatch"):
        fetch_url(f"{server}/f", tmp_path / "bad", "sha256:" + "0" * 64)
    with pytest.raises(FetchError, match="invalid checksum"):
        fetch_url(f"{server}/f", tmp_path / "bad", "md5:abc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok", "ok512"]  # nothing half-written


def test_fetch_url_errors(server, tmp_path):
    with pytest.raises(FetchError, match="invalid response status 404"):
        fetch_url(f"{server}/missing", tmp_path / "x")
    with pytest.raises(FetchError, match="failed to fetch"):
        fetch_url("http://user:pw@127.0.0.1:1/x", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_context_xattrs_stay_behind_and_a_trees_are_copied(ctx_dir, rootfs):
    # docker 26: COPY from the context writes no xattr at all (its context
    # transfer drops them), and the key does not depend on them; COPY
    # --from a stage copies them.
    os.setxattr(ctx_dir / "a.txt", "user.note", b"hello")
    os.setxattr(ctx_dir / "src", "user.dir", b"d")
    def digest(context):
        return context.checksum(context.select(["a.txt"]))

    with_xattr = digest(BuildContext(ctx_dir))
    copy(ctx_dir, rootfs, ["a.txt", "src"], "/ctx/")
    assert os.listxattr(rootfs / "ctx" / "a.txt") == []
    assert os.listxattr(rootfs / "ctx") == []
    os.removexattr(ctx_dir / "a.txt", "user.note")
    assert digest(BuildContext(ctx_dir)) == with_xattr

    os.setxattr(ctx_dir / "a.txt", "user.note", b"hello")
    copy_into(rootfs, BuildContext.of_tree(ctx_dir).select(["a.txt"]), "/tree/")
    assert os.getxattr(rootfs / "tree" / "a.txt", "user.note") == b"hello"
    hello = digest(BuildContext.of_tree(ctx_dir))
    os.setxattr(ctx_dir / "a.txt", "user.note", b"other")
    assert digest(BuildContext.of_tree(ctx_dir)) != hello


def test_a_directory_copied_into_a_directory_gives_it_only_its_times(ctx_dir, rootfs):
    # docker 26: `COPY src /d/` makes /d 0755 root with src's mtime; an
    # existing directory keeps its mode but takes the mtime too; the
    # context's root (`COPY . /ctx/`) is never sent, so /ctx stays new.
    os.chmod(rootfs / "existing", 0o711)
    os.utime(ctx_dir / "src", ns=(T_FILE, T_FILE))
    os.utime(ctx_dir, ns=(T_FILE, T_FILE))
    copy(ctx_dir, rootfs, ["src"], "/d/")
    copy(ctx_dir, rootfs, ["src"], "/existing")
    copy(ctx_dir, rootfs, ["."], "/ctx/")
    made, existing, whole = (os.stat(rootfs / name) for name in ("d", "existing", "ctx"))
    assert (stat.S_IMODE(made.st_mode), made.st_mtime_ns) == (0o755, T_FILE)
    assert (stat.S_IMODE(existing.st_mode), existing.st_mtime_ns) == (0o711, T_FILE)
    assert whole.st_mtime_ns != T_FILE
    stage = BuildContext.of_tree(ctx_dir)
    copy_into(rootfs, stage.select(["/"]), "/tree/")
    assert os.stat(rootfs / "tree").st_mtime_ns == T_FILE  # a stage's root is a directory like any other
