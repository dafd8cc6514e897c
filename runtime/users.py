"""USER and COPY --chown resolved against a rootfs's /etc/passwd and /etc/group.

RUN (`resolve_user`) follows BuildKit's executor, which calls runc's
`user.GetExecUser` unless both parts are numeric:

    ""            root, 0:0
    "uid:gid"     taken as is (BuildKit's fast path, where "root" reads as 0):
                  no lookup, no supplementary groups
    "name"/"uid"  the passwd entry (by name, or by uid); its primary group;
                  supplementary groups = every group listing that name.
                  A uid without an entry is fine: gid 0, no groups.
    "x:group"     the user as above, gid = the named (or numeric) group,
                  and no supplementary groups (runc: only the implicit form
                  gets them)

and in every form the primary gid leads the supplementary groups unless
they hold it already (containerd's WithUIDGID, as BuildKit runs steps).

An unknown user name or group name raises UnknownUser.

COPY --chown (`resolve_chown`) follows BuildKit's file op, which differs:
a numeric user without a group gives gid = uid ("1000" → 1000:1000), a name
gives the entry's uid and primary gid. BuildKit silently maps an unknown
name to 0; docker's documentation promises a failure, which is what we do.
WORKDIR, which has no such promise, takes BuildKit's rule (strict=False).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from runtime.confine import Tree
from runtime.errors import RuntimeFailure, UnknownUser
from runtime.userns import require_mapped

__all__ = ["User", "resolve_user", "resolve_chown", "UnknownGroup"]

_MAX_ID = 2**31 - 1
_MAX_FILE = 16 * 1024 * 1024  # of /etc/passwd or /etc/group: far more than any real one


class UnknownGroup(UnknownUser):
    """A group name that /etc/group lacks; an UnknownUser for callers."""

    def __init__(self, group: str):
        # UnknownUser's own message names the passwd file: say group instead
        RuntimeFailure.__init__(self, f"unable to find group {group}: no matching entries in group file")
        self.user = group


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


@dataclass(frozen=True)
class _PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class _GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def resolve_user(rootfs: Path, user: str) -> User:
    """The step's uid, gid, groups and home; ids the user namespace cannot
    hold fail naming /etc/subuid (rootless)."""
    found = _resolve_user(rootfs, user)
    for gid in (found.gid, *found.additional_gids):
        require_mapped(found.uid, gid)
    if found.gid not in found.additional_gids:
        # containerd's oci.WithUIDGID, which BuildKit's executor uses, puts
        # the primary gid first among the groups (docker 26: `USER app`
        # has Groups: 1000 2000, `USER 1000:1000` Groups: 1000)
        found = dataclasses.replace(found, additional_gids=(found.gid, *found.additional_gids))
    return found


def _resolve_user(rootfs: Path, user: str) -> User:
    if not user:
        return User(0, 0, (), _home_of(rootfs, 0))
    user_part, _, group_part = user.partition(":")
    fast_uid, fast_gid = _numeric(user_part, root_alias=True), _numeric(group_part, root_alias=True)
    if fast_uid is not None and fast_gid is not None:
        return User(fast_uid, fast_gid, (), _home_of(rootfs, fast_uid))
    uid_arg = _numeric(user_part)

    passwd = _read_passwd(rootfs)
    if uid_arg is not None:
        match = next((entry for entry in passwd if entry.uid == uid_arg), None)
    else:
        match = next((entry for entry in passwd if entry.name == user_part), None)
    if match is None and uid_arg is None:
        raise UnknownUser(user_part)
    uid = match.uid if match else uid_arg
    gid = match.gid if match else 0
    # BuildKit hands runc numbers only, and runc takes HOME from the first
    # passwd entry with that uid: "USER appuser" where an earlier entry
    # shares uid 1000 gets the earlier entry's home.
    home = next((entry.home for entry in passwd if entry.uid == uid), "/")

    if group_part:
        return User(uid, _group_id(rootfs, group_part), (), home)
    groups: tuple[int, ...] = ()
    if match is not None:
        groups = tuple(entry.gid for entry in _read_group(rootfs) if match.name in entry.members)
    return User(uid, gid, groups, home)


def resolve_chown(rootfs: Path, spec: str, *, strict: bool = True) -> tuple[int, int]:
    """uid and gid for COPY/ADD --chown=spec (see the module's notes).

    `strict=False` is BuildKit's file op as it is, which WORKDIR's mkdir
    goes through: a user name /etc/passwd lacks (or no /etc/passwd) is
    0:0, a group name /etc/group lacks leaves the user's gid, and nothing
    fails (docker 26: `USER ghost:app` then `WORKDIR /new` makes /new 0:1000)."""
    user_part, _, group_part = spec.partition(":")
    uid_arg = _numeric(user_part, root_alias=True)
    if uid_arg is not None:
        uid = gid = uid_arg
    else:
        match = next((entry for entry in _read_passwd(rootfs) if entry.name == user_part), None)
        if match is None and strict:
            raise UnknownUser(user_part)
        uid, gid = (match.uid, match.gid) if match else (0, 0)
    if group_part:
        try:
            gid = _group_id(rootfs, group_part)
        except UnknownGroup:
            if strict:
                raise
    return uid, gid


def _numeric(text: str, root_alias: bool = False) -> int | None:
    """A decimal uid or gid argument. BuildKit's parseUID also reads "root"
    as 0, but only where it parses ids without lookups (`root_alias`)."""
    if root_alias and text == "root":
        return 0
    if text.isascii() and text.isdigit():
        value = int(text)
        if value > _MAX_ID:
            raise UnknownUser(text)
        return value
    return None


def _group_id(rootfs: Path, group: str) -> int:
    gid_arg = _numeric(group, root_alias=True)
    for entry in _read_group(rootfs):
        if (gid_arg is not None and entry.gid == gid_arg) or (gid_arg is None and entry.name == group):
            return entry.gid
    if gid_arg is None:
        raise UnknownGroup(group)
    return gid_arg


def _home_of(rootfs: Path, uid: int) -> str:
    match = next((entry for entry in _read_passwd(rootfs) if entry.uid == uid), None)
    return match.home if match else "/"


def _read_rootfs_file(rootfs: Path, path: str) -> list[list[str]]:
    """The colon-separated records of a file inside the rootfs; none when
    the file is missing or not a regular file. Symlinks resolve inside the
    rootfs, never out; a fifo or device node is never opened (opening may
    block, or do what the device does), and at most _MAX_FILE is read."""
    try:
        with Tree(rootfs) as tree:
            found = tree.open(path, os.O_PATH)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return []
        raise
    try:
        if not stat.S_ISREG(os.fstat(found).st_mode):
            return []  # a directory, fifo or device is no database
        # the magic link reopens that very inode, now known to be a file
        fd = os.open(f"/proc/self/fd/{found}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    finally:
        os.close(found)
    with open(fd, "rb") as handle:
        text = handle.read(_MAX_FILE).decode(errors="replace")
    records = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            records.append(line.split(":"))
    return records


def _read_passwd(rootfs: Path) -> list[_PasswdEntry]:
    entries = []
    for fields in _read_rootfs_file(rootfs, "/etc/passwd"):
        if len(fields) < 4 or not fields[2].isdigit() or not fields[3].isdigit():
            continue  # runc skips what it cannot parse too
        home = fields[5] if len(fields) > 5 and fields[5] else "/"
        entries.append(_PasswdEntry(fields[0], int(fields[2]), int(fields[3]), home))
    return entries


def _read_group(rootfs: Path) -> list[_GroupEntry]:
    entries = []
    for fields in _read_rootfs_file(rootfs, "/etc/group"):
        if len(fields) < 3 or not fields[2].isdigit():
            continue
        members = tuple(name.strip() for name in fields[3].split(",")) if len(fields) > 3 and fields[3] else ()
        entries.append(_GroupEntry(fields[0], int(fields[2]), members))
    return entries
