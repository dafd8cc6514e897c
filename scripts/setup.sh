#!/usr/bin/env bash
# From a fresh Debian 12 machine to the example built and run, as root:
#   1. Debian's packages in scripts/apt-packages.txt (and the tests' arm64
#      busybox .deb, downloaded into their cache),
#   2. a virtual environment at $PYBUILD_VENV (default: .venv in this
#      checkout) with pybuild installed editable, test dependencies included,
#      and qemu's arm64 and arm emulators registered (`pybuild binfmt`),
#   3. scripts/example.sh with that environment first on PATH.
# .ci/run starts with this same script, so CI takes a newcomer's path.
# PYTHON picks the interpreter for the environment (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PYBUILD_VENV:-$PWD/.venv}

if [ "$(id -u)" != 0 ]; then
    echo "scripts/setup.sh: run as root (apt-get, and pybuild mounts overlayfs and makes namespaces)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Install services (docker.io's dockerd, containerd) without starting them:
# the tests start their own daemons, on loopback, when they need one.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' scripts/apt-packages.txt)
# arm64 package lists too, for the tests' arm64 busybox (below): one update.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi
echo "--- apt-get install: ${packages[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

# The tests' arm64 base image (tests/fixtures/busybox.py) is Debian's
# busybox-static:arm64, downloaded (not installed) into the tests' cache.
test_cache=${PYBUILD_TEST_CACHE:-$HOME/.cache/pybuild-tests}
echo "--- busybox-static:arm64 for the tests: $test_cache/busybox-static_arm64.deb"
mkdir -p "$test_cache"
deb_dir=$(mktemp -d "$test_cache/busybox-arm64.XXXXXX")
(cd "$deb_dir" && apt-get download -qq -o APT::Sandbox::User=root busybox-static:arm64)
mv "$deb_dir"/busybox-static_*_arm64.deb "$test_cache/busybox-static_arm64.deb"
rmdir "$deb_dir"

echo "--- virtual environment: $venv"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

# Emulated RUN steps for arm64 and arm (qemu-user-static, installed above):
# binfmt_misc mounted if it is not, and Debian's interpreters registered
# with the F flag from a read-only mount (docs/isolation.md), replacing
# systemd-binfmt's writable ones of the same names (--force) (docs/cli.md, `pybuild binfmt`). The tests' foreign RUNs
# need arm64 (tests/e2e/test_emulation.py). A kernel or container without
# binfmt_misc only loses foreign RUN steps: a warning, not a failed setup
# (under CI those tests then fail, naming the cause).
echo "--- binfmt_misc emulators: arm64, arm"
"$venv/bin/pybuild" binfmt --install arm64,arm --force \
    || echo "scripts/setup.sh: warning: no emulators registered: RUN steps of foreign platforms will fail" >&2

# The tests' oracles from Debian 13: docker 26 (BuildKit 0.13) and cosign 2.x,
# unpacked under /opt/pybuild-trixie, nothing of Debian 12 upgraded.
echo "--- docker 26 and cosign 2 from Debian 13 (scripts/trixie-tools.sh)"
bash scripts/trixie-tools.sh >/dev/null

echo "--- the example (scripts/example.sh)"
PATH="$venv/bin:$PATH" bash scripts/example.sh

echo "--- done: pybuild is in $venv (. $venv/bin/activate, or $venv/bin/pybuild)"
