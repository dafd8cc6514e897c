"""The `pybuild` console script: a memoised no-op rebuild is answered before
the CLI (click, the frontend, networkx) is even imported (builder.memo)."""

from __future__ import annotations

import atexit
import gc
import sys


def main() -> None:
    # One process runs one command, and nearly everything the imports create
    # lives until it exits; the cyclic GC would still rescan all of it during
    # the build (~40 ms for a small one) and at exit (~50 ms).
    gc.disable()
    atexit.register(gc.freeze)  # registered first, so it runs last
    from builder import memo

    argv = sys.argv[1:]
    try:
        if memo.replay(argv):
            sys.exit(0)
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr)
        sys.exit(130)
    memo.ARGV = argv
    from builder.cli import main as cli_main

    gc.freeze()
    gc.enable()
    cli_main()
