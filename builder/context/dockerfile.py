"""The files a build reads by name from a directory: the Dockerfile and the
ignore files, opened inside that directory as BuildKit reads them from the
directory it was sent."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from frontend.dockerignore import read_dockerignore
from frontend.errors import ContextError
from frontend.parser import read_dockerfile
from runtime.confine import Tree


def open_context_file(directory: Path, name: str, what: str = "dockerfile") -> BinaryIO:
    """Open `name` (a Dockerfile, an ignore file) for reading, resolved
    inside `directory` as if it were `/`, as BuildKit reads them from the
    directory it was sent: a symlink is followed only while it stays inside
    (`Dockerfile -> /etc/passwd` names `directory/etc/passwd`), and only a
    regular file is read, never a fifo, a device or a directory. The
    directory itself is taken as given.

    Raises FileNotFoundError when there is no such file, ContextError when
    it cannot be read as one."""
    try:
        with Tree(Path(directory).resolve()) as tree:
            # O_PATH: opening a device or a fifo for reading may block or
            # act; an O_PATH fd only names the inode until fstat has vetted it.
            fd = tree.open(name, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", name) from None
    except OSError as exc:
        raise ContextError(f"failed to read {what}: open {name}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContextError(f"failed to read {what}: {name} is not a regular file")
        return open(f"/proc/self/fd/{fd}", "rb")
    finally:
        os.close(fd)


def read_dockerfile_at(path: Path) -> str:
    """The text of the Dockerfile `path`: its directory as given, its name
    read inside that directory (BuildKit's `dockerfile` local is the
    directory, the name its `filename`). ContextError when it cannot be read."""
    try:
        with open_context_file(path.parent, path.name) as stream:
            return read_dockerfile(stream, path.name)
    except FileNotFoundError:
        raise ContextError(f"failed to read dockerfile: open {path}: no such file or directory") from None
    except OSError as exc:
        raise ContextError(f"failed to read dockerfile {path}: {exc.strerror}") from None


def dockerignore_patterns(context_dir: Path, dockerfile: Path) -> tuple[str, ...]:
    """The build's ignore patterns, as BuildKit finds them: `<Dockerfile
    name>.dockerignore` beside the Dockerfile wins over the context's
    `.dockerignore`; neither is no patterns."""
    own = ignore_file_patterns(dockerfile.parent, dockerfile.name + ".dockerignore")
    return own if own is not None else ignore_file_patterns(context_dir) or ()


def ignore_file_patterns(directory: Path, name: str = ".dockerignore") -> tuple[str, ...] | None:
    """The patterns of the ignore file `name` in `directory` (read as
    open_context_file reads), None when there is none."""
    try:
        with open_context_file(directory, name, "dockerignore") as stream:
            return read_dockerignore(stream, name)
    except FileNotFoundError:
        return None
