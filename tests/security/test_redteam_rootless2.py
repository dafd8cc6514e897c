"""Red-team round 2 on rootless pybuild (issue 16, brief break16b): attacks
performed as the ordinary user `pybuild-rootless` (tests/fixtures/rootless.py),
then the promised state checked. xfail(strict=True) marks what fails today.

- promise 3 (root and the user build the same digest): a context file
  carrying a trusted.* extended attribute (root may set one on a file it
  hands the user, or a backup restored as root leaves one) is copied into
  root's layer as SCHILY.xattr.trusted.*, while the user, who cannot read
  trusted.* attributes, writes the layer without it: the digests differ.
- promise 3 again: a context file with a namespaced file capability
  (security.capability v3, whose rootid is a host uid: what a rootless
  `-o type=local` export of an image with a `setcap` binary, or any
  rootless container tool, leaves on the host) is copied raw by root, the
  host uid (the user's, or one of its subordinate ids) in its layer, while
  the user's namespace reads it translated (v2 when the rootid is the
  user's, v3 with rootid 1 for the first subordinate id): the digests differ.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.pybuild import pybuild_env

EPOCH = "1700000000"


def _root_build(tmp_path: Path, context: Path, dest: Path, *args: str):
    return subprocess.run([sys.executable, "-c", "from builder.entry import main; main()", "build",
                           "--root", str(tmp_path / "root"), *args,
                           "-o", f"type=oci,dest={dest},rewrite-timestamp=true", str(context)],
                          env=pybuild_env(tmp_path, SOURCE_DATE_EPOCH=EPOCH), capture_output=True, timeout=180)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_trusted_xattr_on_a_context_file_gives_the_same_digest(rootless, busybox_image, tmp_path):
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nCOPY f /x/\n", {"f": "data\n"})
    try:
        os.setxattr(context / "f", "trusted.pybuild-redteam", b"1")
    except OSError as error:
        pytest.skip(f"the test filesystem takes no trusted.* xattr: {error}")
    mine = rootless.home / "mine.tar"
    rootless.ok("build", "-o", f"type=oci,dest={mine},rewrite-timestamp=true", str(context),
                env={"SOURCE_DATE_EPOCH": EPOCH})
    done = _root_build(tmp_path, context, tmp_path / "root.tar")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert _digest(mine) == _digest(tmp_path / "root.tar")


@pytest.mark.parametrize("rootid", ["user", "first-subordinate"])
def test_a_namespaced_file_capability_in_the_context_gives_the_same_digest(rootless, busybox_image, tmp_path,
                                                                           rootid):
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nCOPY tool /x/\n", {"tool": b"\x7fELF"})
    host_id = rootless.uid if rootid == "user" else rootless.host.subids[0]
    # VFS_CAP_REVISION_3 | effective, cap_net_raw (13) permitted, rootid.
    capability = struct.pack("<IIIIII", 0x03000001, 1 << 13, 0, 0, 0, host_id)
    try:
        os.setxattr(context / "tool", "security.capability", capability)
    except OSError as error:
        pytest.skip(f"no v3 file capability on the test filesystem: {error}")
    mine = rootless.home / "mine.tar"
    rootless.ok("build", "-o", f"type=oci,dest={mine},rewrite-timestamp=true", str(context),
                env={"SOURCE_DATE_EPOCH": EPOCH})
    done = _root_build(tmp_path, context, tmp_path / "root.tar")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert _digest(mine) == _digest(tmp_path / "root.tar")
