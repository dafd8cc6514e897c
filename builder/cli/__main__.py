"""`python -m builder.cli`: the CLI without the console script's memo."""

# First, as builder/entry.py does: an ordinary user's process becomes root
# of its own user namespace while it is single-threaded (runtime/userns.py).
from runtime import userns

userns.enter()

from builder.cli import main  # noqa: E402

main()
