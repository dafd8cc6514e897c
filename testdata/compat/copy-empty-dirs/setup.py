import os


def make(context):
    os.makedirs(context / "empty")
    os.makedirs(context / "dir" / "nested" / "empty")
    os.chmod(context / "empty", 0o700)
