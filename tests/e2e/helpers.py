"""End-to-end build helper: a Dockerfile string and a few files in a temp
context, one real `builder.build.build` call, and the image read back the
way a user would see it (an OCI layout for the config and layers, a
`type=local` export for the files).

    built = build_image(tmp_path, root, "FROM ...\\nRUN ...", files={"a.txt": "x"})
    assert built.config["config"]["User"] == "app"
    assert built.read_text("/a.txt") == "x"
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from builder.build import BuildResult, build
from builder.errors import PybuildError
from cache.errors import CacheError
from frontend.errors import FrontendError
from runtime.errors import RuntimeFailure

# What a failed build raises (the CLI reports exactly these, see builder/cli/guard.py).
BUILD_ERRORS = (PybuildError, FrontendError, CacheError, RuntimeFailure)

_UNIQUE = iter(range(1, 1_000_000))


@dataclass(frozen=True)
class Built:
    result: BuildResult
    context: Path
    layout: Path | None  # the OCI layout directory (tar=false)
    rootfs: Path | None  # the `type=local` export

    # the image config --------------------------------------------------
    def _blob(self, digest: str) -> bytes:
        algo, _, hexdigest = digest.partition(":")
        return (self.layout / "blobs" / algo / hexdigest).read_bytes()

    @property
    def manifest(self) -> dict:
        index = json.loads((self.layout / "index.json").read_text())
        return json.loads(self._blob(index["manifests"][0]["digest"]))

    @property
    def image_config(self) -> dict:
        """The whole config blob (architecture, os, config, rootfs, history)."""
        return json.loads(self._blob(self.manifest["config"]["digest"]))

    @property
    def config(self) -> dict:
        """The `config` section (Env, Cmd, User...)."""
        return self.image_config.get("config") or {}

    @property
    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.config.get("Env") or [])

    def layer_members(self, index: int = -1) -> list[tarfile.TarInfo]:
        """The entries of one layer tar, as `tar -tvf` lists them."""
        layer = self.manifest["layers"][index]
        algo, _, hexdigest = layer["digest"].partition(":")
        with tarfile.open(self.layout / "blobs" / algo / hexdigest, mode="r:*") as tar:
            return tar.getmembers()

    # the files ---------------------------------------------------------
    def path(self, path: str) -> Path:
        return self.rootfs / path.lstrip("/")

    def read_text(self, path: str) -> str:
        return self.path(path).read_text()

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.path(path))


def tar_bytes(members: Mapping[str, bytes], compression: str = "") -> bytes:
    """A tar archive of regular files (mode 0644, one fixed mtime), `compression`
    as tarfile names it ("" or "gz")."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compression}") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def write_context(context: Path, files: Mapping[str, str | bytes | Path] | None) -> None:
    context.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        path = context / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy2(content, path)  # keeps the mode (executables)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def build_image(
    tmp_path: Path,
    root: Path,
    text: str | None,
    *,
    files: Mapping[str, str | bytes | Path] | None = None,
    export: bool = True,
    local: bool = True,
    outputs: tuple[str, ...] = (),
    **kwargs,
) -> Built:
    """Build the Dockerfile `text` (None: read `dockerfile=PATH`) with `files` as its context, in a fresh
    directory under tmp_path, on the pybuild root `root`. Extra keyword
    arguments go to `builder.build.build` (build_args, target, secrets...).
    """
    n = next(_UNIQUE)
    work = tmp_path / f"build{n}"
    context = work / "context"
    write_context(context, files)
    layout = work / "layout" if export else None
    rootfs = work / "rootfs" if local else None
    specs = list(outputs)
    if layout is not None:
        specs.append(f"type=oci,dest={layout},tar=false")
    if rootfs is not None:
        # The image's files as they are (owners, setuid bits, devices), not
        # as a local export writes them for the invoking user.
        specs.append(f"type=local,dest={rootfs},preserve-special=true")
    result = build(context, dockerfile_text=text, root=root, outputs=specs, **kwargs)
    return Built(result, context, layout, rootfs)


# Both executors; runc is installed wherever the suite runs (.ci/run).
ISOLATIONS = ["builtin", "oci"]
