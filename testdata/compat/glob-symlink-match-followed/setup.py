import os


def make(context):
    os.symlink("a.txt", context / "link-file")
    os.symlink("d1", context / "link-dir")
