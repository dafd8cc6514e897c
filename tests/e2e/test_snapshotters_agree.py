"""The three snapshotters (runtime/snapshotters.py) make the same image:
kernel overlayfs, fuse-overlayfs and copies, from the same Dockerfile, give
the same manifest digest. The Dockerfile makes what each writes differently
(deletions, a directory replaced, new directories, owners)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fixtures.tools import require_tools

from builder.build import build
from e2e.helpers import write_context
from runtime.snapshotters import ENV_SNAPSHOTTER

DOCKERFILE = """\
FROM {base}
RUN mkdir -p /srv/keep /srv/replaced && echo x > /srv/replaced/x && echo g > /srv/gone && echo a > /srv/keep/a
RUN rm -rf /srv/replaced /srv/gone && mkdir /srv/replaced /srv/new /srv/new/deeper \\
    && echo b > /srv/keep/b && echo t > /tmp/t && rm /tmp/t && chown -R 1000:1000 /srv/new && chmod 4755 /srv/keep/b
WORKDIR /app
COPY input.txt ./
COPY input.txt /srv/keep/
"""


def _fds_into_views() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "/snapshots/.mnt-" in target:
            found.append(target)
    return found


def test_overlayfs_fuse_overlayfs_and_native_give_one_digest(busybox_image, tmp_path, monkeypatch):
    require_tools("fuse-overlayfs")
    context = tmp_path / "context"
    write_context(context, {"Dockerfile": DOCKERFILE.format(base=busybox_image.ref), "input.txt": "in\n"})
    digests = {}
    for name in ("overlayfs", "fuse-overlayfs", "native"):
        monkeypatch.setenv(ENV_SNAPSHOTTER, name)
        result = build(context, root=tmp_path / f"root-{name}", build_args={"SOURCE_DATE_EPOCH": "1700000000"},
                       outputs=[f"type=oci,dest={tmp_path / name},tar=false,rewrite-timestamp=true"])
        digests[name] = result.manifest_digest
        # A COPY into a directory with entries once kept an fd into its view
        # open (a lazily detached overlay, a fuse daemon that never exits).
        assert _fds_into_views() == []
    assert len(set(digests.values())) == 1, digests
