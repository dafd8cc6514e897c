"""COPY's options, checked before anything is written: --chown's owner
(resolved in the destination rootfs), --chmod's mode function (octal or
symbolic, as BuildKit accepts it), and whether `dest` names a directory."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Callable

from builder.context.trees import Selection
from builder.errors import PybuildError
from runtime.users import resolve_chown

Owner = tuple[int, int]
ModeFn = Callable[[int], int]  # st_mode of the source -> permission bits to set


class CopyError(PybuildError):
    """A COPY/ADD that cannot be done as asked (the CLI reports it on one line)."""


def checked_options(rootfs: Path, selection: Selection, dest: str, chown: str, chmod: str,
                     instruction: str) -> tuple[Owner | None, ModeFn | None, bool]:
    """The owner, mode function and into-a-directory flag of a COPY, once
    its sources and destination are known to fit together."""
    owner = resolve_owner(rootfs, chown) if chown else None
    mode_fn = parse_chmod(chmod) if chmod else None
    # Several sources and a `dest` without "/" is not an error in BuildKit
    # (docker 26): each is copied to `dest` in turn, as if alone, so files
    # replace each other there and directories merge into it. Only the
    # classic builder refused it.
    into_dir = dest.endswith("/") or dest.endswith("/.")
    return owner, mode_fn, into_dir


def resolve_owner(rootfs: Path, spec: str) -> Owner:
    """--chown's uid and gid. An empty side of "user:group" is id 0, not a
    name to look up: BuildKit's llb.WithUser keeps an empty part as a
    UserOpt without a name, which it marshals as id 0, so ":grp" is 0:grp,
    "app:" is app's uid with gid 0 and ":" is 0:0."""
    user, sep, group = spec.partition(":")
    if sep:
        spec = f"{user or '0'}:{group or '0'}"
    return resolve_chown(rootfs, spec)



# --chmod ------------------------------------------------------------------------

_SYMBOLIC_CLAUSE = re.compile(r"^([ugoa]*)((?:[-+=][rwxXst]*)+)$")
_OP_SPLIT = re.compile(r"([-+=])([rwxXst]*)")
_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o0007}


def parse_chmod(spec: str) -> ModeFn:
    """--chmod as a function of the source mode: octal (`0755`, at most
    07777) or chmod(1) symbolic clauses (`u+x,go-w`, `a=rX`)."""
    if re.fullmatch(r"[0-7]+", spec):
        value = int(spec, 8)
        if value > 0o7777:
            raise CopyError(f"invalid chmod parameter: '{spec}'. it should be octal string and between 0 and 07777")
        return lambda _mode: value
    clauses = []
    for text in spec.split(","):
        m = _SYMBOLIC_CLAUSE.match(text)
        if not m:
            raise CopyError(f"invalid chmod parameter: '{spec}'")
        who = m.group(1) or "a"
        clauses.append((who, _OP_SPLIT.findall(m.group(2))))

    def apply(mode: int) -> int:
        perm = stat.S_IMODE(mode)
        for who, ops in clauses:
            mask = 0
            for w in ("ugo" if "a" in who else who):
                mask |= _WHO_BITS[w]
            for op, perms in ops:
                bits = _perm_bits(perms, perm, stat.S_ISDIR(mode)) & mask
                if op == "+":
                    perm |= bits
                elif op == "-":
                    perm &= ~bits
                else:  # "=" clears the who bits, then sets
                    perm = (perm & ~mask) | bits
        return perm

    return apply


def _perm_bits(perms: str, current: int, is_dir: bool) -> int:
    bits = 0
    for p in perms:
        if p == "r":
            bits |= 0o444
        elif p == "w":
            bits |= 0o222
        elif p == "x":
            bits |= 0o111
        elif p == "X":
            # execute only for directories or files already executable by someone
            if is_dir or current & 0o111:
                bits |= 0o111
        elif p == "s":
            bits |= stat.S_ISUID | stat.S_ISGID
        elif p == "t":
            bits |= stat.S_ISVTX
    return bits
