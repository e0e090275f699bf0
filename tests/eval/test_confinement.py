"""Kernel write confinement: code that gets past every Python-level guard still cannot change a file outside its
own folder, whether the harness runs as root or as an ordinary user (docs/sandbox.md)."""

from __future__ import annotations

import ctypes
import os
import pickle
import shutil
import stat
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from codenas.eval import execution
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
    assert level == "python-guards-only" or set(level.split("+")) <= {"landlock", "mountns", "netns", "uid"}
    if os.path.exists("/sys/kernel/security/landlock") or _landlock_abi() > 0:
        assert "landlock" in level.split("+")


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


def test_a_layer_that_fails_in_the_child_is_a_harness_fault_not_an_unconfined_run(tmp_path, monkeypatch):
    """A child that cannot apply the layers its worker announced never runs the sample."""
    fake_worker = tmp_path / "_worker.py"
    source = Path(execution.WORKER_SCRIPT).read_text()
    fake_worker.write_text(source.replace("def _landlock(workdir: str, abi: int) -> None:\n",
                                          "def _landlock(workdir: str, abi: int) -> None:\n"
                                          "    raise OSError(1, 'refused for the test')\n", 1)
                           .replace('layers.append("landlock")', 'pass', 1)
                           .replace("    _layers = isolation_layers(network)\n",
                                    "    _layers = isolation_layers(network) + ('landlock',)\n", 1))
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
