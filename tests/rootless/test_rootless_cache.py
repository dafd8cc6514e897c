"""Issue 16: the build cache of an ordinary user's pybuild — exported to a
directory and to a registry, imported into an empty root — and the root's
own commands (images, prune, doctor) as that user."""

from __future__ import annotations

import uuid


def test_cache_export_and_import_local_and_registry(rootless, busybox_image, registry):
    ref = f"{registry.host}/rootless/cache:{uuid.uuid4().hex[:12]}"
    # A step whose output differs on every run: the same stamp later means
    # the step came from the imported cache.
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\n"
                                            "RUN cat /proc/sys/kernel/random/uuid > /stamp\n")
    cache_dir = rootless.home / "cache"
    rootless.ok("build", "--cache-to", f"type=local,dest={cache_dir}", "--cache-to", f"type=registry,ref={ref}",
                "-o", f"type=local,dest={rootless.home / 'first'}", str(context))
    stamp = (rootless.home / "first" / "stamp").read_text()
    assert (cache_dir / "index.json").is_file()
    assert all(path.stat().st_uid == rootless.host.uid for path in cache_dir.rglob("*"))

    for name, source in (("local", f"type=local,src={cache_dir}"), ("registry", f"type=registry,ref={ref}")):
        rootless.ok("build", "--root", str(rootless.home / f"root-{name}"), "--cache-from", source,
                    "-o", f"type=local,dest={rootless.home / name}", str(context))
        assert (rootless.home / name / "stamp").read_text() == stamp, name
    # Without the import, the step runs again.
    rootless.ok("build", "--root", str(rootless.home / "root-none"),
                "-o", f"type=local,dest={rootless.home / 'none'}", str(context))
    assert (rootless.home / "none" / "stamp").read_text() != stamp


def test_images_prune_doctor(rootless, busybox_image):
    # Files of subordinate ids in a snapshot and in a cache mount, in
    # directories even their owner may not write: the user removes them
    # only from inside its namespace.
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nRUN echo kept > /kept\n"
                                            "RUN mkdir -p /locked/d && touch /locked/d/f && chown -R 1000:1000 /locked"
                                            " && chmod 0500 /locked/d /locked\n"
                                            "RUN --mount=type=cache,target=/c mkdir -p /c/d && echo x > /c/d/x"
                                            " && chown -R 65534:65534 /c/d && chmod 0500 /c/d\n")
    rootless.ok("build", "-t", "kept:1", str(context))
    owners = {path.lstat().st_uid for path in rootless.root.rglob("*")}
    assert {rootless.host.host_uid(1000), rootless.host.host_uid(65534)} <= owners
    assert "docker.io/library/kept:1" in rootless.ok("images").stdout.decode()
    doctor = rootless.ok("doctor")
    assert b"Traceback" not in doctor.stdout + doctor.stderr

    # A snapshot no record names, as a killed build leaves one: doctor finds
    # it, --fix removes it.
    snapshots = rootless.root / "snapshots"
    orphan = snapshots / "orphan00"
    (orphan / "fs").mkdir(parents=True)
    rootless.give(orphan)
    found = rootless.run("doctor")
    assert found.returncode == 1 and "orphan00" in found.stdout.decode() + found.stderr.decode()
    rootless.ok("doctor", "--fix")
    assert not orphan.exists()

    size_before = sum(path.stat().st_size for path in rootless.root.rglob("*") if path.is_file())
    rootless.ok("prune", "--all")
    size_after = sum(path.stat().st_size for path in rootless.root.rglob("*") if path.is_file())
    assert size_after < size_before
    assert "docker.io/library/kept:1" in rootless.ok("images").stdout.decode()  # named images stay
    rootless.ok("rmi", "kept:1")
    rootless.ok("prune", "--all")
    assert "kept:1" not in rootless.ok("images").stdout.decode()
    assert rootless.ok("doctor").returncode == 0
    left = [path for path in rootless.root.rglob("*") if path.lstat().st_uid != rootless.host.uid]
    assert left == [], "files of subordinate ids left after prune --all"
