"""RUN --mount: BuildKit's `--mount` syntax read into a Mount, with its
checks and messages."""

from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass
from typing import Callable

from frontend.instructions import Failure
from frontend.ops import MountType, Sharing
from frontend.suggest import with_suggestion


@dataclass(frozen=True)
class Mount:
    """A parsed `--mount` value (after expansion)."""

    type: MountType
    target: str
    source: str = ""
    from_: str = ""
    readonly: bool = True
    id: str = ""
    sharing: Sharing = Sharing.SHARED
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    required: bool = False
    env: str = ""


# BuildKit's own list, in its order: suggestions are taken from the first
# closest key (frontend/dockerfile/instructions/commands_runmount.go)
_MOUNT_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size", "mode",
    "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env",
)  # fmt: skip
# Go's strconv.ParseBool, which BuildKit uses for ro/rw/required
_GO_BOOLS = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}  # fmt: skip
_GO_UINT = {8: re.compile(r"[0-7]+"), 10: re.compile(r"[0-9]+")}


def parse_mount(text: str, expand: Callable[[str], str]) -> Mount:
    """BuildKit's `--mount` syntax: comma-separated key=value fields (CSV
    quoting allowed). Raises Failure; callers add the location.

    Checks and messages follow BuildKit's parseMount/validateMount, in their
    order: a key that depends on the type (`required`, `size`) is judged
    against the type given *before* it in the value."""
    try:
        fields = next(csv.reader([text], strict=True), [])
    except csv.Error as err:
        raise Failure(f"failed to parse csv mounts: {err}") from None
    mount_type = MountType.BIND
    opts: dict[str, str] = {}
    readonly: bool | None = None
    required = False
    size: int | None = None
    sharing: Sharing | None = None
    numbers: dict[str, int] = {}
    for field in fields:
        key, eq, value = field.partition("=")
        key = key.lower()  # BuildKit lowercases keys but trims nothing
        if not eq:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required":
                if mount_type not in (MountType.SECRET, MountType.SSH):
                    raise Failure(f"unexpected key '{key}' for mount type '{mount_type.value}'")
                required = True
            else:
                raise Failure(f"invalid field '{field}' must be a key=value pair")
            continue
        if key == "from":
            # stages are wired before any ARG is known (commands_runmount.go)
            dollar = value.find("$")
            if dollar != -1 and dollar != len(value) - 1:
                raise Failure("'from' doesn't support variable expansion, define alias stage instead")
        value = expand(value)
        if key == "type":
            try:
                mount_type = MountType(value.lower())
            except ValueError:
                raise Failure(with_suggestion(f"unsupported mount type \"{value}\"", value,
                                     [t.value for t in MountType])) from None
        elif key in ("readonly", "ro", "readwrite", "rw", "required"):
            flag = _GO_BOOLS.get(value)
            if key == "required" and mount_type not in (MountType.SECRET, MountType.SSH):
                raise Failure(f"unexpected key '{key}' for mount type '{mount_type.value}'")
            if flag is None:
                raise Failure(f"invalid value for {key}: {value}")
            if key == "required":
                required = flag
            else:
                readonly = flag if key in ("readonly", "ro") else not flag
        elif key == "size":
            if mount_type is not MountType.TMPFS:
                raise Failure(f"unexpected key '{key}' for mount type '{mount_type.value}'")
            size = _mount_size(value)
        elif key == "sharing":
            try:
                sharing = Sharing(value.lower())
            except ValueError:
                raise Failure(with_suggestion(f"unsupported sharing value \"{value}\"", value,
                                     [s.value for s in Sharing])) from None
        elif key in ("mode", "uid", "gid"):
            base = 8 if key == "mode" else 10
            # strconv.ParseUint(v, base, 32): digits only, no sign or prefix
            if not _GO_UINT[base].fullmatch(value) or int(value, base) > 2**32 - 1:
                raise Failure(f"invalid value {value} for {key}")
            numbers[key] = int(value, base)
        elif key in _MOUNT_KEYS:
            for alias, canonical in (("src", "source"), ("dst", "target"), ("destination", "target")):
                if key == alias:
                    key = canonical
            opts[key] = value
        else:
            raise Failure(with_suggestion(f"unexpected key '{key}' in '{field}'", key, _MOUNT_KEYS))
    if mount_type not in (MountType.SECRET, MountType.SSH, MountType.CACHE):
        for key in ("mode", "uid", "gid"):
            if key in numbers:
                raise Failure(f"{key} not allowed for \"{mount_type.value}\" type mounts")
    if readonly is None:
        readonly = mount_type not in (MountType.CACHE, MountType.TMPFS)
    target = opts.get("target", "")
    source = opts.get("source", "")
    mount_id = opts.get("id", "")
    from_ = opts.get("from", "")
    if mount_type is MountType.SECRET:
        if from_:
            raise Failure("secret mount should not have a from")
        if sharing is not None:
            raise Failure("secret mount should not define sharing")
        if not source and not target and not mount_id:
            raise Failure("invalid secret mount. one of source, target required")
        if source and mount_id:
            raise Failure("both source and id can't be set")
    if sharing is not None and mount_type is not MountType.CACHE:
        raise Failure(f"invalid cache sharing set for {mount_type.value} mount")
    if mount_type is MountType.SECRET:
        # convert_secrets.go: `source` names the secret, as `id` does
        mount_id = source or mount_id or posixpath.basename(target)
        source = ""
        if not target and "env" not in opts:
            target = "/run/secrets/" + posixpath.basename(mount_id)
    elif mount_type is MountType.SSH:
        if source:
            raise Failure("ssh does not support source")  # convert_ssh.go
        # the socket's default path depends on the mount's rank among the
        # RUN's ssh mounts: the executor picks it
        mount_id = mount_id or "default"
    else:
        if mount_type is MountType.TMPFS:
            from_ = ""  # never a source: BuildKit does not even resolve it
        if _clean(target) == "/" and target.startswith("/"):
            raise Failure('invalid mount target "/"')
        if mount_type is MountType.CACHE and not mount_id:
            # the id is the target as written, before WORKDIR applies
            mount_id = _clean(target)
        # no target means the working directory (a relative "")
        target = target or "."
    return Mount(
        type=mount_type,
        target=target,
        source=source,
        from_=from_,
        readonly=readonly,
        id=mount_id,
        sharing=sharing or Sharing.SHARED,
        mode=numbers.get("mode"),
        uid=numbers.get("uid"),
        gid=numbers.get("gid"),
        size=size,
        required=required,
        env=opts.get("env", ""),
    )


def _clean(path: str) -> str:
    """Go's path.Clean."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kmgtp])?i?b?$", re.IGNORECASE)


def _mount_size(text: str) -> int:
    """docker/go-units RAMInBytes: 64m, 1g, 512k (binary multiples)."""
    match = _SIZE.match(text)
    if not match:
        raise Failure(f"invalid value for size: {text}")
    try:
        number = float(match.group(1))
    except ValueError:
        raise Failure(f"invalid value for size: {text}") from None
    unit = "bkmgtp".index((match.group(2) or "b").lower())
    return int(number * (1024**unit))
