import os


def make(context):
    os.chmod(context / "a.txt", 0o600)
    os.chmod(context / "b.txt", 0o4755)
    os.chmod(context / "dir" / "sub", 0o700)
    os.chmod(context / "dir" / "x", 0o751)
