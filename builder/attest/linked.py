"""Package databases behind symlinks (`var/lib/dpkg/status -> status.real`),
resolved as dpkg, apk and syft see them: inside the image's merged root
filesystem, never on the host. A link's target is resolved by name (an
absolute target from the image's root, `..` stopping there), then read
from the topmost layer that has that path, each path component opened
without following links; a target whose directories are themselves links
is not followed (no package manager writes one)."""

from __future__ import annotations

import os
import stat
import tarfile
from typing import Callable, Iterable, Optional

from builder.attest.layerfacts import MAX_DB_BYTES, LayerFacts
from runtime.whiteouts import is_whiteout

# A link to a link to ...: as many hops as the kernel follows.
MAX_HOPS = 40

# (the layer's facts, a reader of one path in that layer): a reader returns
# the file's bytes, ABSENT when the layer has no entry there, or None when
# the entry is no regular file (or too large to be a database).
ABSENT = object()
PathReader = Callable[[str], object]


def deleted(path: str, whiteouts: set[str], opaque: set[str]) -> bool:
    """Whether a layer's whiteouts and opaque directories hide `path` of
    the layers below it."""
    if "" in opaque:
        return True
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        ancestor = "/".join(parts[:depth])
        if ancestor in whiteouts or (depth < len(parts) and ancestor in opaque):
            return True
    return False


def resolve(path: str, target: str) -> str:
    """The image path the link at `path` names (no leading slash)."""
    parts = [] if target.startswith("/") else path.split("/")[:-1]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def final_target(path: str, links: dict[str, str]) -> Optional[str]:
    """Where the link at `path` ends after following the other links the
    merged image has at database paths; None for a loop."""
    for _ in range(MAX_HOPS):
        path = resolve(path, links[path])
        if path not in links:
            return path
    return None


def read_merged(path: str, layers: Iterable[tuple[LayerFacts, PathReader]]) -> Optional[bytes]:
    """The bytes of `path` in the filesystem `layers` (top first) make, or
    None when it is no regular file there."""
    for facts, read in layers:
        found = read(path)
        if found is not ABSENT:
            return found
        if deleted(path, set(facts.whiteouts), set(facts.opaque)):
            return None
    return None


def snapshot_reader(fs) -> PathReader:
    def read(path: str):
        return _read_in_dir(os.fsdecode(fs), path)
    return read


def _read_in_dir(top: str, path: str):
    opened = [os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        parts = path.split("/")
        for part in parts[:-1]:
            try:
                opened.append(os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                      dir_fd=opened[-1]))
            except FileNotFoundError:
                return ABSENT
            except OSError:   # a link or a file where a directory would be
                return None
        try:
            st = os.lstat(parts[-1], dir_fd=opened[-1])
        except FileNotFoundError:
            return ABSENT
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DB_BYTES:
            # A whiteout: the layer's facts say what it deletes (read_merged stops there).
            return ABSENT if is_whiteout(st) else None
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=opened[-1])
        with os.fdopen(fd, "rb") as file:
            return file.read(MAX_DB_BYTES + 1)
    finally:
        for fd in opened:
            os.close(fd)


def tar_reader(open_stream: Callable) -> PathReader:
    """A reader of a layer tar that `open_stream()` opens (uncompressed,
    as a context manager): read front to back once per path asked."""
    from builder.attest.layerfacts import _relative

    def read(path: str):
        with open_stream() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if _relative(member.name) != path:
                    continue
                if member.isreg() and member.size <= MAX_DB_BYTES:
                    return tar.extractfile(member).read()
                return None
        return ABSENT
    return read
