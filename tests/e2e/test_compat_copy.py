"""COPY/ADD results that must match BuildKit's, found by building the same
Dockerfiles with docker's BuildKit and with pybuild and comparing the
filesystems. Each test states BuildKit's result and where it comes from;
none needs a docker daemon."""

from __future__ import annotations

import tarfile

import pytest

from e2e.helpers import build_image

pytestmark = pytest.mark.e2e


def _members(built) -> dict[str, tarfile.TarInfo]:
    """Every layer's entries by path, later layers winning, as the image's
    filesystem shows them."""
    found: dict[str, tarfile.TarInfo] = {}
    for index in range(len(built.manifest["layers"])):
        for member in built.layer_members(index):
            found[member.name.rstrip("/")] = member
    return found


def test_chown_with_an_empty_user_or_group_means_id_zero(tmp_path, root, busybox_image):
    # BuildKit's llb.WithUser splits "user:group" and keeps an empty side as
    # a UserOpt without a name, which marshals as id 0: ":grp" is 0:grp,
    # "app:" is app's uid with gid 0 (not app's primary group), "1234:" is
    # 1234:0 and ":" is 0:0. docker 20.10 (BuildKit 0.8) built exactly these
    # owners in the differential run.
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
RUN echo 'grp:x:2000:' >> /etc/group
COPY --chown=:grp a.txt /o/only-group
COPY --chown=:5678 a.txt /o/only-gid
COPY --chown=app: a.txt /o/user-empty-group
COPY --chown=1234: a.txt /o/uid-empty-group
COPY --chown=: a.txt /o/both-empty
""", files={"a.txt": "a\n"}, local=False)
    members = _members(built)
    owners = {name: (members[f"o/{name}"].uid, members[f"o/{name}"].gid)
              for name in ("only-group", "only-gid", "user-empty-group", "uid-empty-group", "both-empty")}
    assert owners == {
        "only-group": (0, 2000),
        "only-gid": (0, 5678),
        "user-empty-group": (1000, 0),
        "uid-empty-group": (1234, 0),
        "both-empty": (0, 0),
    }


def test_hard_links_are_kept_within_one_source_only(tmp_path, root, busybox_image):
    # BuildKit's file op runs one fsutil copy per source path and per
    # wildcard match (solver/llbsolver/file/backend.go docopy: copy.Copy for
    # each match, each with a new copier and inode table), so two sources
    # hard-linked to each other land as two files, while a directory copy
    # keeps the link. docker 20.10 showed the same: `COPY h1 h2 /d/` and
    # `COPY h* /d/` gave two regular files.
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref} AS src
RUN mkdir /s && echo h > /s/h1 && ln /s/h1 /s/h2

FROM {busybox_image.ref}
COPY --from=src /s/h1 /s/h2 /sources/
COPY --from=src /s/h* /wildcard/
COPY --from=src /s /directory/
# /etc has entries: this copy goes through the mounted view, not straight
# into the new snapshot.
COPY --from=src /s/h1 /s/h2 /etc/
""", local=False)
    members = _members(built)
    for top in ("sources", "wildcard", "etc"):
        for name in ("h1", "h2"):
            member = members[f"{top}/{name}"]
            assert member.isreg(), f"{top}/{name} should be a file of its own, not {member.linkname!r}"
    linked = [members["directory/h1"], members["directory/h2"]]
    assert sorted(m.islnk() for m in linked) == [False, True]
