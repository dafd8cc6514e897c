"""Issue 16 ★: the same Dockerfile and context built by root and by an
ordinary user give the same image digest (SOURCE_DATE_EPOCH and
rewrite-timestamp=true), with everything a user namespace could get wrong
in the layers: owners 0, 1000 and 65534, a whiteout, an opaque directory, a
symlink, a hardlink, a setuid file."""

from __future__ import annotations

import subprocess
import sys
import tarfile

import pytest

from fixtures.pybuild import pybuild_env
from rootless_helpers import Archive

EPOCH = "1700000000"
DOCKERFILE = """\
FROM {base}
RUN mkdir -p /opaque/sub /owned && echo old > /opaque/sub/old && echo gone > /gone \\
 && echo root > /owned/root && echo user > /owned/u1000 && echo nobody > /owned/nobody \\
 && chown 1000:1000 /owned/u1000 && chown 65534:65534 /owned/nobody
RUN rm /gone && rm -rf /opaque && mkdir /opaque && echo new > /opaque/new \\
 && ln -s ../owned/u1000 /link && echo twice > /h1 && ln /h1 /h2 \\
 && printf '#!/bin/sh\\n' > /suid && chmod 4755 /suid && chown 1000:65534 /h1
COPY --chown=1000:1000 file /ctx-1000
COPY tree/ /tree/
"""


def _entries(archive: Archive) -> list[list[tuple]]:
    """Each layer's entries as (name, type, mode, uid, gid, link, mtime):
    what to compare when the digests differ."""
    return [[(m.name, m.type, oct(m.mode), m.uid, m.gid, m.linkname, m.mtime) for m in archive.layer(index)]
            for index in range(len(archive.manifest["layers"]))]


# The user's snapshotter: the probe's choice (kernel overlayfs with
# userxattr here), then each other one forced; root's is its own default.
@pytest.mark.parametrize("isolation, snapshotter", [("oci", None), ("builtin", None), ("oci", "fuse-overlayfs"),
                                                    ("oci", "native")])
def test_root_and_rootless_builds_have_one_digest(rootless, busybox_image, tmp_path, isolation, snapshotter):
    context = rootless.write_context("ctx", DOCKERFILE.format(base=busybox_image.ref),
                                     {"file": "from the context\n", "tree/a": "a\n", "tree/sub/b": "b\n"})
    (context / "tree" / "link").symlink_to("sub/b")
    for path in (context / "file", context / "tree" / "a", context / "tree" / "sub" / "b"):
        path.chmod(0o644)
    rootless.give(context)

    user_tar = rootless.home / "rootless.oci.tar"
    output = "type=oci,dest={},rewrite-timestamp=true"
    forced = {"PYBUILD_SNAPSHOTTER": snapshotter} if snapshotter else {}
    info = rootless.ok("info", env=forced).stdout.decode()
    assert f"snapshotter:           {snapshotter or 'overlayfs'}\n" in info, info
    rootless.ok("build", "--isolation", isolation, "-o", output.format(user_tar), str(context),
                env={"SOURCE_DATE_EPOCH": EPOCH, **forced})
    root_tar = tmp_path / "root.oci.tar"
    done = subprocess.run([sys.executable, "-c", "from builder.entry import main; main()", "build",
                           "--root", str(tmp_path / "root"), "--isolation", isolation,
                           "-o", output.format(root_tar), str(context)],
                          env=pybuild_env(tmp_path, SOURCE_DATE_EPOCH=EPOCH), capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode(errors="replace")

    as_user, as_root = Archive(user_tar), Archive(root_tar)
    assert _entries(as_user) == _entries(as_root)
    assert as_user.config == as_root.config
    assert as_user.manifest_digest == as_root.manifest_digest

    # What the digest stands for: each case is in the layers.
    owned = {m.name: m for m in as_user.layer(-4)}
    assert (owned["owned/u1000"].uid, owned["owned/nobody"].uid, owned["owned/root"].uid) == (1000, 65534, 0)
    changed = {m.name: m for m in as_user.layer(-3)}
    assert ".wh.gone" in changed
    assert "opaque/.wh..wh..opq" in changed and "opaque/sub/old" not in changed
    assert changed["link"].issym() and changed["link"].linkname == "../owned/u1000"
    hardlinked = [changed[name] for name in ("h1", "h2")]
    assert sum(m.type == tarfile.LNKTYPE for m in hardlinked) == 1
    assert (hardlinked[0].uid, hardlinked[0].gid) == (1000, 65534)
    assert changed["suid"].mode == 0o4755
    assert (as_user.layer_entry("ctx-1000", index=-2).uid, as_user.layer_entry("tree/link", index=-1).issym()) \
        == (1000, True)
