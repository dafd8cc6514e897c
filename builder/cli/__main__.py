"""`python -m builder.cli`: the CLI without the console script's memo."""

from builder.cli import main

main()
