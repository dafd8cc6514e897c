"""WORKDIR's owner, as BuildKit's file op reads USER (runtime/users.py,
resolve_chown with strict=False): docker 26 never failed a WORKDIR on its
USER; `USER nobody2` then `WORKDIR /n` made /n 0:0, `USER nobody2:app`
0:1000, `USER app:nogroup2` 1000:1000, `USER 1234:app` 1234:1000."""

from __future__ import annotations

import pytest

from runtime.errors import UnknownUser
from runtime.users import resolve_chown


@pytest.fixture
def rootfs(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\napp:x:1000:\n")
    return tmp_path


@pytest.mark.parametrize(("spec", "owner"), [
    ("nobody2", (0, 0)),
    ("nobody2:app", (0, 1000)),
    ("app:nogroup2", (1000, 1000)),
    ("nobody2:nogroup2", (0, 0)),
    ("1234", (1234, 1234)),
    ("1234:app", (1234, 1000)),
    ("1234:nogroup2", (1234, 1234)),
    ("app", (1000, 1000)),
])
def test_workdir_owner_of_user(rootfs, spec, owner):
    assert resolve_chown(rootfs, spec, strict=False) == owner


def test_no_passwd_file_is_root(tmp_path):
    # docker 26 built `FROM scratch` + USER app + WORKDIR /newdir
    assert resolve_chown(tmp_path, "app:staff", strict=False) == (0, 0)


def test_copy_chown_stays_strict(rootfs):
    # --chown keeps docker's documented failure (docs/architecture.md)
    with pytest.raises(UnknownUser):
        resolve_chown(rootfs, "nobody2")


def test_workdir_makes_its_directories_with_that_owner(rootfs):
    # builder.ops.copy.make_dir, which WORKDIR runs: an unknown user is no
    # failure there, its directories are 0 and the group's gid
    from builder.ops.copy import make_dir

    assert make_dir(rootfs, "/new/deeper", user="nobody2:app") == "/new/deeper"
    for path in (rootfs / "new", rootfs / "new" / "deeper"):
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 1000)
