"""A directory whose name holds glob characters, with files below it."""
import os


def make(context):
    for name in ("a?b", "[d]"):
        os.makedirs(context / name)
        (context / name / "x.txt").write_text(name + "\n")
        (context / name / "y.md").write_text("y\n")
