#!/usr/bin/env bash
# The tests' second oracle (docker 26, BuildKit 0.13, with buildx 0.13) and cosign 2.x come
# from Debian 13 ("trixie"): only the two packages' files are unpacked, under
# /opt/pybuild-trixie/<package>; Debian 12 installs nothing from trixie (the
# suite is pinned at priority 1, so no upgrade or install ever picks it).
# Idempotent. Prints nothing but errors and the binaries' paths.
#   /opt/pybuild-trixie/docker.io/usr/sbin/dockerd   (driven by Debian 12's docker client)
#   /opt/pybuild-trixie/docker-buildx/usr/libexec/docker/cli-plugins/docker-buildx
#   /opt/pybuild-trixie/cosign/usr/bin/cosign
set -euo pipefail
prefix=${PYBUILD_TRIXIE_PREFIX:-/opt/pybuild-trixie}
sources=/etc/apt/sources.list.d/pybuild-trixie.sources
pin=/etc/apt/preferences.d/pybuild-trixie

if [ "$(id -u)" != 0 ]; then
    echo "scripts/trixie-tools.sh: run as root (apt-get)" >&2
    exit 1
fi

need=()
[ -x "$prefix/docker.io/usr/sbin/dockerd" ] || need+=(docker.io)
[ -x "$prefix/docker-buildx/usr/libexec/docker/cli-plugins/docker-buildx" ] || need+=(docker-buildx)
[ -x "$prefix/cosign/usr/bin/cosign" ] || need+=(cosign)
if [ ${#need[@]} -gt 0 ]; then
    if [ ! -f "$sources" ]; then
        # The mirror Debian 12 already uses; deb822 or one-line sources.
        mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
        if [ -z "$mirror" ]; then
            mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
        fi
        if [ -z "$mirror" ]; then
            echo "scripts/trixie-tools.sh: no Debian mirror found in /etc/apt/sources.list{,.d}" >&2
            exit 1
        fi
        cat > "$sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
        printf 'Package: *\nPin: release n=trixie\nPin-Priority: 1\n' > "$pin"
        apt-get update -qq
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    chown _apt "$work" 2>/dev/null || true  # apt-get download drops to _apt
    for package in "${need[@]}"; do
        (cd "$work" && apt-get download -qq "$package/trixie") >&2
        rm -rf "${prefix:?}/$package"
        mkdir -p "$prefix/$package"
        dpkg-deb -x "$work/${package}"_*.deb "$prefix/$package"
    done
fi
"$prefix/docker.io/usr/sbin/dockerd" --version >/dev/null
"$prefix/cosign/usr/bin/cosign" version >/dev/null 2>&1
"$prefix/docker-buildx/usr/libexec/docker/cli-plugins/docker-buildx" version >/dev/null
echo "$prefix/docker.io/usr/sbin/dockerd"
echo "$prefix/docker-buildx/usr/libexec/docker/cli-plugins/docker-buildx"
echo "$prefix/cosign/usr/bin/cosign"
