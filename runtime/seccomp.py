"""The seccomp profile of a RUN step under `--isolation oci`.

An allow-list equivalent to docker's default profile (moby
profiles/seccomp/default.json, as of docker 25, which removed io_uring; see
docs/architecture.md), written out here for the capabilities a step gets
(docker's default set, so no CAP_SYS_ADMIN) and the native architecture:

- every syscall not listed fails with EPERM (`defaultAction` ERRNO, 1);
- the plain list below is allowed outright;
- `clone` is allowed only without namespace flags (an argument mask), and
  `clone3`, whose flags live in memory a filter cannot read, fails with
  ENOSYS so that libc falls back to `clone`;
- `personality` is allowed for the few personas docker allows, `socket`
  for every family but AF_VSOCK;
- syscalls docker ties to a capability are allowed only when the step has
  it (with the default set: `chroot` alone).

Names libseccomp does not know on this host are skipped by runc and crun,
so the list may name syscalls newer than the installed library.
"""

from __future__ import annotations

import platform

# The architectures a filter covers, for each native machine: 32-bit and
# x32 entry points must be filtered too, or they would bypass the list.
ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}

EPERM = 1
ENOSYS = 38

# Namespace flags of clone(2): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
# NEWUSER, NEWPID, NEWNET. A clone with none of them is a fork or a thread.
CLONE_NAMESPACE_FLAGS = 0x7E020000
AF_VSOCK = 40
# PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff,
# which only queries the current persona.
ALLOWED_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# What every step may call, grouped by what it is for. The kernel's own
# permission checks still apply (setuid needs CAP_SETUID, and so on).
ALLOWED = {
    "files and directories": (
        "access", "chdir", "chmod", "chown", "chown32", "creat", "faccessat", "faccessat2", "fchdir",
        "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "futimesat", "getcwd", "getdents",
        "getdents64", "lchown", "lchown32", "link", "linkat", "lstat", "lstat64", "mkdir", "mkdirat",
        "mknod", "mknodat", "name_to_handle_at", "newfstatat", "open", "openat", "openat2", "readlink",
        "readlinkat", "rename", "renameat", "renameat2", "rmdir", "stat", "stat64", "statfs", "statfs64",
        "statx", "symlink", "symlinkat", "truncate", "truncate64", "umask", "unlink", "unlinkat", "utime",
        "utimensat", "utimensat_time64", "utimes", "fstatat64",
    ),
    "extended attributes": (
        "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "lgetxattr", "listxattr",
        "llistxattr", "lremovexattr", "lsetxattr", "removexattr", "setxattr",
    ),
    "file descriptors and I/O": (
        "close", "close_range", "copy_file_range", "dup", "dup2", "dup3", "fadvise64", "fadvise64_64",
        "fallocate", "fcntl", "fcntl64", "fdatasync", "flock", "fstat", "fstat64", "fstatfs", "fstatfs64",
        "fsync", "ftruncate", "ftruncate64", "ioctl", "_llseek", "lseek", "pipe", "pipe2", "pread64",
        "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readv", "sendfile",
        "sendfile64", "splice", "sync", "sync_file_range", "syncfs", "tee", "vmsplice", "write", "writev",
        "memfd_create", "memfd_secret",
    ),
    # Asynchronous I/O of the old kind; io_uring is left out, as docker 25
    # left it out (moby#46762): its operations bypass the filter.
    "aio": (
        "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup",
        "io_submit",
    ),
    "waiting for events": (
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
        "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "fanotify_mark", "inotify_add_watch",
        "inotify_init", "inotify_init1", "inotify_rm_watch", "_newselect", "pause", "poll", "ppoll",
        "ppoll_time64", "pselect6", "pselect6_time64", "select", "signalfd", "signalfd4",
        "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
    ),
    "memory": (
        "brk", "madvise", "membarrier", "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2",
        "mprotect", "mremap", "msync", "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free",
        "pkey_mprotect", "remap_file_pages",
    ),
    "processes and threads": (
        "execve", "execveat", "exit", "exit_group", "fork", "vfork", "wait4", "waitid", "waitpid",
        "getpgid", "getpgrp", "getpid", "getppid", "getsid", "gettid", "setpgid", "setsid",
        "set_tid_address", "get_robust_list", "set_robust_list", "futex", "futex_time64", "futex_waitv",
        "rseq", "get_thread_area", "set_thread_area", "prctl", "capget", "capset", "seccomp",
        "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
        "pidfd_open", "pidfd_send_signal", "process_mrelease",
        # Reading other processes' memory: docker allows these on kernels
        # from 4.8, whose ptrace no longer bypasses seccomp.
        "ptrace", "process_vm_readv", "process_vm_writev",
    ),
    "signals": (
        "alarm", "kill", "restart_syscall", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
        "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo", "sigaltstack", "sigprocmask", "sigreturn", "tgkill", "tkill",
    ),
    "users and groups": (
        "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
        "getresgid", "getresgid32", "getresuid", "getresuid32", "getuid", "getuid32", "setfsgid",
        "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32",
        "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid",
        "setreuid32", "setuid", "setuid32",
    ),
    "time": (
        "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
        "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "getitimer",
        "gettimeofday", "nanosleep", "setitimer", "time", "timer_create", "timer_delete",
        "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "times",
    ),
    "scheduling and limits": (
        "getcpu", "getpriority", "getrandom", "getrlimit", "getrusage", "ioprio_get", "ioprio_set",
        "prlimit64", "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
        "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
        "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
        "sched_setscheduler", "sched_yield", "setpriority", "setrlimit", "sysinfo", "ugetrlimit", "uname",
    ),
    # `socket` itself is below, with its family checked.
    "sockets": (
        "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen",
        "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg",
        "sendto", "setsockopt", "shutdown", "socketcall", "socketpair",
    ),
    "System V and POSIX IPC": (
        "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
        "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd",
        "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt",
        "shmget",
    ),
}

# Allowed on one native architecture only.
ALLOWED_ON = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
                "set_tls"),
}

# Allowed only to a step holding the capability, as docker does; a step
# holds docker's default set, so of these only CAP_SYS_CHROOT applies.
ALLOWED_WITH_CAPABILITY = {
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_ADMIN": ("bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
                      "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
                      "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
                      "umount2", "unshare"),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
                       "ptrace"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}


def allowed_names(capabilities, machine: str | None = None) -> set[str]:
    """Every syscall the profile allows without an argument check."""
    machine = machine or platform.machine()
    names = {name for group in ALLOWED.values() for name in group}
    names.update(ALLOWED_ON.get(machine, ()))
    for capability, granted in ALLOWED_WITH_CAPABILITY.items():
        if capability in capabilities:
            names.update(granted)
    return names


def profile(capabilities, machine: str | None = None) -> dict:
    """The OCI `linux.seccomp` of a step holding `capabilities` (names such
    as "CAP_CHOWN") on `machine` (platform.machine() by default)."""
    machine = machine or platform.machine()
    names = allowed_names(capabilities, machine)
    rules = [{"names": sorted(names), "action": "SCMP_ACT_ALLOW"}]
    rules.append({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                  "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]})
    for persona in ALLOWED_PERSONAS:
        rules.append({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]})
    if "CAP_SYS_ADMIN" not in capabilities:
        rules.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                                "op": "SCMP_CMP_MASKED_EQ"}]})
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": EPERM, "syscalls": rules}
    if machine in ARCHITECTURES:
        seccomp["architectures"] = ARCHITECTURES[machine]
    return seccomp
