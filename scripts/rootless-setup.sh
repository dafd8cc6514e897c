#!/usr/bin/env bash
# What the rootless tests (tests/rootless/) need on the host, as root, after
# scripts/setup.sh (.ci/run runs both). Safe to run again: each step checks
# before it changes anything.
#   1. `/` searchable by every user (this VM's image once booted with 0644
#      there, and then no ordinary user can exec anything), and /dev/fuse
#      usable by every user (udev's mode; without udev it is 0600),
#   2. the user the tests build as, $PYBUILD_ROOTLESS_USER (default
#      pybuild-rootless), with the subordinate ids 300000-365535,
#   3. a second user, $PYBUILD_ROOTLESS_NOSUBID_USER (default
#      pybuild-nosubid), with none: the "clear error" case,
#   4. a virtual environment any user can run, $PYBUILD_ROOTLESS_VENV
#      (default /opt/pybuild-rootless), from Debian's /usr/bin/python3 (the
#      python3 first on root's PATH may live under /root, unreadable to the
#      user), with pybuild installed in it. The tests put a readable copy of
#      this checkout first on PYTHONPATH, so what runs is the checkout's code
#      (the checkout itself may sit under /root, mode 0700).
set -euo pipefail
cd "$(dirname "$0")/.."
user=${PYBUILD_ROOTLESS_USER:-pybuild-rootless}
nosubid=${PYBUILD_ROOTLESS_NOSUBID_USER:-pybuild-nosubid}
venv=${PYBUILD_ROOTLESS_VENV:-/opt/pybuild-rootless}
first_id=300000
count=65536
umask 022

if [ "$(id -u)" != 0 ]; then
    echo "scripts/rootless-setup.sh: run as root (useradd, usermod)" >&2
    exit 1
fi
for tool in useradd usermod newuidmap newgidmap runuser; do
    if ! command -v "$tool" >/dev/null; then
        echo "scripts/rootless-setup.sh: $tool missing (apt-get install passwd uidmap util-linux)" >&2
        exit 1
    fi
done

root_mode=$(stat -c %a /)
if (( (8#$root_mode & 1) == 0 )); then
    echo "--- / had mode $root_mode: chmod o+x /"
    chmod o+x /
fi
# fuse-overlayfs as a user opens /dev/fuse: udev's rule makes it 0666 on a
# Debian machine; a VM or container without udev leaves the kernel's 0600.
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
    echo "--- /dev/fuse had mode $(stat -c %a /dev/fuse): chmod 0666, as udev does"
    chmod 0666 /dev/fuse
fi

# SUB_UID_COUNT=0: useradd would otherwise hand each new user the next free
# range of login.defs, and the second user must have none.
for name in "$user" "$nosubid"; do
    if ! id -u "$name" >/dev/null 2>&1; then
        echo "--- useradd $name"
        useradd -m -s /bin/sh -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$name"
    fi
done

has_range() {  # FILE NAME: whether NAME has the tests' range in FILE
    grep -qx "$2:$first_id:$count" "$1" 2>/dev/null
}
if ! has_range /etc/subuid "$user"; then
    echo "--- usermod --add-subuids $first_id-$((first_id + count - 1)) $user"
    usermod --add-subuids "$first_id-$((first_id + count - 1))" "$user"
fi
if ! has_range /etc/subgid "$user"; then
    echo "--- usermod --add-subgids $first_id-$((first_id + count - 1)) $user"
    usermod --add-subgids "$first_id-$((first_id + count - 1))" "$user"
fi
nosubid_uid=$(id -u "$nosubid")
if grep -qE "^($nosubid|$nosubid_uid):" /etc/subuid /etc/subgid 2>/dev/null; then
    echo "scripts/rootless-setup.sh: $nosubid must have no subordinate ids, but /etc/subuid or /etc/subgid" \
         "gives it some (usermod --del-subuids/--del-subgids)" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "--- virtual environment for $user: $venv"
    /usr/bin/python3 -m venv "$venv"
fi
# pybuild itself (a copy, not editable: the checkout may be unreadable to
# the user), for its dependencies and its distribution metadata (`pybuild
# version` and `info` read it); the tests run this tree's code anyway.
# Built from a copy, so that setuptools' build/ and egg-info stay out of
# the checkout.
echo "--- pip install . into $venv"
source_copy=$(mktemp -d)
trap 'rm -rf "$source_copy"' EXIT
cp -r pyproject.toml README.md frontend builder cache runtime "$source_copy"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "$source_copy"
chmod -R a+rX "$venv"
if ! runuser -u "$user" -- "$venv/bin/python" -c 'import click, cryptography, dockerfile_parse, nacl, networkx, requests, zstandard'; then
    echo "scripts/rootless-setup.sh: $user cannot import pybuild's dependencies from $venv" >&2
    exit 1
fi
echo "--- rootless: user $user (subordinate ids $first_id-$((first_id + count - 1))), $nosubid (none), $venv"
