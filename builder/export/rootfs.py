"""`type=local` and `type=tar` outputs: the final root filesystem itself."""

from __future__ import annotations

import os
import sys
import tarfile
import tempfile
from pathlib import Path

from runtime import layer as layer_tar


def export_rootfs(snapshots, chain, dest: Path, *, as_tar: bool, tmp: Path) -> None:
    """Write the merged filesystem of `chain` to dest: a tar file (`-` for
    stdout) or a directory. The tar is written next to dest and renamed, so
    dest is never half-written."""
    with snapshots.mount(tuple(chain), None) as merged:
        if as_tar:
            if str(dest) == "-":
                layer_tar.write_layer(Path(merged), sys.stdout.buffer)
                sys.stdout.buffer.flush()
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".pybuild-", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    layer_tar.write_layer(Path(merged), out)
                os.replace(name, dest)
            except BaseException:
                os.unlink(name)
                raise
            return
        fd, name = tempfile.mkstemp(prefix="rootfs-", suffix=".tar", dir=tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                layer_tar.write_layer(Path(merged), out)
            dest.mkdir(parents=True, exist_ok=True)
            with tarfile.open(name) as archive:
                # Our own tar of a real filesystem: no member can pass through
                # a symlink or climb out, and setuid bits must survive.
                archive.extractall(dest, numeric_owner=True, filter="fully_trusted")
        finally:
            os.unlink(name)
