"""The `pybuild` console script: a memoised no-op rebuild is answered before
the CLI (click, the frontend, networkx) is even imported (builder.memo)."""

from __future__ import annotations

import sys


def main() -> None:
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

    cli_main()
