"""The `pybuild` console script: a memoised no-op rebuild is answered before
the CLI (click, the frontend, networkx) is even imported (builder.root.memo)."""

from __future__ import annotations

import atexit
import gc
import sys
import time


def main() -> None:
    started_ns = time.time_ns()
    # One process runs one command, and nearly everything the imports create
    # lives until it exits; the cyclic GC would still rescan all of it during
    # the build (~40 ms for a small one) and at exit (~50 ms).
    gc.disable()
    atexit.register(gc.freeze)  # registered first, so it runs last
    from builder.root import memo

    argv = sys.argv[1:]
    if memo.enabled():
        try:
            status = memo.replay(argv)
        except KeyboardInterrupt:
            print("ERROR: interrupted", file=sys.stderr)
            sys.exit(130)
        if status is not None:
            sys.exit(status)
        memo.ARGV, memo.STARTED_NS = argv, started_ns
    from builder.cli import main as cli_main

    gc.freeze()
    gc.enable()
    cli_main()
