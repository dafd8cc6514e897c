#!/usr/bin/env bash
# The test command of the README: the whole suite, as root, against the real
# registry, overlayfs and namespaces the fixtures set up.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m pytest -q -p no:cacheprovider "$@"
