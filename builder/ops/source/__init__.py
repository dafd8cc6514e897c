"""The source ops: what a build starts from. `local` (scratch, the build
context and named directories: no snapshot of their own), `image` (a base
image's layers), `http` (ADD <url>) and `git` (ADD <git url>, and the
fetching that git contexts use too)."""
