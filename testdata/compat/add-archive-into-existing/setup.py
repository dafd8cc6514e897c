"""Extracted over an existing tree, destination without a trailing slash:
directories merge (an existing one keeps its metadata unless the archive
lists it), a file replaces a file, a file replaces a directory, a member
through an image symlink lands where it points inside the image."""

import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "over.tar", "w") as tar:
        add_member(tar, "keep/new", data=b"new\n")
        add_member(tar, "file", data=b"new\n", mode=0o600)
        add_member(tar, "dir", data=b"a file now\n")
        add_member(tar, "link/through-link", data=b"via image link\n")
