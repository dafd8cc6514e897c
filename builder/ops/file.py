"""COPY, ADD, COPY <<EOF and WORKDIR: file ops on a new snapshot."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from builder.context.trees import BuildContext
from builder.ops.copy import copy_into, make_dir, plan_direct, write_files
from builder.ops.copy_reuse import CopyReuse, note_name
from builder.solver.keys import CacheKey, cache_key
from frontend.ops import (ContextSource, CopyParts, FileCopy, GitSource, HttpSource, MakeDir, NamedLocalSource, Op,
                          WriteFiles)

if TYPE_CHECKING:
    from builder.solver.session import BuildSession

# Local directories, read through the session's LocalContexts: the build
# context and --build-context directories.
_LOCAL_SOURCES = (ContextSource, NamedLocalSource)


def _fixed_mode(chmod: str) -> bool:
    """An octal --chmod replaces every copied mode: the sources' modes (the
    umask of whoever checked them out) cannot change the result, so they
    stay out of the key."""
    return bool(chmod) and chmod.isdigit()


class _SnapshotStep:
    """Runs `change(rootfs)` on a fresh snapshot above the input chain."""

    def __init__(self, vertex: str, input_ops: Sequence[Op], session: BuildSession):
        self.vertex = vertex
        self.input_ops = tuple(input_ops)
        self.session = session

    def on_new_snapshot(self, chain, change, then=None) -> tuple:
        """`then(snapshot, what change returned)`, when given, runs after the
        view is unmounted, on the snapshot's own directory."""
        snapshots = self.session.snapshots
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
    def __init__(self, op: FileCopy, vertex: str, input_ops: Sequence[Op], session: BuildSession):
        super().__init__(vertex, input_ops, session)
        self.op = op

    def _source_op(self) -> Op:
        return self.input_ops[1]

    def _from_context(self) -> bool:
        return isinstance(self._source_op(), _LOCAL_SOURCES)

    def _select(self, context: BuildContext):
        return context.select(self.op.sources, excludes=self.op.excludes,
                              follow_symlinks=self.op.follow_symlinks)

    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
        content = None
        if self._from_context():
            # Only the selected files are hashed, through the stat cache.
            context = self.session.contexts.context_for(self._source_op())
            selection = self._select(context)
            content = str(context.checksum(selection, ignore_mode=_fixed_mode(self.op.chmod)))
        return cache_key(self.op.canonical(), input_keys, content)

    def execute(self, inputs, cancel: threading.Event):
        op = self.op
        with contextlib.ExitStack() as stack:
            if self._from_context():
                # as the key saw it: the context remembers
                selection = self._select(self.session.contexts.context_for(self._source_op()))
            else:
                view = stack.enter_context(self.session.snapshots.mount(tuple(inputs[1]), None))
                selection = self._select(BuildContext.of_tree(Path(view)))
            unpack = op.unpack and not isinstance(self._source_op(), (HttpSource, GitSource))
            return self._copy(tuple(inputs[0]), selection, unpack)

    def _copy(self, chain: tuple, selection, unpack: bool) -> tuple:
        """Through the mounted view only what needs it (see copy.plan_direct);
        the files themselves go straight into the new upper, linked from the
        previous result of this COPY where unchanged (builder/ops/copy_reuse)."""
        op = self.op
        snapshots = self.session.snapshots
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
            reuse = stat_cache = None
            if self._from_context():
                stat_cache = self.session.contexts.context_for(self._source_op()).stat_cache
            if stat_cache is not None:
                reuse = CopyReuse(snapshots, note_name(op.canonical(), chain), stat_cache)
                reuse.start(direct.dest_rel)
            direct.run(upper, selection, reuse)
            if reuse is not None:
                reuse.save(snapshot, direct.dest_rel)

        return self.on_new_snapshot(chain, on_view, then=into_upper)


class WriteFilesImpl(_SnapshotStep):
    def __init__(self, op: WriteFiles, vertex: str, input_ops: Sequence[Op], session: BuildSession):
        super().__init__(vertex, input_ops, session)
        self.op = op

    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
        return cache_key(self.op.canonical(), input_keys)

    def execute(self, inputs, cancel):
        op = self.op
        return self.on_new_snapshot(inputs[0], lambda rootfs: write_files(
            rootfs, op.files, op.dest, chown=op.chown, chmod=op.chmod, scratch_dir=self.session.tmp))


class CopyPartsImpl(_SnapshotStep):
    """A COPY/ADD with sources of different kinds: every part, in order,
    through the mounted view of one new snapshot (one layer). No direct
    write or reuse of an earlier result: those assume one selection."""

    def __init__(self, op: CopyParts, vertex: str, input_ops: Sequence[Op], session: BuildSession):
        super().__init__(vertex, input_ops, session)
        self.op = op

    def _from_context(self, part) -> bool:
        return bool(part.sources) and isinstance(self.input_ops[part.input], _LOCAL_SOURCES)

    def _select(self, part, context: BuildContext):
        return context.select(part.sources, excludes=self.op.excludes, follow_symlinks=self.op.follow_symlinks)

    def _context(self, part) -> BuildContext:
        return self.session.contexts.context_for(self.input_ops[part.input])

    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
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
                        mount = self.session.snapshots.mount(tuple(inputs[part.input]), None)
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
    def __init__(self, op: MakeDir, vertex: str, input_ops: Sequence[Op], session: BuildSession):
        super().__init__(vertex, input_ops, session)
        self.op = op

    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
        return cache_key(self.op.canonical(), input_keys)

    def execute(self, inputs, cancel):
        return self.on_new_snapshot(inputs[0], lambda rootfs: make_dir(rootfs, self.op.path, user=self.op.user))
