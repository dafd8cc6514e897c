"""Hard links, a symlink, an empty directory and odd modes: what git
cannot hold."""

import os
import pathlib


def make(context: pathlib.Path) -> None:
    (context / "one").write_text("shared\n")
    os.link(context / "one", context / "two")
    os.symlink("one", context / "sym")
    (context / "empty").mkdir()
    (context / "setuid").write_text("s\n")
    os.chmod(context / "setuid", 0o4755)
    os.chmod(context / "empty", 0o700)
    for name in ("one", "sym", "empty", "setuid"):
        os.utime(context / name, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
