"""setup.py of the glob-escaped-* cases: file names holding glob characters
(not every checkout can hold them), at the top and in sub/."""
import os


def make(context):
    os.makedirs(context / "sub", exist_ok=True)
    for name in ("a?b", "axb", "a*b", "azzb", "[x]", "x", "q["):
        for where in (context, context / "sub"):
            (where / name).write_text(name + "\n")
            os.utime(where / name, (1600000000, 1600000000))
