"""Issue 16: a rootless root holds files of the user's subordinate ids,
which the user cannot remove outside its namespace; `pybuild unshare` runs
a command inside it (as `podman unshare`)."""

from __future__ import annotations


def test_unshare_removes_what_plain_rm_cannot(rootless, busybox_image):
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nRUN mkdir /d && touch /d/f && chown -R 1000 /d\n")
    rootless.ok("build", str(context))
    assert rootless.root.is_dir()
    plain = rootless.as_user("rm", "-rf", str(rootless.root))
    assert plain.returncode != 0 and b"Permission denied" in plain.stderr  # the uid 1000 (host subuid) files
    inside = rootless.ok("unshare", "sh", "-c", f'id -u; rm -rf "{rootless.root}"')
    assert inside.stdout.decode().strip() == "0"
    assert not rootless.root.exists()


def test_unshare_passes_the_status_and_refuses_without_a_range(rootless, nosubid):
    assert rootless.run("unshare", "sh", "-c", "exit 3").returncode == 3
    done = nosubid.run("unshare", "true")
    assert done.returncode == 1
    assert b"usermod --add-subuids" in done.stderr
