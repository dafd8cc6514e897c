"""COPY, ADD, COPY <<EOF, WORKDIR and ADD <url>: file ops on a new snapshot."""

from __future__ import annotations

import contextlib
import shutil
import threading
from pathlib import Path

from builder.ops import git
from builder.context.trees import BuildContext
from builder.ops.copy import copy_into, make_dir, plan_direct, write_files
from builder.ops.copy_reuse import CopyReuse, note_name
from builder.ops.http import FetchError, fetch_url, redact
from builder.solver.keys import cache_key
from frontend.ops import (ContextSource, CopyParts, FileCopy, GitSource, HttpSource, MakeDir, NamedLocalSource,
                          WriteFiles)
from runtime.confine import Refused, check_name

# Local directories, read through BuildSession.context_for: the build
# context and --build-context directories.
_LOCAL_SOURCES = (ContextSource, NamedLocalSource)


def _fixed_mode(chmod: str) -> bool:
    """An octal --chmod replaces every copied mode: the sources' modes (the
    umask of whoever checked them out) cannot change the result, so they
    stay out of the key."""
    return bool(chmod) and chmod.isdigit()


class _SnapshotStep:
    """Runs `change(rootfs)` on a fresh snapshot above the input chain."""

    def __init__(self, vertex: str, session):
        self.vertex = vertex
        self.session = session

    def on_new_snapshot(self, chain, change, then=None) -> tuple:
        """`then(snapshot, what change returned)`, when given, runs after the
        view is unmounted, on the snapshot's own directory."""
        snapshots = self.session.worker.snapshots
        snapshot = snapshots.create()
        try:
            with snapshots.mount(tuple(chain), snapshot) as rootfs:
                changed = change(Path(rootfs))
            if then is not None:
                then(snapshot, changed)
        except BaseException:
            snapshots.remove(snapshot)
            raise
        return tuple(chain) + (snapshot,)


class CopyImpl(_SnapshotStep):
    def __init__(self, op: FileCopy, vertex: str, session):
        super().__init__(vertex, session)
        self.op = op

    def _source_op(self):
        return self.session.definition.op(self.op.inputs[1])

    def _from_context(self) -> bool:
        return isinstance(self._source_op(), _LOCAL_SOURCES)

    def _select(self, context: BuildContext):
        return context.select(self.op.sources, excludes=self.op.excludes,
                              follow_symlinks=self.op.follow_symlinks)

    def cache_key(self, input_keys):
        content = None
        if self._from_context():
            # Only the selected files are hashed, through the stat cache.
            context = self.session.context_for(self._source_op())
            selection = self._select(context)
            content = str(context.checksum(selection, ignore_mode=_fixed_mode(self.op.chmod)))
        return cache_key(self.op.canonical(), input_keys, content)

    def execute(self, inputs, cancel: threading.Event):
        op = self.op
        with contextlib.ExitStack() as stack:
            if self._from_context():
                # as the key saw it: the context remembers
                selection = self._select(self.session.context_for(self._source_op()))
            else:
                view = stack.enter_context(self.session.worker.snapshots.mount(tuple(inputs[1]), None))
                selection = self._select(BuildContext.of_tree(Path(view)))
            unpack = op.unpack and not isinstance(self._source_op(), (HttpSource, GitSource))
            return self._copy(tuple(inputs[0]), selection, unpack)

    def _copy(self, chain: tuple, selection, unpack: bool) -> tuple:
        """Through the mounted view only what needs it (see copy.plan_direct);
        the files themselves go straight into the new upper, linked from the
        previous result of this COPY where unchanged (builder/ops/copy_reuse)."""
        op = self.op
        snapshots = self.session.worker.snapshots
        options = dict(chown=op.chown, chmod=op.chmod, parents=op.parents, unpack=unpack,
                       instruction="ADD" if op.unpack else "COPY")

        def on_view(rootfs: Path):
            direct = plan_direct(rootfs, selection, op.dest, **options)
            if direct is not None and any(snapshots.has_entries_below(s, direct.dest_rel) for s in chain):
                # Hidden entries below (whiteouts, an opaque dir's lower
                # files): overlay knows which new directories must be
                # opaque, so the layer stays what a copy through it makes.
                direct = None
            if direct is None:
                copy_into(rootfs, selection, op.dest, **options)
            return direct

        def into_upper(snapshot: str, direct) -> None:
            if direct is None:
                return
            upper = snapshots.fs_path(snapshot)
            reuse = None
            stat_cache = self.session.context_for(self._source_op()).stat_cache if self._from_context() else None
            if stat_cache is not None:
                reuse = CopyReuse(snapshots, note_name(op.canonical(), chain), stat_cache)
                reuse.start(direct.dest_rel)
            direct.run(upper, selection, reuse)
            if reuse is not None:
                reuse.save(snapshot, direct.dest_rel)

        return self.on_new_snapshot(chain, on_view, then=into_upper)


class WriteFilesImpl(_SnapshotStep):
    def __init__(self, op: WriteFiles, vertex: str, session):
        super().__init__(vertex, session)
        self.op = op

    def cache_key(self, input_keys):
        return cache_key(self.op.canonical(), input_keys)

    def execute(self, inputs, cancel):
        op = self.op
        return self.on_new_snapshot(inputs[0], lambda rootfs: write_files(
            rootfs, op.files, op.dest, chown=op.chown, chmod=op.chmod, scratch_dir=self.session.tmp))


class CopyPartsImpl(_SnapshotStep):
    """A COPY/ADD with sources of different kinds: every part, in order,
    through the mounted view of one new snapshot (one layer). No direct
    write or reuse of an earlier result: those assume one selection."""

    def __init__(self, op: CopyParts, vertex: str, session):
        super().__init__(vertex, session)
        self.op = op

    def _from_context(self, part) -> bool:
        return bool(part.sources) and isinstance(self.session.definition.op(self.op.inputs[part.input]),
                                                 _LOCAL_SOURCES)

    def _select(self, part, context: BuildContext):
        return context.select(part.sources, excludes=self.op.excludes, follow_symlinks=self.op.follow_symlinks)

    def _context(self, part) -> BuildContext:
        return self.session.context_for(self.session.definition.op(self.op.inputs[part.input]))

    def cache_key(self, input_keys):
        # Each context part's selected files, hashed through the session's
        # context (so the build memo sees what was read), as CopyImpl does.
        fixed_mode = _fixed_mode(self.op.chmod)
        sums = []
        for index, part in enumerate(self.op.parts):
            if self._from_context(part):
                context = self._context(part)
                sums.append(f"{index}:{context.checksum(self._select(part, context), ignore_mode=fixed_mode)}")
        return cache_key(self.op.canonical(), input_keys, ",".join(sums) if sums else None)

    def execute(self, inputs, cancel):
        op = self.op
        instruction = "ADD" if op.is_add else "COPY"
        with contextlib.ExitStack() as stack:
            selections = []
            views: dict[int, BuildContext] = {}
            for part in op.parts:
                if not part.sources:
                    selections.append(None)  # inline files
                elif self._from_context(part):
                    selections.append(self._select(part, self._context(part)))  # as the key saw it
                else:
                    if part.input not in views:
                        mount = self.session.worker.snapshots.mount(tuple(inputs[part.input]), None)
                        view = stack.enter_context(mount)
                        views[part.input] = BuildContext.of_tree(Path(view))
                    selections.append(self._select(part, views[part.input]))

            def change(rootfs: Path) -> None:
                for part, selection in zip(op.parts, selections):
                    if selection is None:
                        write_files(rootfs, part.files, op.dest, chown=op.chown, chmod=op.chmod,
                                    scratch_dir=self.session.tmp)
                    else:
                        copy_into(rootfs, selection, op.dest, chown=op.chown, chmod=op.chmod,
                                  parents=part.parents, unpack=part.unpack, instruction=instruction)

            return self.on_new_snapshot(tuple(inputs[0]), change)


class MakeDirImpl(_SnapshotStep):
    def __init__(self, op: MakeDir, vertex: str, session):
        super().__init__(vertex, session)
        self.op = op

    def cache_key(self, input_keys):
        return cache_key(self.op.canonical(), input_keys)

    def execute(self, inputs, cancel):
        return self.on_new_snapshot(inputs[0], lambda rootfs: make_dir(rootfs, self.op.path, user=self.op.user))


class HttpImpl:
    """The downloaded file, alone in a snapshot, for a FileCopy to read.

    Without --checksum the content decides the key, so the file is fetched
    while keying (as BuildKit re-checks a URL on every build)."""

    def __init__(self, op: HttpSource, vertex: str, session):
        self.op = op
        self.vertex = vertex
        self.session = session
        self._download: tuple[Path, str, str] | None = None

    def _fetch(self) -> tuple[Path, str, str]:
        if self._download is None:
            path = self.session.tmp / f"download-{self.vertex[7:23]}"
            limits = self.session.size_limits
            name, digest = fetch_url(self.op.url, path, self.op.checksum or None, filename=self.op.filename,
                                     max_size=limits.max_add_url_size if limits is not None else None)
            self._download = (path, name, str(digest))
        return self._download

    def cache_key(self, input_keys):
        content = self.op.checksum or self._fetch()[2]
        return cache_key(self.op.canonical(), input_keys, content)

    def execute(self, inputs, cancel):
        path, name, _ = self._fetch()
        try:
            # The frontend names the file; a name that is not plain (`..`)
            # would put the download beside the snapshot, not in it.
            check_name(name)
        except Refused:
            raise FetchError(f"ADD {redact(self.op.url)}: {name!r} is not a plain file name") from None
        snapshots = self.session.worker.snapshots
        snapshot = snapshots.create()
        try:
            target = snapshots.fs_path(snapshot) / name
            shutil.copy2(path, target)
        except BaseException:
            snapshots.remove(snapshot)
            raise
        return (snapshot,)


class GitImpl:
    """ADD <git url>: the tree of one ref, alone in a snapshot, for a
    FileCopy to read. The key holds the commit the ref names now, so a new
    commit on a branch rebuilds, as BuildKit's git source does."""

    def __init__(self, op: GitSource, vertex: str, session):
        self.op = op
        self.vertex = vertex
        self.session = session
        self._commit: str | None = None

    def cache_key(self, input_keys):
        self._commit = git.resolve_commit(self.op.remote, self.op.ref, self.session.tmp)
        return cache_key(self.op.canonical(), input_keys, self._commit)

    def execute(self, inputs, cancel):
        snapshots = self.session.worker.snapshots
        snapshot = snapshots.create()
        try:
            git.checkout(self.op.remote, self._commit or self.op.ref, snapshots.fs_path(snapshot),
                         keep_git_dir=self.op.keep_git_dir)
        except BaseException:
            snapshots.remove(snapshot)
            raise
        return (snapshot,)
