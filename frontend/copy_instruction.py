"""COPY and ADD: the file op of one instruction. Sources of a single kind
(local paths, one URL, one git repository, or only heredocs) make one
FileCopy or WriteFiles; mixed kinds make one CopyParts."""

from __future__ import annotations

import re
import urllib.parse
from typing import TYPE_CHECKING

from frontend import instructions as ins
from frontend import lint
from frontend.errors import DockerfileError
from frontend.lexer import ExpansionError, Lexer
from frontend.ops import CopyPart, CopyParts, FileCopy, GitSource, HttpSource, InlineFile, Op, WriteFiles
from frontend.paths import normalize_path
from frontend.stage_state import StageState

if TYPE_CHECKING:
    from frontend.convert import Converter


def do_copy(conv: Converter, state: StageState, cmd: ins.Copy) -> None:
    _copy_like(conv, state, cmd, is_add=False)


def do_add(conv: Converter, state: StageState, cmd: ins.Add) -> None:
    _copy_like(conv, state, cmd, is_add=True)


def _copy_like(conv: Converter, state: StageState, cmd, is_add: bool) -> None:
    loc = cmd.location
    env = state.env
    sources = [conv.expand_checked(s, state, cmd) for s in cmd.sources]
    dest_raw = conv.expand_checked(cmd.dest, state, cmd)
    chown = conv.expand_checked(cmd.chown, state, cmd) if cmd.chown else ""
    chmod = conv.expand_checked(cmd.chmod, state, cmd) if cmd.chmod else ""
    excludes = tuple(conv.expand(e, env, loc) for e in cmd.excludes)
    contents = _heredoc_contents(cmd, env)
    if chmod:
        try:
            _check_chmod(chmod)
        except ValueError as err:
            raise DockerfileError(str(err), loc) from None
    checksum = conv.expand(cmd.checksum, env, loc) if is_add and cmd.checksum else ""
    parents = bool(getattr(cmd, "parents", False))
    workdir = state.config["config"].get("WorkingDir") or "/"
    if dest_raw.startswith("/"):
        dest = normalize_path("/", dest_raw, keep_slash=True)
    else:
        dest = normalize_path(workdir, dest_raw or "./", keep_slash=True)
        if dest_raw in ("", ".") and dest != "/":
            dest += "/"

    created_by = "ADD" if is_add else "COPY"
    if parents:
        created_by += " --parents"
    if chown:
        created_by += f" --chown={chown}"
    if chmod:
        created_by += f" --chmod={chmod}"
    created_by += "".join(" " + s for s in sources) + "".join(" <<" + p for p, _ in contents)
    created_by += " " + dest_raw
    remote = _remote_sources(sources, is_add, checksum, loc)

    name = conv.step_name(state, conv.display_text(state, cmd))
    explicit_unpack = bool(cmd.unpack) if is_add and cmd.unpack is not None else None
    from_ = getattr(cmd, "from_", "")
    where = _CopySources(conv, state, cmd, name=name, from_=from_, is_add=is_add, parents=parents,
                         checksum=checksum, explicit_unpack=explicit_unpack)

    if (remote and (len(sources) > 1 or contents)) or (contents and sources):
        op: Op = _copy_parts(cmd, state.rootfs, sources, contents, dest, chown, chmod, excludes, where)
    elif contents:
        op = WriteFiles(
            inputs=(state.rootfs,),
            files=tuple(InlineFile(p, d.encode()) for p, d in contents),
            dest=dest,
            chown=chown,
            chmod=chmod,
        )
    else:
        unpack = False
        if remote and _is_git(remote[0]):
            src_vertex, paths = where.git(remote[0])
        elif remote:
            src_vertex, paths = where.http(remote[0])
            unpack = where.unpacks_url()
        else:
            paths = where.local_paths(sources)
            src_vertex = where.local_vertex()
            unpack = where.unpacks_local()
        op = FileCopy(
            inputs=(state.rootfs, src_vertex),
            sources=paths,
            dest=dest,
            chown=chown,
            chmod=chmod,
            link=cmd.link,
            parents=parents,
            excludes=excludes,
            unpack=unpack,
            follow_symlinks=True,
            created_by=created_by + " # buildkit",
        )
    state.rootfs = conv.add(op, name, loc, state.display)
    conv.commit(state, created_by, layer=True, buildkit_suffix=True)


def _heredoc_contents(cmd, env) -> list[tuple[str, str]]:
    """(name, text) of each heredoc source, expanded unless its delimiter
    was quoted; quotes in the text are kept, as in BuildKit."""
    heredoc_lexer = Lexer("\\", skip_quotes=True)
    contents = []
    for content in cmd.contents:
        data = content.data
        if content.expand:
            try:
                data = heredoc_lexer.process_word(data, env)
            except ExpansionError as err:
                raise DockerfileError(err.message, cmd.location) from None
        contents.append((content.path, data))
    return contents


def _remote_sources(sources: list[str], is_add: bool, checksum: str, loc) -> list[str]:
    """The URL and git sources, checked: only ADD takes them, and a
    --checksum needs exactly one."""
    if checksum:
        if len(sources) != 1:
            raise DockerfileError("checksum can't be specified for multiple sources", loc)
        if not (_is_http(sources[0]) or _is_git(sources[0])):
            # BuildKit 0.13's words; git sources (0.14+) take a checksum too.
            raise DockerfileError("checksum can't be specified for non-HTTP sources", loc)
    remote = [s for s in sources if _is_http(s) or _is_git(s)]
    if remote and not is_add:
        kind = "a git ref" if _is_git(remote[0]) else "a URL"
        raise DockerfileError(f"source can't be {kind} for COPY", loc)
    return remote


def _copy_parts(cmd, rootfs: str, sources: list[str], contents: list[tuple[str, str]], dest: str,
                chown: str, chmod: str, excludes: tuple[str, ...], where: _CopySources) -> CopyParts:
    """A COPY/ADD mixing source kinds: one CopyParts, its parts in
    BuildKit's order (dispatchCopy): the source paths as written (local,
    URL and git interleaved), then the heredocs; a later part overwrites
    an earlier one. Consecutive local sources share one part."""
    word = "ADD" if where.is_add else "COPY"
    if not (dest.endswith("/") or dest.endswith("/.")):
        raise DockerfileError(f"When using {word} with more than one source file, "
                              "the destination must be a directory and end with a /", cmd.location)
    inputs: list[str] = [rootfs]
    parts: list[CopyPart] = []

    def input_index(vertex: str) -> int:
        if vertex not in inputs[1:]:
            inputs.append(vertex)
        return inputs.index(vertex, 1)

    local: list[str] = []

    def flush_local() -> None:
        if local:
            parts.append(CopyPart(input=input_index(where.local_vertex()), sources=where.local_paths(local),
                                  parents=where.parents, unpack=where.unpacks_local()))
            local.clear()

    for src in sources:
        if _is_git(src):
            flush_local()
            vertex, paths = where.git(src)
            parts.append(CopyPart(input=input_index(vertex), sources=paths))
        elif _is_http(src):
            flush_local()
            vertex, paths = where.http(src)
            parts.append(CopyPart(input=input_index(vertex), sources=paths, unpack=where.unpacks_url()))
        else:
            local.append(src)
    flush_local()
    if contents:
        parts.append(CopyPart(files=tuple(InlineFile(p, d.encode()) for p, d in contents)))
    return CopyParts(
        inputs=tuple(inputs),
        parts=tuple(parts),
        dest=dest,
        chown=chown,
        chmod=chmod,
        link=cmd.link,
        excludes=excludes,
        is_add=where.is_add,
    )


class _CopySources:
    """Where one COPY/ADD's sources come from: the vertex and paths of a
    git source, a URL, or local paths (the context or `--from`), shared by
    the single-kind FileCopy and the mixed CopyParts."""

    def __init__(self, conv: Converter, state: StageState, cmd, *, name: str, from_: str, is_add: bool,
                 parents: bool, checksum: str, explicit_unpack: bool | None):
        self.conv, self.state, self.cmd, self.name = conv, state, cmd, name
        self.from_, self.is_add, self.parents = from_, is_add, parents
        self.checksum, self.explicit_unpack = checksum, explicit_unpack

    def _add(self, op: Op) -> str:
        return self.conv.add(op, self.name, self.cmd.location, self.state.display)

    def git(self, src: str) -> tuple[str, tuple[str, ...]]:
        url, _, fragment = src.partition("#")
        ref, _, subdir = fragment.partition(":")
        keep_git_dir = bool(getattr(self.cmd, "keep_git_dir", False))
        vertex = self._add(GitSource(remote=url, ref=ref, keep_git_dir=keep_git_dir))
        # `#ref:subdir` adds that directory's contents, as BuildKit's git source does.
        return vertex, ("/" + subdir.strip("/"),)

    def http(self, url: str) -> tuple[str, tuple[str, ...]]:
        filename = url_file_name(url)
        return self._add(HttpSource(url=url, checksum=self.checksum, filename=filename)), ("/" + filename,)

    def local_paths(self, local: list[str]) -> tuple[str, ...]:
        matcher = self.conv.matcher
        if not self.from_ and matcher is not None:
            for src in local:
                rel = normalize_path("/", src, keep_slash=False).lstrip("/")
                if rel and not any(c in src for c in "*?[") and matcher.excluded(rel):
                    lint.copy_ignored(self.conv.linter, "Add" if self.is_add else "Copy", src, self.cmd.location)
        if self.parents:
            # A leading "./" is the usual relative prefix, not the
            # `/./` pivot: `./x/./y/a.txt` keeps `y/a.txt`.
            return tuple("/" + re.sub(r"^(?:\./+)+", "", s).lstrip("/") for s in local)
        return tuple(normalize_path("/", s, keep_slash=False) for s in local)

    def local_vertex(self) -> str:
        if self.from_:
            return self.conv.source_vertex(self.state, self.cmd, self.from_)
        return self.conv.context_vertex()

    # BuildKit: --unpack=... overrides; by default ADD unpacks local archives, never a URL's file.
    def unpacks_local(self) -> bool:
        return self.is_add if self.explicit_unpack is None else self.explicit_unpack

    def unpacks_url(self) -> bool:
        return bool(self.explicit_unpack)


# -- source kinds, names and modes ----------------------------------------------

_SYMBOLIC_MODE = re.compile(r"^[ugoa]*([-+=]([rwxXst]*|[ugo]))+(,[ugoa]*([-+=]([rwxXst]*|[ugo]))+)*$")


def _check_chmod(value: str) -> None:
    message = f"invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
    if re.fullmatch(r"[0-7]+", value):
        if int(value, 8) > 0o7777:
            raise ValueError(message)
        return
    if re.fullmatch(r"[0-9]+", value) or not _SYMBOLIC_MODE.match(value):
        raise ValueError(message)


def _is_git(src: str) -> bool:
    if src.startswith(("git@", "git://", "ssh://")):
        return True
    if src.startswith(("http://", "https://")):
        return src.split("#", 1)[0].endswith(".git")
    return False


def _is_http(src: str) -> bool:
    return src.startswith(("http://", "https://")) and not _is_git(src)


def url_file_name(url: str) -> str:
    """The file name of `ADD <url>`, as BuildKit's frontend derives it: Go's
    path.Base of the URL's decoded path, "__unnamed__" when the URL does not
    parse or the base is no plain name. BuildKit keeps `..` (from
    `http://host/a/..`), which names the download's parent directory; here
    it is unnamed too, as are names with NUL."""
    unnamed = "__unnamed__"
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:  # `http://[::1/x`: the download fails and says so
        return unnamed
    if re.search(r"%(?![0-9A-Fa-f]{2})", path):
        return unnamed  # Go's url.Parse refuses a bad escape
    # Go's path.Base: trailing slashes go, "" is ".", all slashes are "/".
    trimmed = urllib.parse.unquote(path).rstrip("/")
    base = trimmed.rpartition("/")[2] if trimmed else ("/" if path else ".")
    if base in ("", ".", "..", "/") or "\0" in base:
        return unnamed
    return base
