#!/usr/bin/env bash
# From a fresh Debian 12 machine to the example built and run, as root:
#   1. Debian's packages in scripts/apt-packages.txt,
#   2. a virtual environment at $PYBUILD_VENV (default: .venv in this
#      checkout) with pybuild installed editable, test dependencies included,
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
echo "--- apt-get install: ${packages[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

echo "--- virtual environment: $venv"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

echo "--- the example (scripts/example.sh)"
PATH="$venv/bin:$PATH" bash scripts/example.sh

echo "--- done: pybuild is in $venv (. $venv/bin/activate, or $venv/bin/pybuild)"
