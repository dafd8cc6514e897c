"""Registering qemu-user-static with binfmt_misc (root): `pybuild binfmt
--install` and `--uninstall`.

pybuild's handlers carry the F flag, and the kernel opens their interpreter
when the line is written, in the writer's mount namespace. An emulated
process's executable (/proc/PID/exe) is then that open file, and a step
runs as root with CAP_FOWNER in no user namespace: through a sibling's
/proc/PID/exe it could chmod the host's qemu (setuid root) or write it.
So the line is written by a child in a mount namespace of its own, where
the interpreter is bound read-only (and nosuid) at READ_ONLY_DIR: the open
file keeps that mount alive after the namespace is gone, and a change
through it fails with EROFS. The path exists nowhere else, which is how
a handler is known to be pybuild's (Handler.read_only).

Another tool's handler (systemd-binfmt's from Debian's binfmt.d, say, of
the same qemu-<cpu> name) is neither replaced nor removed unless asked.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from runtime.binfmt import BINFMT_MISC, READ_ONLY_DIR, Arch, BinfmtError, Handler, handlers, mounted, native_arches
from runtime.linux import (CLONE_NEWNS, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
                           MS_REMOUNT, mount, unshare)

# Debian 12's qemu-user-static: the -binfmt-P name makes qemu take the
# original argv[0] as the third argument (the kernel's P flag); the plain
# static binary is the fallback of other layouts.
_QEMU_BINFMT_P = "/usr/libexec/qemu-binfmt/{cpu}-binfmt-P"
_QEMU_STATIC = "/usr/bin/qemu-{cpu}-static"
_CONTROL_FILES = ("register", "status")  # "-1" written to status removes every handler


def mount_binfmt_misc() -> bool:
    """Mount binfmt_misc at its place if it is not there; True if mounted now."""
    if mounted():
        return False
    try:
        mount("binfmt_misc", str(BINFMT_MISC), "binfmt_misc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as exc:
        raise BinfmtError(f"cannot mount binfmt_misc at {BINFMT_MISC}: {exc.strerror}") from None
    return True


def qemu_interpreter(arch: Arch) -> tuple[str, str]:
    """Debian's qemu-user-static interpreter for `arch`, and the flags to
    register it with: F always; P where the interpreter takes the original
    argv[0] (its -binfmt-P name); O, so that an executable the step may run
    but not read (mode 0711) still runs, as Debian registers them."""
    for template, flags in ((_QEMU_BINFMT_P, "POF"), (_QEMU_STATIC, "OF")):
        path = template.format(cpu=arch.cpu)
        if os.path.exists(path):
            return path, flags
    raise BinfmtError(f"no qemu interpreter for {arch.name}: {_QEMU_STATIC.format(cpu=arch.cpu)} is missing "
                      "(apt-get install qemu-user-static)")


def registration_for(arch: Arch) -> Handler:
    """pybuild's handler for `arch`: the interpreter under READ_ONLY_DIR by
    its own name (qemu reads -binfmt-P off the argv[0] the kernel passes)."""
    interpreter, flags = qemu_interpreter(arch)
    return Handler(f"qemu-{arch.cpu}", True, posixpath.join(READ_ONLY_DIR, posixpath.basename(interpreter)), flags,
                   0, arch.magic(), arch.mask())


def host_interpreter(handler: Handler) -> str:
    """The host's file a handler runs: for pybuild's, the qemu file of that
    name the read-only mount shows; for another's, its interpreter path."""
    if not handler.read_only:
        return handler.interpreter
    name = posixpath.basename(handler.interpreter)
    for template in (_QEMU_BINFMT_P, _QEMU_STATIC):
        path = posixpath.join(posixpath.dirname(template), name)
        if os.path.exists(path):
            return path
    raise BinfmtError(f"no qemu interpreter {name} on this host for {handler.name} "
                      "(apt-get install qemu-user-static)")


def register(handler: Handler, source: str | None = None) -> None:
    """Register `handler`: pybuild's (interpreter under READ_ONLY_DIR)
    through the read-only mount of `source` (default: the qemu file of
    that name), any other as its line says."""
    line = handler.registration()
    if handler.read_only:
        _in_read_only_namespace(line, source or host_interpreter(handler), handler.interpreter)
    else:
        _write_register(line, handler.name)
    if not handler.enabled:
        set_enabled(handler.name, False)


def _write_register(line: str, name: str) -> None:
    try:
        with open(BINFMT_MISC / "register", "w") as register_file:
            register_file.write(line)
    except OSError as exc:
        raise BinfmtError(f"cannot register {name} with binfmt_misc: {exc.strerror}") from None


def _in_read_only_namespace(line: str, source: str, target: str) -> None:
    """Write `line` from a child whose private mount namespace binds
    `source` read-only at `target`; the child's error, if any, raised here."""
    name = line.split(":")[1]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child's coverage is not collected)
        os.close(read_end)
        status = 0
        try:
            _bind_read_only(source, target)
            _write_register(line, name)
        except BaseException as exc:  # told to the parent: the fork must never return
            os.write(write_end, str(exc).encode(errors="replace")[:4096])
            status = 1
        os._exit(status)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as said:
            message = said.read().decode(errors="replace")
    finally:
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise BinfmtError(message or f"cannot register {name} with binfmt_misc: its registering process failed")


def _bind_read_only(source: str, target: str) -> None:
    """In a new mount namespace: a tmpfs over the parent of READ_ONLY_DIR
    (nothing is made on the host), `source` bound at `target`, then made
    read-only, nosuid and nodev (a bind takes the flags only on remount)."""
    try:
        unshare(CLONE_NEWNS)
        mount("none", "/", None, MS_REC | MS_PRIVATE)
        mount("pybuild-binfmt", posixpath.dirname(READ_ONLY_DIR), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "mode=0755,size=64k")
        os.mkdir(READ_ONLY_DIR, 0o755)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o755))
        mount(os.path.realpath(source), target, None, MS_BIND)
        mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    except OSError as exc:
        raise BinfmtError(f"cannot bind {source} read-only at {target}: {exc.strerror}") from None
    if not os.statvfs(target).f_flag & os.ST_RDONLY:
        raise BinfmtError(f"cannot bind {source} read-only at {target}: the mount stayed writable")


def _entry(name: str, flags: int) -> int | None:
    """An fd on binfmt_misc's file of handler `name` (never created: a
    handler gone meanwhile is None)."""
    if name in _CONTROL_FILES or "/" in name:
        raise BinfmtError(f"{name!r} is not a binfmt_misc handler")
    try:
        return os.open(BINFMT_MISC / name, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _write_entry(name: str, data: bytes, what: str) -> None:
    try:
        fd = _entry(name, os.O_WRONLY)
        if fd is None:
            return
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except FileNotFoundError:
        return  # removed between open and write
    except OSError as exc:
        raise BinfmtError(f"cannot {what} binfmt_misc handler {name}: {exc.strerror}") from None


def unregister(name: str) -> None:
    """Remove handler `name`; one already gone is no error."""
    _write_entry(name, b"-1", "remove")


def set_enabled(name: str, enabled: bool) -> None:
    _write_entry(name, b"1" if enabled else b"0", "enable" if enabled else "disable")


# --- pybuild binfmt --install / --uninstall -----------------------------------


@dataclass(frozen=True)
class Install:
    """What `--install` will do for one architecture, checked before
    anything is changed (plan_install)."""

    arch: Arch
    wanted: Handler | None = None  # None: native, nothing to do

    def apply(self) -> str:
        """Make the change; what was done, in words. The handler of that
        name is read again: an --uninstall of the same command may have
        removed it since the plan."""
        arch, wanted = self.arch, self.wanted
        if wanted is None:
            return f"{arch.name}: native on this host, no emulator needed"
        current = _named(wanted.name)
        if current is not None and _same(current, wanted):
            return f"{arch.name}: {wanted.name} already registered read-only ({_shown(wanted)})"
        if current is not None:
            unregister(current.name)
        register(wanted)
        verb = "registered" if current is None else f"replaced {current.interpreter} with"
        return f"{arch.name}: {wanted.name} {verb} a read-only registration ({_shown(wanted)})"


def plan_install(arch: Arch, force: bool = False) -> Install:
    """Check that pybuild's handler for `arch` can be registered: qemu is
    installed, and a handler of the same name is pybuild's or `force`
    allows replacing another tool's. Raises BinfmtError (one line)."""
    if arch in native_arches():
        return Install(arch)
    wanted = registration_for(arch)
    current = _named(wanted.name)
    if current is not None and not current.read_only and not force:
        raise BinfmtError(f"{arch.name}: binfmt_misc handler {current.name} is another tool's (interpreter "
                          f"{current.interpreter}, flags {current.flags or '-'}), left as it is; "
                          f"`pybuild binfmt --install {arch.name} --force` replaces it with pybuild's read-only one")
    return Install(arch, wanted)


def _named(name: str) -> Handler | None:
    return next((handler for handler in handlers() if handler.name == name), None)


def _same(current: Handler, wanted: Handler) -> bool:
    return (current.enabled and current.interpreter == wanted.interpreter and set(current.flags) == set(wanted.flags)
            and current.offset == wanted.offset and current.magic == wanted.magic and current.mask == wanted.mask)


def _shown(handler: Handler) -> str:
    return f"{host_interpreter(handler)} at {handler.interpreter}, flags {handler.flags}"


def uninstall(arch: Arch) -> str:
    """Remove pybuild's own handler for `arch`, and no other tool's; what
    was done, in words."""
    present = [handler for handler in handlers() if handler.arch == arch]
    removed = [handler.name for handler in present if handler.read_only]
    for name in removed:
        unregister(name)
    others = [handler.name for handler in present if not handler.read_only]
    done = f"removed {', '.join(removed)}" if removed else "pybuild's handler is not registered"
    left = f"; left another tool's: {', '.join(others)}" if others else ""
    return f"{arch.name}: {done}{left}"
