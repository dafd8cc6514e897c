"""binfmt_misc and qemu-user-static: which foreign executables this host can
run, registering Debian's qemu interpreters, and the check that a step's
image is one this host can run before its process is started.

A binfmt_misc handler is registered by writing one line to
/proc/sys/fs/binfmt_misc/register (the kernel's admin-guide/binfmt-misc):
`:name:type:offset:magic:mask:interpreter:flags`. The handlers registered
here match an ELF header by its class (32/64 bit), byte order, version,
type (executable or shared object) and machine, as qemu's own
registrations do, and carry the F flag: the kernel opens the interpreter
when it is registered, so that it works inside a container's rootfs,
where /usr/bin/qemu-*-static does not exist.

Since Linux 6.7 binfmt_misc has an instance per user namespace; one that
mounted none (a rootless build's) uses its ancestor's handlers, so the
handlers root registers serve rootless builds too.

Registering is runtime/binfmt_register.py's (root only). pybuild registers
its interpreters from a read-only mount at READ_ONLY_DIR (docs/isolation.md,
"Emulated steps and the host's qemu"): an emulated process's /proc/PID/exe
is the interpreter file the kernel opened, and a step running as root could
otherwise chmod it on the host. A handler whose interpreter is elsewhere is
another tool's, and a step run through it gets a warning (emulation_warning).
"""

from __future__ import annotations

import os
import platform
import posixpath
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from runtime.confine import Tree
from runtime.errors import RuntimeFailure

BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")
# Where pybuild's registrations name their interpreter: a path that exists
# only in the mount namespace that registered it (runtime/binfmt_register.py),
# so a handler naming it is pybuild's read-only one.
READ_ONLY_DIR = "/run/pybuild-binfmt"
_ELF_HEADER = 20  # up to and including e_machine
_EXEC_TYPE = 2  # ET_EXEC; the mask lets ET_DYN (3) match too


class BinfmtError(RuntimeFailure):
    """binfmt_misc cannot be read, mounted or written, or an architecture is unknown."""


@dataclass(frozen=True)
class Arch:
    """An architecture as OCI names it, and as an ELF header and qemu do."""

    name: str        # OCI: "arm64"
    cpu: str         # qemu's and uname's: "aarch64"
    elf_class: int   # 1: 32-bit, 2: 64-bit
    big_endian: bool
    machine: int     # e_machine

    @property
    def platform(self) -> str:
        return f"linux/{self.name}"

    def magic(self) -> bytes:
        """The first 20 bytes of this architecture's ELF executables, as
        far as they are fixed: ident (magic, class, data, version 1, then
        zeros where OS ABI and padding are), e_type and e_machine."""
        order = "big" if self.big_endian else "little"
        ident = b"\x7fELF" + bytes([self.elf_class, 2 if self.big_endian else 1, 1]) + bytes(9)
        return ident + _EXEC_TYPE.to_bytes(2, order) + self.machine.to_bytes(2, order)

    def mask(self) -> bytes:
        """Which bits of `magic` count: not the OS ABI byte (Linux and
        System V binaries both run), not the lowest bit of e_type."""
        order = "big" if self.big_endian else "little"
        ident = b"\xff" * 7 + b"\x00" + b"\xff" * 8
        return ident + (0xFFFE).to_bytes(2, order) + b"\xff\xff"


ARCHES = {arch.name: arch for arch in (
    Arch("amd64", "x86_64", 2, False, 0x3E),
    Arch("386", "i386", 1, False, 0x03),
    Arch("arm64", "aarch64", 2, False, 0xB7),
    Arch("arm", "arm", 1, False, 0x28),
    Arch("riscv64", "riscv64", 2, False, 0xF3),
    Arch("ppc64le", "ppc64le", 2, False, 0x15),
    Arch("s390x", "s390x", 2, True, 0x16),
)}
# What the kernel runs without help, by the host's architecture.
_NATIVE = {"amd64": ("amd64", "386"), "arm64": ("arm64", "arm")}


def find_arch(name: str) -> Arch:
    """An architecture by its OCI name, `linux/NAME[/variant]`, or qemu's name."""
    text = name.strip().lower()
    if text.startswith("linux/"):
        text = text.split("/")[1]
    for arch in ARCHES.values():
        if text in (arch.name, arch.cpu):
            return arch
    raise BinfmtError(f"unknown architecture {name!r} (known: {', '.join(ARCHES)})")


def host_arch() -> Arch:
    machine = platform.machine()
    return find_arch({"armv7l": "arm", "armv6l": "arm", "i686": "386"}.get(machine, machine))


def native_arches() -> tuple[Arch, ...]:
    host = host_arch()
    return tuple(ARCHES[name] for name in _NATIVE.get(host.name, (host.name,)))


def arch_of_header(header: bytes) -> Arch | None:
    """The architecture of an ELF header (None: not ELF, or a machine not in ARCHES)."""
    for arch in ARCHES.values():
        if _masked_match(header, 0, arch.magic(), arch.mask()):
            return arch
    return None


def _masked_match(data: bytes, offset: int, magic: bytes, mask: bytes) -> bool:
    """binfmt_misc's test: each byte of `data` at `offset` equals `magic`'s
    in the bits `mask` sets."""
    window = data[offset:offset + len(magic)]
    if len(window) < len(magic):
        return False
    return all((got ^ want) & bits == 0 for got, want, bits in zip(window, magic, mask))


# --- the registered handlers ------------------------------------------------


@dataclass(frozen=True)
class Handler:
    """One entry of binfmt_misc, as its file there shows it."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int
    magic: bytes
    mask: bytes
    extension: str = ""  # a handler by file name extension has no magic

    def matches(self, header: bytes) -> bool:
        return not self.extension and _masked_match(header, self.offset, self.magic,
                                                    self.mask or b"\xff" * len(self.magic))

    @property
    def arch(self) -> Arch | None:
        """The architecture whose executables this handler runs."""
        return next((arch for arch in ARCHES.values() if self.matches(arch.magic())), None)

    @property
    def read_only(self) -> bool:
        """pybuild's registration: the kernel holds its interpreter open
        through a read-only mount (F flag), so an emulated process's
        /proc/PID/exe cannot change the host's file."""
        return "F" in self.flags and posixpath.dirname(self.interpreter) == READ_ONLY_DIR

    def registration(self) -> str:
        """The register line that makes this handler again (flags as shown)."""
        if self.extension:
            return f":{self.name}:E::{_escape(self.extension.encode())}::{self.interpreter}:{self.flags}"
        return (f":{self.name}:M:{self.offset}:{_escape(self.magic)}:{_escape(self.mask)}:"
                f"{self.interpreter}:{self.flags}")


def _escape(data: bytes) -> str:
    """Every byte as \\xNN: a ':' or a NUL in a magic then needs no thought."""
    return "".join(f"\\x{byte:02x}" for byte in data)


def parse_handler(name: str, text: str) -> Handler:
    """An entry's file: `enabled`, `interpreter PATH`, `flags: OCF`, then
    `offset N`, `magic HEX` and `mask HEX`, or `extension .EXT`."""
    enabled, fields = False, {}
    for line in text.splitlines():
        if line in ("enabled", "disabled"):
            enabled = line == "enabled"
            continue
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    return Handler(name, enabled, fields.get("interpreter", ""), fields.get("flags", ""),
                   int(fields.get("offset", "0") or 0), bytes.fromhex(fields.get("magic", "")),
                   bytes.fromhex(fields.get("mask", "")), fields.get("extension", ""))


def mounted() -> bool:
    return (BINFMT_MISC / "register").exists()


def globally_enabled() -> bool:
    try:
        return (BINFMT_MISC / "status").read_text().strip() == "enabled"
    except OSError:
        return False


def handlers() -> list[Handler]:
    """The registered handlers, by name ([] when binfmt_misc is not mounted here)."""
    found = []
    try:
        names = sorted(os.listdir(BINFMT_MISC))
    except OSError:
        return []
    for name in names:
        if name in ("register", "status"):
            continue
        try:
            found.append(parse_handler(name, (BINFMT_MISC / name).read_text()))
        except (OSError, ValueError):
            continue  # removed meanwhile, or a format this reader does not know
    return found


def emulated_arches() -> list[Arch]:
    """The foreign architectures an enabled handler runs (F flag or not)."""
    if not globally_enabled():
        return []
    native = native_arches()
    seen = {handler.arch for handler in handlers() if handler.enabled}
    return [arch for arch in ARCHES.values() if arch in seen and arch not in native]


def buildable_platforms() -> list[str]:
    """The platforms whose RUN steps this host can run: native, then emulated."""
    return [arch.platform for arch in (*native_arches(), *emulated_arches())]


# --- the check before a step ------------------------------------------------


def read_header(rootfs: str | os.PathLike, path: str = "/bin/sh") -> bytes | None:
    """The first bytes of `path` in the rootfs, resolved inside it; None
    if it is missing, not a regular file or unreadable."""
    try:
        with Tree(rootfs) as tree:
            found = tree.open(path, os.O_PATH)
            try:
                # Opened for reading only once known to be a regular file:
                # opening a device node or a FIFO the image planted may act.
                if not stat.S_ISREG(os.fstat(found).st_mode):
                    return None
                fd = os.open(f"/proc/self/fd/{found}", os.O_RDONLY | os.O_CLOEXEC)
            finally:
                os.close(found)
    except OSError:
        return None
    try:
        return os.pread(fd, _ELF_HEADER, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def unrunnable_reason(rootfs: str | os.PathLike) -> str | None:
    """Why this host cannot run the image in `rootfs` (judged by its
    /bin/sh), or None: native, emulated, or not an ELF we know (the step
    is left to say what it says)."""
    header = read_header(rootfs)
    arch = arch_of_header(header) if header else None
    if arch is None or arch in native_arches():
        return None
    usable = [handler for handler in handlers() if handler.enabled and handler.matches(header)]
    if usable and globally_enabled():
        if any("F" in handler.flags or _inside(rootfs, handler.interpreter) for handler in usable):
            return None
        return (f"{_what(arch)}, and the binfmt_misc handler {usable[0].name} for it was registered without "
                f"the F flag: its interpreter {usable[0].interpreter} is not in the image. "
                f"Run `{install_command(arch)}` (as root) to register it with F")
    if not mounted():
        where = f"binfmt_misc is not mounted at {BINFMT_MISC}"
    elif not globally_enabled():
        where = "binfmt_misc is disabled"
    else:
        where = f"no binfmt_misc handler for {arch.cpu} is registered"
    return (f"{_what(arch)}, but {where}. "
            f"Run `{install_command(arch)}` (as root; qemu-user-static must be installed)")


def install_command(arch: Arch) -> str:
    """The command that registers pybuild's handler for `arch`: with
    --force where another tool's handler holds the name pybuild's takes."""
    taken = any(handler.name == f"qemu-{arch.cpu}" and not handler.read_only for handler in handlers())
    return f"pybuild binfmt --install {arch.name}{' --force' if taken else ''}"


_warned: set[str] = set()
_warned_lock = threading.Lock()


def emulation_warning(rootfs: str | os.PathLike) -> str | None:
    """One line, the first time in this process (a pybuild command runs one
    build) that an image is emulated through a handler that is not pybuild's
    read-only registration: a step can change that handler's interpreter on
    the host through /proc/PID/exe. None otherwise (native, read-only, or no
    handler at all, which unrunnable_reason reports)."""
    header = read_header(rootfs)
    arch = arch_of_header(header) if header else None
    if arch is None or arch in native_arches() or not globally_enabled():
        return None
    # The kernel takes the newest matching handler, an order its directory
    # does not show: any writable one may be the one used.
    exposed = [handler for handler in handlers()
               if handler.enabled and handler.matches(header) and not handler.read_only]
    with _warned_lock:
        exposed = [handler for handler in exposed if handler.name not in _warned]
        _warned.update(handler.name for handler in exposed)
    if not exposed:
        return None
    handler = exposed[0]
    if handler.name == f"qemu-{arch.cpu}":
        remedy = f"`{install_command(arch)}` (as root) replaces it with pybuild's read-only one"
    else:
        remedy = f"remove it (as root: echo -1 > {BINFMT_MISC / handler.name}) and run `{install_command(arch)}`"
    return (f"{arch.platform} steps run through binfmt_misc handler {handler.name}, whose interpreter "
            f"{handler.interpreter} is not registered read-only: a RUN step running as root can change that file "
            f"on the host (make it setuid root) through /proc/PID/exe; {remedy}")


def _what(arch: Arch) -> str:
    return (f"the image is for {arch.platform} (its /bin/sh is an {arch.cpu} executable) and this "
            f"{host_arch().platform} host runs it only through an emulator")


def _inside(rootfs: str | os.PathLike, interpreter: str) -> bool:
    try:
        with Tree(rootfs) as tree:
            return tree.lstat(interpreter) is not None
    except OSError:
        return False
