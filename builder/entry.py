"""The `pybuild` console script: a memoised no-op rebuild is answered before
the CLI (click, the frontend, networkx) is even imported (builder.root.memo)."""

from __future__ import annotations

import atexit
import gc
import sys
import time


def main() -> None:
    started_ns = time.time_ns()
    # First, while the process is single-threaded: an ordinary user's
    # pybuild becomes root of its own user namespace (runtime/userns.py).
    from runtime import userns

    userns.enter()
    # One process runs one command, and nearly everything the imports create
    # lives until it exits; the cyclic GC would still rescan all of it during
    # the build (~40 ms for a small one) and at exit (~50 ms).
    gc.disable()
    atexit.register(gc.freeze)  # registered first, so it runs last
    from builder.root import memo
    from builder.root.replay import replay

    argv = sys.argv[1:]
    memoising = memo.enabled()
    if memoising:
        try:
            status = replay(argv)
        except KeyboardInterrupt:
            print("ERROR: interrupted", file=sys.stderr)
            sys.exit(130)
        if status is not None:
            sys.exit(status)
    from builder.cli import main as cli_main
    from builder.cli.shared import Invocation

    gc.freeze()
    gc.enable()
    # A build memoises its result under exactly this command line.
    cli_main(obj=Invocation(tuple(argv), started_ns) if memoising else None)
