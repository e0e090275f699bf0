"""Kernel confinement: code that gets past every Python-level guard still cannot change a file outside its own
folder, nor reach a socket or make the system calls the seccomp filter denies, whether the harness runs as root
or as an ordinary user (docs/sandbox.md)."""

from __future__ import annotations

import ctypes
import os
import pickle
import re
import select
import shutil
import socket
import stat
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from codenas.eval import _worker, execution
from codenas.eval.execution import ExecResult, is_confined, isolation_level, run_programs
from codenas.io import CodenasError

PROMPT = "def add(a, b):\n"
TESTS = "\ndef check(candidate):\n    assert candidate(2, 3) == 5\n\ncheck(add)\n"
ORDINARY_USER = 54321  # a uid no account uses: the "ordinary user" the harness runs as
CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x00020000, 0x4000, 0x40000
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429
AT_FDCWD, AT_RECURSIVE, OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH = -100, 0x8000, 1, 4

# Each route recovers a real write primitive past the Python guards, then aims it at the folder outside.
# The sample passes only if every route was refused by the kernel (an OSError with one of these errnos).
ATTACKS = '''
    import builtins, errno, io, os, sys, importlib.util
    outside = {outside!r}
    victim = os.path.join(outside, "precious.txt")
    new = lambda name: os.path.join(outside, name)

    def cell(fn, name):
        return [c.cell_contents for c in fn.__closure__ if getattr(c.cell_contents, "__name__", "") == name][0]

    def real_posix():
        del sys.modules["posix"]
        import posix
        return posix

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    def c_extension():
        load("_ctypes", os.path.join(outside, "ext", {ctypes_so!r}))
        ct = load("ctypes", os.path.join(outside, "ext", "ctypes", "__init__.py"))
        libc = ct.CDLL(None, use_errno=True)
        for call in (lambda: libc.open(victim.encode(), os.O_WRONLY | os.O_TRUNC),
                     lambda: libc.open(new("c.txt").encode(), os.O_WRONLY | os.O_CREAT, 0o644),
                     lambda: libc.mkdir(new("cdir").encode(), 0o755)):
            if call() < 0:
                err = ct.get_errno()
                raise OSError(err, os.strerror(err))

    def proc_fd():
        fd = os.open(victim, os.O_RDONLY)
        cell(open, "open")("/proc/self/fd/%d" % fd, "w").write("gone")

    def sqlite():
        import sqlite3
        sqlite3.connect(new("db.sqlite")).execute("create table t (x)")

    routes = {{
        "closure open": lambda: cell(open, "open")(victim, "w").write("gone"),
        "closure open new": lambda: cell(open, "open")(new("a.txt"), "w").write("new"),
        "FileIO": lambda: io.FileIO(victim, "w").write(b"gone"),
        "FileIO new": lambda: io.FileIO(new("b.txt"), "w").write(b"new"),
        "sqlite3": sqlite,
        "closure os.open": lambda: cell(os.open, "open")(new("c.txt"), os.O_WRONLY | os.O_CREAT),
        "os.mkdir": lambda: os.mkdir(new("d")),
        "os.makedirs": lambda: os.makedirs(new("e/f")),
        "/proc/self/fd": proc_fd,
        "C extension": c_extension,
        "rename": lambda: real_posix().rename(victim, victim + ".x"),
        "link": lambda: real_posix().link(victim, new("hard")),
        "symlink": lambda: real_posix().symlink(victim, new("soft")),
        "unlink": lambda: real_posix().unlink(victim),
        "truncate": lambda: real_posix().truncate(victim, 0),
        "utime": lambda: real_posix().utime(victim, (0, 0)),
        "utime now": lambda: real_posix().utime(victim),
        "chmod": lambda: real_posix().chmod(victim, 0o600),
    }}
    kernel = (errno.EACCES, errno.EPERM, errno.EROFS, errno.EXDEV)
    escaped = []
    for name, route in routes.items():
        try:
            route()
            escaped.append(name + ": succeeded")
        except OSError as e:
            if e.errno not in kernel:
                escaped.append(name + ": " + repr(e)[:60])
        except Exception as e:
            if not (name == "sqlite3" and type(e).__name__ == "OperationalError"):
                escaped.append(name + ": " + repr(e)[:60])
    assert not escaped, "; ".join(escaped)
    return a + b
'''

ORDINARY = '''
    import os, sqlite3, tempfile, pathlib
    with open("out.txt", "w") as f:
        f.write("x" * 1000)
    os.makedirs("sub/dir")
    pathlib.Path("sub/dir/y.txt").write_text("y")
    os.open("raw.bin", os.O_CREAT | os.O_WRONLY)
    sqlite3.connect("db.sqlite").execute("create table t (x)")
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write("z")
    with tempfile.TemporaryFile() as t:
        t.write(b"t")
    fd, name = tempfile.mkstemp()
    os.write(fd, b"m")
    pathlib.Path(tempfile.mkdtemp(), "w.txt").write_text("w")
    with open(os.devnull, "w") as null:
        null.write("discarded")
    assert open("out.txt").read() == "x" * 1000 and open(f.name).read() == "z"
    return a + b
'''


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` with its type, mode, owner, size, mtime and content."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(path.relative_to(folder))] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_size,
                                              st.st_mtime_ns, content)
    return out


def _outside_folder(owner: int) -> Path:
    """A folder outside every sample's, in /tmp (reachable without privileges), owned by ``owner``: a victim
    file, and a copy of ctypes (the C extension and its Python package) that samples load by path."""
    folder = Path(tempfile.mkdtemp(prefix="codenas-outside-", dir="/tmp"))
    (folder / "precious.txt").write_text("keep me")
    ext = folder / "ext"
    ext.mkdir()
    shutil.copy(_ctypes_so(), ext)
    shutil.copytree(Path(ctypes.__file__).parent, ext / "ctypes", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, owner, owner)
        # as root, the victim is world-writable: only write confinement, not the uid, can protect it
        os.chmod(path, 0o777 if path.is_dir() else 0o666 if owner == 0 else 0o644)
    return folder


def _ctypes_so() -> str:
    import _ctypes

    return _ctypes.__file__


def _as_ordinary_user(fn: Callable[[], object]) -> object:
    """``fn()`` in a forked child that runs as ``ORDINARY_USER``, without any privilege. So that this user can
    start this interpreter and import codenas wherever they are installed (e.g. under /root), each folder on
    their way that others may not enter is first covered, in a mount namespace of the child's own, by an empty
    folder that they may enter, holding the one needed subfolder bound back in. Nothing else changes."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            _reach(sys.base_prefix, sys.prefix, str(Path(execution.__file__).parents[2]))
            os.setgroups([])
            os.setgid(ORDINARY_USER)
            os.setuid(ORDINARY_USER)
            isolation_level.cache_clear()
            try:
                result = fn()
            except BaseException as e:  # handed back to the test, raised there
                result = e
            with os.fdopen(write_fd, "wb") as f:
                pickle.dump(result, f)
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result = pickle.loads(data)
    if isinstance(result, BaseException):
        raise result
    return result


def _reach(*paths: str) -> None:
    """In a new private mount namespace, make every folder on the way to ``paths`` enterable by everyone."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.unshare(CLONE_NEWNS) == 0 and libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0
    for path in paths:
        for folder in reversed(Path(path).resolve().parents):
            if folder == Path("/") or folder.stat().st_mode & 0o001:
                continue
            inner = next(p for p in [Path(path).resolve(), *Path(path).resolve().parents] if p.parent == folder)
            tree = libc.syscall(SYS_OPEN_TREE, AT_FDCWD, bytes(inner), OPEN_TREE_CLONE | AT_RECURSIVE)
            assert tree >= 0, os.strerror(ctypes.get_errno())
            assert libc.mount(b"tmpfs", bytes(folder), b"tmpfs", 0, b"mode=0755") == 0
            inner.mkdir()
            assert libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, bytes(inner), MOVE_MOUNT_F_EMPTY_PATH) == 0
            os.close(tree)


def _judge(body: str, as_user: bool) -> tuple[ExecResult, str]:
    def run():
        return run_programs([PROMPT + body + TESTS], workers=1)[0], isolation_level()

    return _as_ordinary_user(run) if as_user else run()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
MODES = [pytest.param(False, id="as-root", marks=needs_root), pytest.param(True, id="as-user", marks=needs_root)]


@pytest.mark.parametrize("as_user", MODES)
def test_no_route_past_the_guards_changes_anything_outside(as_user):
    folder = _outside_folder(ORDINARY_USER if as_user else 0)
    try:
        before = _snapshot(folder)
        so_name = Path(_ctypes_so()).name
        result, level = _judge(ATTACKS.format(outside=str(folder), ctypes_so=so_name), as_user)
        assert is_confined(level), level
        assert result.status == "passed", result.detail
        assert _snapshot(folder) == before
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("as_user", MODES)
def test_without_landlock_the_mount_namespace_alone_holds(as_user, monkeypatch):
    """The fallback for kernels without Landlock: a read-only mount namespace, as root and as a user."""
    folder = _outside_folder(ORDINARY_USER if as_user else 0)
    worker = folder / "ext" / "_worker.py"  # where the ordinary user can read it
    worker.write_text(Path(execution.WORKER_SCRIPT).read_text().replace(
        "def landlock_abi() -> int:\n", "def landlock_abi() -> int:\n    return 0\n", 1))
    os.chmod(worker, 0o644)
    monkeypatch.setattr(execution, "WORKER_SCRIPT", worker)
    try:
        before = _snapshot(folder)
        isolation_level.cache_clear()
        result, level = _judge(ATTACKS.format(outside=str(folder), ctypes_so=Path(_ctypes_so()).name), as_user)
        assert level.split("+")[0] == "mountns", level
        assert result.status == "passed", result.detail
        assert _snapshot(folder) == before
    finally:
        isolation_level.cache_clear()
        shutil.rmtree(folder)


@pytest.mark.parametrize("as_user", MODES)
def test_ordinary_programs_write_their_own_folder_and_tempfile(as_user):
    result, level = _judge(ORDINARY, as_user)
    assert result == ExecResult("passed", ""), level
    if as_user:
        assert "uid" not in level.split("+")
    else:
        assert level.split("+")[-1] == "uid"


def test_the_isolation_level_names_the_kernel_layers():
    level = isolation_level()
    assert level == "python-guards-only" or set(level.split("+")) <= {"landlock", "mountns", "seccomp", "netns",
                                                                      "uid"}
    if os.path.exists("/sys/kernel/security/landlock") or _landlock_abi() > 0:
        assert "landlock" in level.split("+")
    if os.uname().machine in _worker.SECCOMP_ARCHES:  # seccomp filters are in every mainstream kernel
        assert "seccomp" in level.split("+")


def _landlock_abi() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return max(libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)), 0)


def test_python_guards_only_warns_on_every_run_and_can_be_refused(monkeypatch, capsys):
    monkeypatch.setattr(execution, "isolation_level", lambda: "python-guards-only")
    program = PROMPT + "    return a + b\n" + TESTS
    for _ in range(2):
        assert run_programs([program], workers=1) == [ExecResult("passed", "")]
        assert "warning: this machine offers no kernel confinement" in capsys.readouterr().err
    with pytest.raises(CodenasError, match="refusing to run because isolation is required"):
        run_programs([program], workers=1, require_isolation=True)


@pytest.mark.parametrize("layer, definition", [("landlock", "def _landlock(workdir: str, abi: int) -> None:\n"),
                                               ("seccomp", "def _seccomp(fprog: _SockFprog) -> None:\n")])
def test_a_layer_that_fails_in_the_child_is_a_harness_fault_not_an_unconfined_run(tmp_path, monkeypatch, layer,
                                                                                  definition):
    """A child that cannot apply the layers its worker announced never runs the sample."""
    fake_worker = tmp_path / "_worker.py"
    source = Path(execution.WORKER_SCRIPT).read_text()
    assert definition in source and f'layers.append("{layer}")' in source
    fake_worker.write_text(source.replace(definition, definition + "    raise OSError(1, 'refused for the test')\n", 1)
                           .replace(f'layers.append("{layer}")', 'pass', 1)
                           .replace("    _layers = isolation_layers(network)\n",
                                    f"    _layers = isolation_layers(network) + ({layer!r},)\n", 1))
    monkeypatch.setattr(execution, "WORKER_SCRIPT", fake_worker)
    monkeypatch.setattr(execution, "RETRY_PAUSE_S", 0.01)
    with pytest.raises(CodenasError, match="could not confine the sample: .*refused for the test"):
        run_programs([PROMPT + "    return a + b\n" + TESTS], workers=1)


def test_sysconfig_paths_stay_readable_for_samples():
    """Reading is not confined: samples can import the standard library wherever it is installed."""
    program = PROMPT + f"    import os\n    assert os.listdir({sysconfig.get_paths()['stdlib']!r})\n" \
                       "    return a + b\n" + TESTS
    assert run_programs([program], workers=1) == [ExecResult("passed", "")]


def test_summary_and_table_record_the_isolation_level(tmp_path):
    from codenas.eval.scoring import score_samples, summary_table
    from codenas.records import Record

    record = Record(id="add", source="test", prompt=PROMPT, solution="    return a + b\n", tests=TESTS,
                    entry_point="add")
    summary = score_samples([{"task_id": "add", "completion": "    return a + b\n"}], [record], tmp_path)
    assert summary["isolation"] == isolation_level()
    if os.uname().machine in _worker.SECCOMP_ARCHES:
        assert "seccomp" in summary["isolation"].split("+")
    assert '"isolation": ' in (tmp_path / "summary.json").read_text()
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(summary_table(summary))
    assert isolation_level() in console.export_text()


def test_require_isolation_refuses_before_anything_runs(tmp_path, monkeypatch):
    from codenas.eval.scoring import score_samples
    from codenas.records import Record

    monkeypatch.setattr(execution, "isolation_level", lambda: "netns+uid")
    record = Record(id="add", source="test", prompt=PROMPT, solution="", tests=TESTS, entry_point="add")
    with pytest.raises(CodenasError, match="no kernel confinement"):
        score_samples([{"task_id": "add", "completion": "    return a + b\n"}], [record], tmp_path / "out",
                      require_isolation=True)
    assert not (tmp_path / "out" / "results.jsonl").exists()


# Each route reaches a socket past the Python guards and asserts that it got through to the listener: a sample
# passes only if a connection worked. The listeners are at {stream} (SOCK_STREAM) and {dgram} (SOCK_DGRAM).
SOCKET_HELPERS = """
    import socket, struct, sys
    stream, dgram = {stream!r}, {dgram!r}

    def fresh(name):
        for stale in (name, "_" + name):
            sys.modules.pop(stale, None)
        return __import__(name)

    def real_socket():  # socket.socket is the guard's; the class it stood for is still a subclass of SocketType
        return next(c for c in socket.SocketType.__subclasses__() if (c.__module__, c.__name__) == ("socket",) * 2)

    def libc_call(libc, ct, result):
        if result < 0:
            err = ct.get_errno()
            raise OSError(err, "libc: " + str(err))
        return result
"""
SOCKET_ROUTES = {
    "socket.socket stream": "s = real_socket()(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                            "    s.connect(stream)\n    s.sendall(b'escaped')",
    "socket.socket dgram": "s = real_socket()(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                           "    assert s.sendto(b'escaped', dgram) == 7",
    "socket.SocketType": "s = socket.SocketType(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                         "    s.connect(stream)\n    s.sendall(b'escaped')",
    "socketpair": "x, y = fresh('_socket').socketpair(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                  "    x.sendall(b'escaped')\n    assert y.recv(7) == b'escaped'",
    "_socket": "s = fresh('_socket').socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
               "    s.connect(stream)\n    s.sendall(b'escaped')",
    "ctypes libc": "ct = fresh('ctypes')\n    libc = ct.CDLL(None, use_errno=True)\n"
                   "    fd = libc_call(libc, ct, libc.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0))\n"
                   "    address = struct.pack('H108s', socket.AF_UNIX, stream.encode())\n"
                   "    libc_call(libc, ct, libc.connect(fd, address, len(address)))\n"
                   "    assert libc.write(fd, b'escaped', 7) == 7",
}
if os.uname().machine == "x86_64":  # the same call through the x32 ABI's numbers (socket is 41 | 0x40000000)
    SOCKET_ROUTES["ctypes x32 syscall"] = ("ct = fresh('ctypes')\n    libc = ct.CDLL(None, use_errno=True)\n"
                                           "    libc_call(libc, ct, libc.syscall(0x40000000 | 41, socket.AF_UNIX,"
                                           " socket.SOCK_STREAM, 0))")


class _Listeners:
    """A UNIX stream and a datagram socket bound in a fresh folder of /tmp, as an agent's or a daemon's are: as
    root the socket files are writable by everyone (as D-Bus's system bus is), for an ordinary user they are
    theirs, mode 0600 in a 0700 folder (as ssh-agent's). Only the kernel can then keep a sample away."""

    def __init__(self, owner: int):
        self.folder = Path(tempfile.mkdtemp(prefix="codenas-listen-", dir="/tmp"))
        self.stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.stream.bind(str(self.folder / "rt.sock"))
        self.stream.listen(8)
        self.dgram.bind(str(self.folder / "dg.sock"))
        for path, mode in ((self.folder, 0o755 if owner == 0 else 0o700), (self.folder / "rt.sock", 0o666),
                           (self.folder / "dg.sock", 0o666)):
            os.chown(path, owner, owner)
            os.chmod(path, mode if owner == 0 or path == self.folder else 0o600)

    def programs(self) -> list[str]:
        helpers = SOCKET_HELPERS.format(stream=str(self.folder / "rt.sock"), dgram=str(self.folder / "dg.sock"))
        return [PROMPT + helpers + f"    {route}\n    return a + b\n" + TESTS for route in SOCKET_ROUTES.values()]

    def received(self) -> bool:
        """Whether anything connected to or was sent to either listener."""
        return bool(select.select([self.stream, self.dgram], [], [], 0)[0])

    def close(self) -> None:
        self.stream.close()
        self.dgram.close()
        shutil.rmtree(self.folder)


def _judge_all(programs: list[str], as_user: bool) -> tuple[list[ExecResult], str]:
    def run():
        return run_programs(programs, workers=1), isolation_level()

    return _as_ordinary_user(run) if as_user else run()


@pytest.mark.parametrize("as_user", MODES)
def test_no_socket_route_reaches_a_listener_at_a_path(as_user):
    listeners = _Listeners(ORDINARY_USER if as_user else 0)
    try:
        results, level = _judge_all(listeners.programs(), as_user)
        assert "seccomp" in level.split("+"), level
        for route, result in zip(SOCKET_ROUTES, results, strict=True):
            assert result.status == "error" and "[Errno 1]" in result.detail, (route, result)  # EPERM: the filter's
        assert not listeners.received()
    finally:
        listeners.close()


@pytest.mark.parametrize("as_user", MODES)
def test_without_seccomp_the_same_routes_reach_the_listener(as_user):
    """The routes above are real: with the filter left out, the other layers let them through."""
    listeners = _Listeners(ORDINARY_USER if as_user else 0)
    worker = listeners.folder.with_name(listeners.folder.name + "-worker.py")
    worker.write_text(Path(execution.WORKER_SCRIPT).read_text().replace(' and _probe(_seccomp_refuses_sockets)',
                                                                        ' and False', 1))
    os.chmod(worker, 0o644)
    try:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(execution, "WORKER_SCRIPT", worker)
            isolation_level.cache_clear()
            results, level = _judge_all(listeners.programs(), as_user)
        assert "seccomp" not in level.split("+") and is_confined(level), level
        passed = {route for route, result in zip(SOCKET_ROUTES, results, strict=True) if result.passed}
        assert {"socket.socket stream", "socket.SocketType", "_socket", "ctypes libc", "socketpair"} <= passed
        assert listeners.received()
    finally:
        isolation_level.cache_clear()
        worker.unlink()
        listeners.close()


# System calls that an unprivileged process may make, which the filter refuses (EPERM), each through libc.
DENIED_CALLS = """
    import errno, os, sys
    for stale in ("ctypes", "_ctypes"):
        sys.modules.pop(stale, None)
    import ctypes as ct
    libc = ct.CDLL(None, use_errno=True)
    buffer = ct.create_string_buffer(8)
    iov = (ct.c_void_p * 2)(ct.addressof(buffer), 8)
    calls = {
        "unshare(CLONE_NEWUSER)": lambda: libc.unshare(0x10000000),
        "ptrace(PTRACE_TRACEME)": lambda: libc.ptrace(0, 0, None, None),
        "process_vm_readv(self)": lambda: libc.process_vm_readv(os.getpid(), iov, 1, iov, 1, 0),
        "keyctl(GET_KEYRING_ID)": lambda: libc.syscall(SYSCALLS["keyctl"], 0, -3, 0),
        "io_uring_setup": lambda: libc.syscall(SYSCALLS["io_uring_setup"], 1, None),
    }
    refused = {}
    for name, call in calls.items():
        ct.set_errno(0)
        refused[name] = call() == -1 and ct.get_errno() == errno.EPERM
    assert all(refused.values()), refused
    return a + b
"""


def test_the_filter_refuses_calls_an_unprivileged_process_may_make():
    numbers = {name: nrs[list(_worker.SECCOMP_ARCHES).index(os.uname().machine)]
               for name, nrs in _worker.SECCOMP_DENIED.items()}
    body = DENIED_CALLS
    for name in ("keyctl", "io_uring_setup"):
        body = body.replace(f'SYSCALLS["{name}"]', str(numbers[name]))
    assert run_programs([PROMPT + body + TESTS], workers=1) == [ExecResult("passed", "")]


HEADERS = {"x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "aarch64": "/usr/include/asm-generic/unistd.h"}


@pytest.mark.parametrize("machine", list(_worker.SECCOMP_ARCHES))
def test_the_filter_tables_match_the_kernel_headers(machine):
    header = Path(HEADERS[machine])
    if not header.is_file():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    numbers = dict(re.findall(r"^#define __NR(?:3264)?_(\w+)\s+(\d+)\s*$", header.read_text(), re.M))
    column = list(_worker.SECCOMP_ARCHES).index(machine)
    expected = {name: int(numbers[name]) if name in numbers else None for name in _worker.SECCOMP_DENIED}
    assert {name: nrs[column] for name, nrs in _worker.SECCOMP_DENIED.items()} == expected
    assert (_worker.SECCOMP_CLONE[machine], _worker.SECCOMP_CLONE3) == (int(numbers["clone"]), int(numbers["clone3"]))
    assert _worker.SYS_SECCOMP[machine] == int(numbers["seccomp"])


def test_benchmark_solutions_still_pass_under_the_filter(he_records):
    chosen = he_records[::8]  # 21 problems: strings, math, itertools, regular expressions, sorting, hashing
    results = run_programs([rec.program() for rec in chosen], workers=2)
    assert [r.status for r in results] == ["passed"] * len(chosen)
    if os.uname().machine in _worker.SECCOMP_ARCHES:
        assert "seccomp" in isolation_level().split("+")
