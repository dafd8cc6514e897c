"""Turning the CONTEXT argument into a directory, as `docker build` reads it.

    .  or  path/to/dir              the directory itself
    -                               stdin: a tar archive (plain, gzip, bzip2,
                                    xz) is the context; anything else is the
                                    Dockerfile, with an empty context
    https://host/repo.git#ref:dir   a git repository (also git@host:x.git,
    git://host/x, ssh://...)        cloned with depth 1; `ref` and `dir` are
                                    optional, as in docker
    https://host/ctx.tar.gz         a tar archive downloaded and unpacked; a
                                    non-archive download is the Dockerfile

Remote and stdin contexts are written under ROOT/tmp and removed when the
`with` block ends. As in docker, `-f` names a file inside such a context.
They are fetched while this process holds its lease on the root, into a
directory named with its token (builder/root/scratch.py), so that the
next command to open the root removes what a pybuild killed meanwhile
left (builder/root/reclaim.py).
"""

from __future__ import annotations

import contextlib
import re
import os
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Iterator

from builder.ops.source import git
from builder.errors import PybuildError
from builder.root.scratch import make_context_scratch
from builder.ops import archive
from frontend.errors import ContextError
from frontend.parser import read_dockerfile
from runtime.fsutil import remove_tree, resolve_in_root

_COPY_CHUNK = 1 << 20
_SCP_LIKE_GIT = re.compile(r"^[\w.-]+@[\w.-]+:")  # git@github.com:org/repo.git


class ContextKind(str, Enum):
    DIRECTORY = "directory"
    STDIN = "stdin"
    GIT = "git"
    URL = "url"


class ContextInputError(PybuildError):
    """A context argument that cannot be read, fetched or unpacked."""


@dataclass(frozen=True)
class PreparedContext:
    kind: ContextKind
    directory: Path
    # Set when the input itself was a Dockerfile (stdin or a plain URL).
    dockerfile_text: str | None = None
    # A remote context's origin for its provenance: ("git", URL#ref:subdir,
    # commit) or ("url", URL, digest of the download).
    origin: tuple[str, str, str] = ()

    @property
    def is_remote(self) -> bool:
        """A context pybuild unpacked itself: `-f` is relative to it."""
        return self.kind is not ContextKind.DIRECTORY


def classify(spec: str) -> ContextKind:
    """docker's rules (builder/remotecontext/urlutil): a git URL is one with
    a git scheme, scp-like `user@host:`, or an http(s) path ending in .git."""
    if spec == "-":
        return ContextKind.STDIN
    if is_git_url(spec):
        return ContextKind.GIT
    if spec.startswith(("http://", "https://")):
        return ContextKind.URL
    return ContextKind.DIRECTORY


def is_git_url(spec: str) -> bool:
    if spec.startswith(("git://", "ssh://", "git+ssh://", "github.com/")) or _SCP_LIKE_GIT.match(spec):
        return True
    if spec.startswith(("http://", "https://")):
        path = spec.split("#", 1)[0].split("?", 1)[0]
        return path.endswith(".git")
    return False


@contextlib.contextmanager
def prepare_context(spec: str, *, root: Path, stdin: BinaryIO | None = None) -> Iterator[PreparedContext]:
    """Yield the context as a local directory; remove what was fetched after.
    A remote or stdin context is fetched under `root`, with the root open."""
    kind = classify(spec)
    if kind is ContextKind.DIRECTORY:
        if not Path(spec).is_dir():
            raise ContextInputError(f"unable to prepare context: path {spec!r} not found")
        yield PreparedContext(kind, Path(spec))
        return
    from builder.root.worker import Worker

    # Opening the root takes this process's lease on it (held until close)
    # after taking back what dead processes left, as every command does.
    worker = Worker.open(root, "builtin")
    try:
        scratch = make_context_scratch(worker.root)
        try:
            if kind is ContextKind.STDIN:
                if stdin is None:
                    raise ContextInputError("context '-' needs data on stdin")
                yield _from_stream(stdin, scratch, "stdin")
            elif kind is ContextKind.GIT:
                directory, commit = _clone(spec, scratch)
                yield PreparedContext(kind, directory, origin=("git", spec, commit))
            else:
                yield _from_url(spec, scratch)
        finally:
            remove_tree(scratch, ignore_errors=True)  # an unpacked archive's 0555 directories too
    finally:
        worker.close()


def _from_stream(stream: BinaryIO, scratch: Path, what: str) -> PreparedContext:
    raw = scratch / "input"
    with raw.open("wb") as out:
        shutil.copyfileobj(stream, out, _COPY_CHUNK)
    return _unpack_or_dockerfile(raw, scratch, ContextKind.STDIN, what)


def _unpack_or_dockerfile(raw: Path, scratch: Path, kind: ContextKind, what: str) -> PreparedContext:
    """A tar archive becomes the context; anything else is the Dockerfile
    (docker's DetectArchiveReader / "unable to prepare context" rules)."""
    directory = scratch / "context"
    directory.mkdir()
    if raw.stat().st_size and archive.is_archive(raw):
        # The same confined unpacking as ADD's (runtime.unpack): planted
        # symlinks are followed as if the context were `/`, never out of it,
        # and absolute symlinks are kept as docker keeps them. The owners
        # are the extracting user's, as docker's context upload makes them.
        try:
            archive.extract(raw, directory, owner=(os.getuid(), os.getgid()))
        except archive.ArchiveError as exc:
            raise ContextInputError(f"unable to unpack the context from {what}: {exc}") from None
        raw.unlink()
        return PreparedContext(kind, directory)
    try:
        with raw.open("rb") as stream:
            text = read_dockerfile(stream)
    except ContextError as exc:
        raise ContextInputError(f"{what} is neither a tar archive nor a Dockerfile: {exc}") from None
    raw.unlink()
    return PreparedContext(kind, directory, dockerfile_text=text)


def _from_url(url: str, scratch: Path) -> PreparedContext:
    from builder.ops.source.http import FetchError, fetch_url, redact

    from dataclasses import replace

    raw = scratch / "download"
    try:
        _, digest = fetch_url(url, raw)
    except FetchError as exc:
        raise ContextInputError(f"unable to prepare context: {exc}") from None
    prepared = _unpack_or_dockerfile(raw, scratch, ContextKind.URL, redact(url))
    return replace(prepared, origin=("url", url, str(digest)))


def split_git_url(spec: str) -> tuple[str, str, str]:
    """`url#ref:subdir` → (url, ref, subdir); ref and subdir may be empty."""
    url, _, fragment = spec.partition("#")
    ref, _, subdir = fragment.partition(":")
    if url.startswith("github.com/"):
        url = "https://" + url
    return url, ref, subdir


def _clone(spec: str, scratch: Path) -> tuple[Path, str]:
    """The context directory of a git URL and the commit checked out."""
    url, ref, subdir = split_git_url(spec)
    checkout = scratch / "git"
    checkout.mkdir()
    try:
        commit = git.checkout(url, ref, checkout)
    except git.GitError as exc:
        raise ContextInputError(str(exc).replace("git repository", "git context")) from None
    # The repository's symlinks resolve inside it, as BuildKit's git source
    # resolves the subdirectory within the checkout.
    directory = resolve_in_root(checkout, subdir) if subdir else checkout
    if not directory.is_dir():
        raise ContextInputError(git.without_passwords(f"git context {url}: subdirectory {subdir!r} not found"))
    return directory, commit


# -- --build-context ------------------------------------------------------------------


@dataclass(frozen=True)
class NamedContextInput:
    """One `--build-context NAME=VALUE`: an image (`docker-image://REF`),
    an image in an OCI layout (`layout`, with `tag` or `digest`), or a local
    directory."""

    name: str
    image: str = ""
    directory: Path | None = None
    layout: Path | None = None
    tag: str = ""
    digest: str = ""


def context_name(text: str) -> str:
    """The key BuildKit files a named context under, and looks a stage name
    or FROM reference up by (dockerui NamedContext): the familiar form
    without `:latest`, so `docker.io/library/alpine:latest` is `alpine`.
    Raises InvalidReference."""
    from builder.registry.reference import Reference

    return Reference.parse(text).familiar.removesuffix(":latest")


def parse_build_contexts(values) -> dict[str, NamedContextInput]:
    """`--build-context` values, keyed by context_name; a later value for a
    name replaces an earlier one."""
    from builder.errors import InvalidReference
    from builder.registry.reference import Reference

    contexts: dict[str, NamedContextInput] = {}
    for value in values:
        raw_name, sep, source = value.partition("=")
        if not sep or not raw_name or not source:
            raise ContextInputError(f"invalid --build-context {value!r}: expected NAME=VALUE")
        try:
            name = context_name(raw_name)
        except InvalidReference as exc:
            raise ContextInputError(f"invalid --build-context name {raw_name!r}: {exc}") from None
        if source.startswith("docker-image://"):
            ref = source.removeprefix("docker-image://")
            if ref != "scratch":
                try:
                    Reference.parse(ref)
                except InvalidReference as exc:
                    raise ContextInputError(f"invalid --build-context {name}={source}: {exc}") from None
            contexts[name] = NamedContextInput(name, image=ref)
        elif source.startswith("oci-layout://"):
            # buildx: PATH[:TAG][@DIGEST], the tag cut at the first ':', "latest" by default.
            path, _, digest = source.removeprefix("oci-layout://").partition("@")
            path, _, tag = path.partition(":")
            if not (Path(path) / "index.json").is_file():
                raise ContextInputError(f"--build-context {name}={source}: {path} is not an OCI layout "
                                        "(no index.json)")
            if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                raise ContextInputError(f"--build-context {name}={source}: invalid digest {digest!r}")
            contexts[name] = NamedContextInput(name, layout=Path(path).resolve(), tag=tag or "latest",
                                               digest=digest)
        elif re.match(r"^[a-z][a-z0-9+.-]*://", source) or is_git_url(source):
            raise ContextInputError(f"--build-context {name}={source}: only a directory, docker-image://REF "
                                    "or oci-layout://PATH is supported")
        elif not Path(source).is_dir():
            raise ContextInputError(f"--build-context {name}={source}: not a directory")
        else:
            contexts[name] = NamedContextInput(name, directory=Path(source).resolve())
    return contexts


def import_oci_layout(found: NamedContextInput, store, platform: str):
    """Copy the image an `oci-layout://` context names (by digest, else by
    tag) into the content store, this platform's manifest when it is an
    index; returns the manifest's Digest. Nothing is asked of a registry."""
    from builder.context.layout import LayoutError

    try:
        return _import_layout_image(found, store, platform)
    except LayoutError as exc:
        raise ContextInputError(f"--build-context {found.name}: {exc}") from None


def _import_layout_image(found: NamedContextInput, store, platform: str):
    from builder.context.layout import copy_blob, tagged_entries
    from builder.registry.platforms import select_platform
    from cache.digest import Digest

    where = f"--build-context {found.name}: {found.layout}"
    if found.digest:
        chosen = found.digest
    else:
        tagged = tagged_entries(found.layout, found.tag)
        if not tagged:
            raise ContextInputError(f"{where} has no image tagged {found.tag!r}")
        chosen = tagged[-1]["digest"]
    copy_blob(found.layout, store, Digest.parse(chosen))
    document = store.read_json(Digest.parse(chosen))
    if "manifests" in document:
        picked = select_platform(document["manifests"], platform)
        if picked is None:
            raise ContextInputError(f"{where}: no image for {platform} in {chosen}")
        chosen = str(picked.digest)
        copy_blob(found.layout, store, picked.digest)
        document = store.read_json(picked.digest)
    if "config" not in document:
        raise ContextInputError(f"{where}: {chosen} is not an image manifest")
    for desc in [document["config"], *(document.get("layers") or [])]:
        copy_blob(found.layout, store, Digest.parse(desc["digest"]))
    return Digest.parse(chosen)
