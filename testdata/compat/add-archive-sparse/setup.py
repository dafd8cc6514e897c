"""A GNU sparse member (tar --sparse): extracted to its full size."""

import os
import pathlib
import subprocess


def make(context: pathlib.Path) -> None:
    source = context / "src"
    source.mkdir()
    path = source / "sparse"
    with open(path, "wb") as f:
        f.write(b"head\n")
        f.seek(8 * 1024 * 1024)
        f.write(b"tail\n")
    os.utime(path, (1_500_000_000, 1_500_000_000))
    subprocess.run(["tar", "--sparse", "--format=gnu", "--owner=0", "--group=0", "-cf", str(context / "sparse.tar"),
                    "-C", str(source), "sparse"], check=True)
    path.unlink()
    source.rmdir()
