import os


def make(context):
    os.symlink("a.txt", context / "rel-link")
    os.symlink("/b.txt", context / "abs-link")
    os.symlink("dir", context / "dir-link")
    os.symlink("../../outside", context / "dir" / "climbing")
    os.symlink("missing", context / "dangling")
