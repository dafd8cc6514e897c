"""Issue 16: an id the user namespace does not map (above the user's
subordinate range) is one clear error naming /etc/subuid, not a bare
"Invalid argument"; and the namespace maps the whole range it is given."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def test_an_unmapped_owner_names_the_subordinate_ranges(rootless, busybox_image):
    count = rootless.host.subids[1]  # ids 1..count are the range, 0 the user
    context = rootless.write_context("ctx", f"""\
FROM {busybox_image.ref}
COPY --chown={count + 10}:{count + 10} a /a
""", {"a": "a\n"})
    done = rootless.run("build", str(context))
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert f"uid {count + 10} or gid {count + 10} is not mapped in this user namespace" in stderr
    assert "/etc/subuid" in stderr


def test_the_top_of_the_range_is_mapped(rootless, busybox_image):
    count = rootless.host.subids[1]  # ids 1..count are the range, 0 the user
    context = rootless.write_context("ctx", f"""\
FROM {busybox_image.ref}
COPY --chown={count}:{count} a /a
""", {"a": "a\n"})
    out = rootless.mkdir("out")
    rootless.ok("build", "-o", f"type=tar,dest={out / 'fs.tar'}", str(context))
    import tarfile

    with tarfile.open(out / "fs.tar") as tar:
        member = tar.getmember("a")
    assert (member.uid, member.gid) == (count, count)


def test_a_local_export_belongs_to_the_user_even_under_sudo_u(rootless, busybox_image):
    """`sudo -u user pybuild` leaves SUDO_UID (the invoker's) in the
    environment; a rootless pybuild is the user, not root acting for it."""
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nRUN mkdir /made\n")
    out = rootless.mkdir("out")
    rootless.ok("build", "-o", f"type=local,dest={out / 'fs'}", str(context),
                env={"SUDO_UID": "1000", "SUDO_GID": "1000"})
    for path in (out / "fs", out / "fs" / "made", out / "fs" / "bin"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (rootless.uid, rootless.gid), path


def test_a_root_made_by_root_is_one_line_naming_the_fix(rootless, tmp_path):
    theirs = Path(tempfile.mkdtemp(prefix="pybuild-roots-root-"))
    try:
        theirs.chmod(0o755)
        done = rootless.run("--root", str(theirs), "images")
        errors = [line for line in done.stderr.decode().splitlines() if line.startswith("ERROR:")]
        assert done.returncode == 1 and len(errors) == 1, done.stderr.decode()
        assert f"root {theirs} is not writable by uid {rootless.uid}" in errors[0]
        assert os.listdir(theirs) == []
    finally:
        shutil.rmtree(theirs)
