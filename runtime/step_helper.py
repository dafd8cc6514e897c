"""What the builtin and chroot executors share about their helper process
(runtime/sandbox.py, runtime/chroot_helper.py): the config it reads, and
the status lines it writes back."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.errors import ExecFailed
from runtime.executor import SandboxFailed, process_env
from runtime.spec import BindMount, ExecSpec
from runtime.users import User

# docker's containers inherit containerd's LimitNOFILE=infinity, i.e. this
_NOFILE = 1048576


def helper_config(spec: ExecSpec, rootfs: Path, user: User, etc: dict[str, str], no_new_privileges: bool) -> dict:
    """What the builtin and chroot helpers both read from their config
    (runtime/sandbox.py, runtime/chroot_helper.py): the step's process, its
    mounts and generated /etc files; each executor adds its own keys."""
    from runtime.limits import sandbox_rlimits

    mounts = []
    for mount in spec.mounts:
        if isinstance(mount, BindMount):
            mounts.append({"type": "bind", "source": os.path.abspath(mount.source), "target": mount.target,
                           "readonly": mount.readonly, "sealed": mount.sealed})
        else:
            mounts.append({"type": "tmpfs", "target": mount.target, "size": mount.size})
    return {
        "rootfs": str(rootfs),
        "hostname": spec.hostname,
        "etc": etc,
        "mounts": mounts,
        "args": list(spec.args),
        "env": process_env(spec, user),
        "cwd": os.path.join("/", spec.cwd),
        "uid": user.uid,
        "gid": user.gid,
        "groups": list(user.additional_gids),
        "no_new_privs": no_new_privileges,
        "nofile": _nofile_limit(),
        "rlimits": sandbox_rlimits(spec.limits),
    }


def _nofile_limit() -> int:
    """docker's 1048576 open files, unless the kernel allows fewer."""
    try:
        with open("/proc/sys/fs/nr_open") as handle:
            return min(_NOFILE, int(handle.read()))
    except FileNotFoundError:
        return 0


class HelperStatus:
    """What a step's helper (runtime/sandbox.py, runtime/chroot_helper.py)
    says on its status pipe: "exit CODE SIGNAL" or "error TEXT" (and
    whatever else its executor reads itself), and the outcome it means."""

    def __init__(self, helper: str):
        self.helper = helper  # its name, for a helper that said nothing
        self.exit: tuple[int, int | None] | None = None
        self.error: str | None = None

    def read(self, line: bytes) -> tuple[str, str]:
        """Take one status line; returns it as (kind, the rest)."""
        kind, _, rest = line.decode(errors="replace").partition(" ")
        if kind == "exit":
            code, signum = rest.split()
            self.exit = (int(code), int(signum) or None)
        elif kind == "error":
            self.error = rest
        return kind, rest

    def raise_for(self, args, tail: str, returncode: int | None) -> None:
        """SandboxFailed for the helper's own failure, ExecFailed for the
        step's; nothing when the step succeeded."""
        if self.error is not None:
            raise SandboxFailed(self.error)
        if self.exit is None:
            detail = f": {tail}" if tail else ""
            raise SandboxFailed(f"{self.helper} exited with status {returncode}{detail}")
        code, signum = self.exit
        if code != 0 or signum:
            raise ExecFailed(args, code, signum, tail)
