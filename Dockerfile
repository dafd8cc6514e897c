# pybuild's own image: `pybuild -t pybuild .` (pybuild builds itself) or
# `docker build -t pybuild .` (with BuildKit, for RUN --mount). It runs
# pybuild as the unprivileged user pybuild (uid 1000), which enters a user
# namespace of its own from the subordinate range below: no --privileged
# is needed, only the relaxed seccomp, AppArmor and /proc masks rootless
# BuildKit asks for too (docs/ci.md has the command lines and a Kubernetes
# Job).
#
# BASE is any Debian 12 image; tests/container/ gives a locally made one.
ARG BASE=debian:bookworm-slim
FROM scratch AS wheels

FROM ${BASE}

# python3-venv for pybuild's environment; uidmap for newuidmap/newgidmap,
# the helpers that map the subordinate range; fuse-overlayfs for kernels
# whose overlayfs cannot be mounted in a user namespace; ca-certificates for
# registries served over HTTPS.
#
# The helpers get file capabilities instead of their setuid bit (the
# usual fix in images running rootless tools): Debian's newuidmap, built
# without libcap, opens uid_map as euid 0, and the kernel then asks for
# CAP_SYS_ADMIN, which a container has not. With cap_setuid alone it runs
# as the user, the namespace's owner, and the write is allowed.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv uidmap libcap2-bin fuse-overlayfs ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && chmod u-s /usr/bin/newuidmap /usr/bin/newgidmap \
 && setcap cap_setuid=ep /usr/bin/newuidmap \
 && setcap cap_setgid=ep /usr/bin/newgidmap

# pip reads PIP_* from the environment: PyPI by default, or an index
# mirror (PIP_INDEX_URL), or with no network at all a directory of wheels
# given as the named context "wheels" (`--build-context wheels=DIR
# --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels`), which
# replaces the empty stage below.
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS

# The context is bound, not copied: only the installed environment stays in
# the image. rw because setuptools writes its build files into the source.
RUN --mount=type=bind,target=/src,rw \
    --mount=type=bind,from=wheels,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/pybuild \
 && /opt/pybuild/bin/pip install --disable-pip-version-check /src \
 && ln -s /opt/pybuild/bin/pybuild /usr/local/bin/pybuild

# The user and its 65536 subordinate ids (image files owned by 1..65535
# need them). In a container whose own id space is smaller (rootless
# podman or docker with a default range), give the container more ids or
# pick a range that fits.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/sh pybuild \
 && echo pybuild:100000:65536 > /etc/subuid \
 && echo pybuild:100000:65536 > /etc/subgid \
 && install -d -o pybuild -g pybuild /home/pybuild/.local /home/pybuild/.local/share \
        /home/pybuild/.local/share/pybuild

# pybuild's root (made above, so that a new volume copies the user's
# ownership): overlayfs cannot take an upper directory on the container's
# own overlay root, so the root must be a real filesystem (a volume, or an
# emptyDir in Kubernetes).
VOLUME /home/pybuild/.local/share/pybuild
USER pybuild
WORKDIR /home/pybuild
ENTRYPOINT ["pybuild"]
CMD ["--help"]
