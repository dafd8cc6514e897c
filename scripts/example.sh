#!/usr/bin/env bash
# Build testdata/hello end to end: a local registry with a busybox base
# image, a pybuild build, an OCI export, and the image's CMD under runc.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/pybuild-example.XXXXXX)
cleanup() {
    # Both write ends of the helper's stdin must close for it to see EOF.
    exec 3>&- 2>/dev/null || true
    if [ -n "${REG[1]:-}" ]; then eval "exec ${REG[1]}>&-"; fi
    wait "${registry_pid:-}" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The registry helper runs until its stdin (fd 3 here) closes.
coproc REG { python3 scripts/example_registry.py; }
registry_pid=$REG_PID
exec 3>&"${REG[1]}"
read -r host <&"${REG[0]}"
echo "registry with busybox at $host"

root="$work/root"
# --provenance=false: umoci 0.4 unpacks one image manifest per tag, and the
# OCI export otherwise holds buildx's default attested index (the image and
# its provenance: docs/attestations.md), as BuildKit's does.
pybuild --root "$root" -t hello --build-arg "BASE=$host/busybox:latest" --provenance=false \
    -o type=image -o "type=oci,dest=$work/hello.tar" testdata/hello
echo "--- rebuild (fully cached)"
pybuild --root "$root" -t hello --build-arg "BASE=$host/busybox:latest" testdata/hello

echo "--- running the image's CMD with runc"
mkdir -p "$work/layout"
tar -xf "$work/hello.tar" -C "$work/layout"
umoci unpack --image "$work/layout:latest" "$work/bundle" >/dev/null
# umoci writes a config for an interactive terminal; run it attached to none.
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["terminal"] = False
json.dump(config, open(path, "w"))
PY
runc run --bundle "$work/bundle" "pybuild-example-$$" </dev/null
