"""The typed, immutable operations of a build graph.

An op holds everything the solver needs to compute its cache key and to run
it; nothing downstream re-parses Dockerfile text. Inputs are vertex ids
(the digest of another op's canonical form), so an op's own canonical form,
and therefore its id, covers its whole ancestry, as in BuildKit's LLB.

Source locations and progress names are metadata (see `definition.py`):
they are never part of an op, so moving an instruction to another line does
not change any cache key.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, fields
from functools import cached_property

from frontend.canonical import canonical_bytes


class NetworkMode(enum.Enum):
    DEFAULT = "default"  # follows the build's --network
    NONE = "none"
    HOST = "host"


class MountType(enum.Enum):
    BIND = "bind"
    CACHE = "cache"
    TMPFS = "tmpfs"
    SECRET = "secret"
    SSH = "ssh"


class Sharing(enum.Enum):
    SHARED = "shared"
    PRIVATE = "private"
    LOCKED = "locked"


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


@dataclass(frozen=True)
class Op:
    """Base class. `inputs` are vertex ids of the ops this one reads."""

    inputs: tuple[str, ...] = ()

    TYPE_TAG = "pybuild.op.v0"

    def canonical(self) -> dict:
        body = {"type": self.TYPE_TAG}
        for f in fields(self):
            body[f.name] = _canonical_value(getattr(self, f.name))
        return body

    @cached_property  # frozen: computed once (a 10,000-line Dockerfile asked 3 times per op)
    def vertex_id(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_bytes(self.canonical())).hexdigest()


def _canonical_value(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return {"bytes_sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, (tuple, list)):
        return [_canonical_value(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _canonical_value(getattr(value, f.name)) for f in fields(value)}
    return value


@dataclass(frozen=True)
class Scratch(Op):
    """The empty filesystem (`FROM scratch`)."""

    TYPE_TAG = "pybuild.scratch.v0"


@dataclass(frozen=True)
class ImageSource(Op):
    """A base image. `ref` is pinned by digest (`name@sha256:...`) once the
    frontend has resolved it, so a new base digest gives a new key."""

    ref: str = ""
    platform: Platform = Platform()

    TYPE_TAG = "pybuild.source.image.v0"


@dataclass(frozen=True)
class ContextSource(Op):
    """The build context directory, seen through the .dockerignore patterns.

    It is never read as a whole: each FileCopy selects paths from it and only
    those are hashed and copied.
    """

    name: str = "context"
    excludes: tuple[str, ...] = ()

    TYPE_TAG = "pybuild.source.local.v0"


@dataclass(frozen=True)
class NamedLocalSource(Op):
    """A `--build-context NAME=DIR` directory, read like the build context
    (through its own .dockerignore patterns) by the steps that select from it."""

    name: str = ""
    excludes: tuple[str, ...] = ()

    TYPE_TAG = "pybuild.source.local.named.v0"


@dataclass(frozen=True)
class HttpSource(Op):
    """A file downloaded from a URL (ADD https://...)."""

    url: str = ""
    checksum: str = ""  # ADD --checksum=sha256:...
    filename: str = ""

    TYPE_TAG = "pybuild.source.http.v0"


@dataclass(frozen=True)
class GitSource(Op):
    """A git repository at a ref (ADD git@... / https://...git)."""

    remote: str = ""
    ref: str = ""
    keep_git_dir: bool = False

    TYPE_TAG = "pybuild.source.git.v0"


@dataclass(frozen=True)
class MountSpec:
    """One `RUN --mount`. `input` is an index into the Exec's inputs for the
    filesystem it mounts from (bind and cache `from=`), or None."""

    type: MountType
    target: str
    input: int | None = None
    source: str = "/"
    readonly: bool = True
    cache_id: str = ""
    sharing: Sharing = Sharing.SHARED
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None  # tmpfs bytes
    secret_id: str = ""  # secret and ssh ids; the value never enters an op
    env: str = ""  # secret exposed as an environment variable
    required: bool = False


@dataclass(frozen=True)
class Exec(Op):
    """A RUN. inputs[0] is the root filesystem; mounts refer to the others."""

    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "KEY=value", in order
    cwd: str = "/"
    user: str = ""  # as written after expansion: name, uid, name:group...
    network: NetworkMode = NetworkMode.DEFAULT
    mounts: tuple[MountSpec, ...] = ()
    security: str = "sandbox"
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host (host, ip), as BuildKit's ExecOp holds them

    TYPE_TAG = "pybuild.exec.v0"

    def canonical(self) -> dict:
        body = super().canonical()
        if not self.extra_hosts:
            del body["extra_hosts"]  # keys of steps without --add-host stay what they were
        return body


@dataclass(frozen=True)
class FileCopy(Op):
    """COPY and ADD. inputs[0] is the destination filesystem, inputs[1] the
    source (a ContextSource, a stage, an image, an HttpSource or a GitSource).

    `sources` are paths (with wildcards) in the source; `dest` is absolute,
    already joined with WORKDIR; a trailing "/" means "into this directory".
    """

    sources: tuple[str, ...] = ()
    dest: str = "/"
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    unpack: bool = False  # ADD of a local archive extracts it
    follow_symlinks: bool = True
    created_by: str = ""  # kept for history, not for the key (see canonical)

    TYPE_TAG = "pybuild.file.copy.v0"

    def canonical(self) -> dict:
        body = super().canonical()
        body.pop("created_by")
        return body


@dataclass(frozen=True)
class InlineFile:
    name: str
    content: bytes


@dataclass(frozen=True)
class WriteFiles(Op):
    """COPY <<EOF: files whose bytes are in the Dockerfile. inputs[0] is the
    destination filesystem."""

    files: tuple[InlineFile, ...] = ()
    dest: str = "/"
    chown: str = ""
    chmod: str = ""

    TYPE_TAG = "pybuild.file.write.v0"


@dataclass(frozen=True)
class CopyPart:
    """One source kind of a CopyParts: paths copied from `input` (an index
    into the op's inputs, >= 1), or, with `input` 0, inline files."""

    input: int = 0
    sources: tuple[str, ...] = ()
    parents: bool = False  # --parents applies to local sources only
    unpack: bool = False  # ADD: local archives yes, URLs only with --unpack
    files: tuple[InlineFile, ...] = ()


@dataclass(frozen=True)
class CopyParts(Op):
    """A COPY or ADD whose sources are of different kinds (local paths,
    URLs, git, heredocs): one layer, the parts copied in order into one
    snapshot, as BuildKit chains one FileAction per source. inputs[0] is the
    destination filesystem; each part names its own source input. An
    instruction with one kind of source stays a FileCopy or WriteFiles."""

    parts: tuple[CopyPart, ...] = ()
    dest: str = "/"
    chown: str = ""
    chmod: str = ""
    link: bool = False
    excludes: tuple[str, ...] = ()
    follow_symlinks: bool = True
    is_add: bool = False  # for the error messages (and ADD's unpack rules above)

    TYPE_TAG = "pybuild.file.parts.v0"


@dataclass(frozen=True)
class MakeDir(Op):
    """WORKDIR creates its directory (owned by the current USER in BuildKit)."""

    path: str = "/"
    user: str = ""

    TYPE_TAG = "pybuild.file.mkdir.v0"


FS_PRODUCING = (Exec, FileCopy, WriteFiles, CopyParts, MakeDir)
