"""Notes kept beside a snapshot's fs: named strictly, found newest first,
removed with their snapshot."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from runtime.fsutil import remove_tree
from runtime.snapshot import OverlaySnapshotter


@pytest.fixture
def snaps():
    path = Path(tempfile.mkdtemp(prefix="pybuild-notes-"))
    yield OverlaySnapshotter(path / "snapshots")
    remove_tree(path)


def test_notes_are_found_newest_first_and_go_with_their_snapshot(snaps):
    older, newer, other = snaps.create(), snaps.create(), snaps.create()
    for when, snapshot in ((1, older), (2, newer)):
        note = snaps.note_path(snapshot, "note-copy-x")
        note.write_text("{}")
        os.utime(note, ns=(when * 10**18, when * 10**18))
    snaps.note_path(other, "note-copy-y").write_text("{}")
    assert snaps.with_note("note-copy-x") == [newer, older]
    snaps.remove(newer)
    assert snaps.with_note("note-copy-x") == [older]
    assert snaps.exists(older)  # a note is not part of fs


@pytest.mark.parametrize("name", ["fs", "work", "../x", "note-a/b", "note-"])
def test_note_names_never_clash_or_escape(snaps, name):
    with pytest.raises(ValueError):
        snaps.note_path(snaps.create(), name)
