"""The seccomp allow-list of `--isolation oci` (runtime/seccomp.py).

The profile is checked as data against docker's rules, then enforced for
real: a RUN under runc executes tiny static probes, each one syscall with
fixed arguments, exiting with the errno it got (0 for success). The probes
are x86_64 machine code written here, so no compiler is needed. Without
the filter each refused probe gets something else from the kernel (a
namespace, a persona, EFAULT, EINVAL), which is how they fail on a
deny-list that forgets them.
"""

from __future__ import annotations

import platform
import struct

import pytest

from e2e.helpers import build_image
from runtime.oci import DEFAULT_CAP_NAMES
from runtime.seccomp import CLONE_NAMESPACE_FLAGS, allowed_names, profile

EPERM, EFAULT, ENOSYS = 1, 14, 38

REFUSED = {
    # namespaces and mounts: what a container escape starts with
    "mount", "umount2", "unshare", "setns", "pivot_root", "fsopen", "fsmount", "fspick", "fsconfig",
    "move_mount", "open_tree", "mount_setattr",
    # kernel surfaces docker keeps from containers
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "userfaultfd", "lookup_dcookie", "quotactl", "syslog",
    # the machine itself
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
    "swapoff", "acct", "settimeofday", "clock_settime", "sethostname", "setdomainname", "iopl", "ioperm",
    "vhangup", "mbind", "set_mempolicy", "get_mempolicy", "move_pages", "open_by_handle_at", "kcmp",
    "pidfd_getfd", "process_madvise", "nfsservctl", "_sysctl", "uselib", "ustat", "sysfs",
    # only through an argument check below
    "clone", "clone3", "personality", "socket",
}
COMMON = {"read", "write", "openat", "close", "execve", "fork", "vfork", "wait4", "mmap", "futex", "getpid",
          "rt_sigaction", "statx", "getdents64", "chown", "setuid", "setgroups", "connect", "pipe2", "chroot",
          "ptrace", "prctl", "arch_prctl"}


def _rules(seccomp: dict, name: str) -> list[dict]:
    return [rule for rule in seccomp["syscalls"] if name in rule["names"]]


def test_the_profile_is_an_allow_list_with_dockers_argument_rules():
    seccomp = profile(DEFAULT_CAP_NAMES, "x86_64")
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO" and seccomp["defaultErrnoRet"] == EPERM
    assert seccomp["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = allowed_names(DEFAULT_CAP_NAMES, "x86_64")
    assert not REFUSED & allowed
    assert COMMON <= allowed
    assert not any("io_uring" in name for rule in seccomp["syscalls"] for name in rule["names"])
    [clone] = _rules(seccomp, "clone")
    assert clone["args"] == [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}]
    [clone3] = _rules(seccomp, "clone3")
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == ENOSYS
    assert sorted(rule["args"][0]["value"] for rule in _rules(seccomp, "personality")) == \
        [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    [socket] = _rules(seccomp, "socket")
    assert socket["args"] == [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]


def test_capability_groups_follow_the_steps_capabilities():
    without = allowed_names([c for c in DEFAULT_CAP_NAMES if c != "CAP_SYS_CHROOT"], "x86_64")
    assert "chroot" not in without
    admin = profile([*DEFAULT_CAP_NAMES, "CAP_SYS_ADMIN"], "x86_64")
    assert {"mount", "unshare", "clone", "clone3"} <= set(admin["syscalls"][0]["names"])
    assert [rule for rule in admin["syscalls"] if rule.get("args") and "clone" in rule["names"]] == []
    assert "arm_fadvise64_64" in allowed_names(DEFAULT_CAP_NAMES, "aarch64")
    assert "arch_prctl" not in allowed_names(DEFAULT_CAP_NAMES, "aarch64")


# -- enforced by runc ---------------------------------------------------------------------


def _probe(number: int, *args: int) -> bytes:
    """A static x86_64 ELF that makes one syscall and exits with its errno
    (0 when it succeeded)."""
    code = b"".join([
        b"\x48\xb8" + struct.pack("<Q", number),  # mov rax, number
        *(prefix + struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)
          for prefix, value in zip((b"\x48\xbf", b"\x48\xbe", b"\x48\xba", b"\x49\xba", b"\x49\xb8", b"\x49\xb9"),
                                   (*args, 0, 0, 0, 0, 0, 0))),  # rdi rsi rdx r10 r8 r9
        b"\x0f\x05",  # syscall
        b"\x48\x85\xc0\x78\x04",  # test rax, rax; js failed
        b"\x31\xff\xeb\x06",  # xor edi, edi; jmp exit
        b"\x48\xf7\xd8\x48\x89\xc7",  # failed: neg rax; mov rdi, rax
        b"\xb8\x3c\x00\x00\x00\x0f\x05",  # exit: mov eax, 60 (exit); syscall
    ])
    base, header_size = 0x400000, 64 + 56
    size = header_size + len(code)
    elf = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    elf += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, base + header_size, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    elf += struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return elf + code


SIGCHLD = 17
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
# name: (syscall number, arguments, errno under the profile)
PROBES = {
    "getpid": (39, (), 0),
    "fork-by-clone": (56, (SIGCHLD,), 0),
    "clone-newuser": (56, (CLONE_NEWUSER | SIGCHLD,), EPERM),  # unfiltered: a new user namespace
    "clone-newns": (56, (CLONE_NEWNS | SIGCHLD,), EPERM),
    "clone3": (435, (0, 0), ENOSYS),  # unfiltered: EINVAL
    "unshare-newuser": (272, (CLONE_NEWUSER,), EPERM),  # unfiltered: succeeds
    "personality-query": (135, (0xFFFFFFFF,), 0),
    "personality-no-aslr": (135, (0x0040000,), EPERM),  # unfiltered: succeeds
    "io-uring-setup": (425, (1, 0), EPERM),  # unfiltered: EFAULT
    "perf-event-open": (298, (0, 0, -1, -1, 0), EPERM),  # unfiltered: EFAULT
    "keyctl-session": (250, (0, -3, 0), EPERM),  # unfiltered: the session keyring's id
    "add-key": (248, (0, 0, 0, 0, 0), EPERM),
    "bpf": (321, (0, 0, 0), EPERM),
    "socket-unix": (41, (1, 1, 0), 0),
    "socket-vsock": (41, (40, 1, 0), EPERM),  # unfiltered: EAFNOSUPPORT or a socket
    "mount": (165, (0, 0, 0, 0, 0), EPERM),
    "setns": (308, (-1, 0), EPERM),  # unfiltered: EBADF
    "kexec-load": (246, (0, 0, 0, 0), EPERM),
    "acct": (163, (0,), EPERM),
}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the probes are x86_64 machine code")
def test_runc_enforces_the_profile(tmp_path, busybox_image):
    files = {f"probes/{name}": _probe(number, *args) for name, (number, args, _) in PROBES.items()}
    dockerfile = f"""FROM {busybox_image.ref}
COPY --chmod=755 probes/ /probes/
RUN for p in /probes/*; do "$p"; echo "${{p#/probes/}}=$?"; done > /results.txt
RUN ls / > /dev/null && cp /results.txt /copy.txt && sort /copy.txt > /dev/null && chroot / true \\
    && sh -c 'sleep 0 & wait' && echo ordinary commands work > /ordinary.txt
RUN (unshare -U true && echo allowed || echo refused) > /unshare.txt; \\
    (mount -t tmpfs none /mnt && echo allowed || echo refused) > /mount.txt
"""
    built = build_image(tmp_path, tmp_path / "root", dockerfile, files=files, isolation="oci")
    results = dict(line.split("=") for line in built.read_text("/results.txt").split())
    assert {name: int(code) for name, code in results.items()} == \
        {name: expected for name, (_, _, expected) in PROBES.items()}
    assert built.read_text("/ordinary.txt") == "ordinary commands work\n"
    assert built.read_text("/unshare.txt") == "refused\n"
    assert built.read_text("/mount.txt") == "refused\n"
