"""Temporary names in and beside an export's destination.

Every output is written under a temporary name and renamed into place, so
a pybuild killed by SIGKILL (how CI runners cancel jobs) leaves that
temporary behind, in the user's directory where no root's reclaim looks.
The name says who made it: `.pybuild-export-<token>-<random>` (`.old`
added for a layout moved aside), the token being the process's lease
token (runtime/lease.py). While it exports, the process holds its lease in
the machine-wide lease directory on /dev/shm (the one of the step scratch,
whose dead leases every command's reclaim drops), so any export, from any
root, can tell a dead maker's leftovers from a concurrent export's work.
An export removes the dead makers' entries in the directories it writes.

A name is never trusted to be ours: each is made with O_EXCL (or mkdir,
symlink, mknod, link, which fail on an existing name) and a fresh random
part is tried when it exists, so a planted name neither stops the export
nor is written through.

Processes in other /dev/shm namespaces (containers) that share a
destination but not /dev/shm cannot see each other's leases: a concurrent
export there looks dead. Containers normally share neither.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from builder.errors import ExportError
from runtime.confine import remove
from runtime.lease import Leases, token

PREFIX = ".pybuild-export-"
OLD = ".old"
_NAME_RE = re.compile(r"\.pybuild-export-([0-9]+_[0-9a-f]{8})-[0-9a-f]{8}(?:\.old)?")
_ATTEMPTS = 100
# The step scratch's lease directory (runtime.executor): one per machine.
_LEASES = Leases(Path("/dev/shm"), "pybuild-lease-")

T = TypeVar("T")


@contextlib.contextmanager
def exporting() -> Iterator[None]:
    """Hold this process's lease while temporary names with its token may
    exist. Without a usable /dev/shm the export still runs: only a
    concurrent export could then take its temporaries for leftovers."""
    try:
        _LEASES.hold()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        _LEASES.release()


def fresh_name() -> str:
    return f"{PREFIX}{token()}-{os.urandom(4).hex()}"


def make(create: Callable[[str], T], where: object) -> tuple[str, T]:
    """`create(name)` under fresh names until one did not exist yet;
    returns the name and what `create` returned."""
    for _ in range(_ATTEMPTS):
        name = fresh_name()
        try:
            return name, create(name)
        except FileExistsError:
            continue
    raise ExportError(f"cannot make a temporary name in {where}: every one tried exists")


def owner(name: str) -> str | None:
    """The token in a temporary name of ours, None for any other name."""
    found = _NAME_RE.fullmatch(name)
    return found.group(1) if found else None


def remove_left_over(dir_fd: int) -> None:
    """Remove the temporaries of dead exports in the directory `dir_fd`
    (never following a symlink); a live export's stay."""
    alive: dict[str, bool] = {}
    for name in os.listdir(dir_fd):
        maker = owner(name)
        if maker is None:
            continue
        if maker not in alive:
            alive[maker] = _LEASES.alive(maker)
        if not alive[maker]:
            with contextlib.suppress(FileNotFoundError):
                remove(dir_fd, name)


def remove_left_over_in(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        remove_left_over(fd)
    finally:
        os.close(fd)
