"""Shared file conventions: the project error, atomic writes, output folders, JSONL reading and appending, hashing.

Every stage reads and writes files through these helpers so that bad input is reported as
``file:line: message`` and a killed process never leaves a half-written file that looks complete. Output
folders of long commands are locked while written (``output_lock``), checked for writability before any work
(``check_writable``), and cleaned of what a killed run left (``clean_leftovers``) by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from codenas.names import LOCK_FILE


class CodenasError(Exception):
    """The one error type the CLI prints (one line, no traceback). Names the file and line when known."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or ""
        if self.path is not None and self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.message}" if where else self.message


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Use it for writers that want a filename (``safetensors.save_file``, ``tokenizer.save``...).
    On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a plain open() would
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path`` (a directory or nothing).

    An existing ``path`` is renamed aside, the new one renamed in, and only then the old one deleted, so at
    every moment either the old or the new complete directory exists (under ``path`` or its ``.old`` name;
    ``recover_directory`` puts the ``.old`` one back after a kill between the renames).
    Files get the usual permissions (umask applied), not the private ones of temporary files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        umask = _umask()
        for f in tmp.iterdir():
            if f.is_file():
                os.chmod(f, 0o666 & ~umask)
                _fsync(f)
        os.chmod(tmp, 0o777 & ~umask)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old)
            fault_point("between-renames")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_held_locks: dict[Path, list] = {}  # folder -> [open lock file, depth]: a process may lock a folder it holds


def check_writable(path: str | os.PathLike) -> Path:
    """Fail at once, in one line naming the path, if folder ``path`` cannot be created or written.

    Checks the nearest existing ancestor: it must be a folder this process may write (a read-only file
    system fails here too). Creates nothing. Returns ``path``.
    """
    path = Path(path)
    probe = path.absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise CodenasError("cannot write here: it is a file, not a folder", probe)
    if not os.access(probe, os.W_OK | os.X_OK):
        try:
            readonly = os.statvfs(probe).f_flag & os.ST_RDONLY
        except OSError:
            readonly = False
        why = "the file system is read-only" if readonly else "no permission to write"
        raise CodenasError(f"cannot write here: {why}", probe)
    return path


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, *, wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on output folder ``folder`` (created if needed) while the block runs.

    The lock is an OS lock (``flock``) on ``folder/.codenas.lock``: it is released when the process ends,
    however it ends, and a second process fails at once with an error naming the folder and the holder's
    pid; with ``wait`` (for shared folders such as the cache, where another process building the same entry
    is normal) it calls ``wait(holder_pid)`` once and waits for the lock instead. Re-entrant within one
    process. Under torchrun only rank 0 writes, so only rank 0 locks. On entry it removes what a killed run
    left in ``folder`` (``clean_leftovers``): no live run can be using it.
    """
    folder = Path(folder)
    if os.environ.get("RANK", "0") != "0":
        yield folder
        return
    key = folder.resolve()
    if key in _held_locks:
        _held_locks[key][1] += 1
        try:
            yield folder
        finally:
            _held_locks[key][1] -= 1
        return
    check_writable(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise CodenasError(f"cannot create the output folder's lock: {e.strerror}", folder) from None
    f = os.fdopen(fd, "r+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = f.read().strip() or "unknown"
        if e.errno in (errno.EAGAIN, errno.EACCES) and wait is not None:
            wait(holder)
            fcntl.flock(f, fcntl.LOCK_EX)
        else:
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise CodenasError(f"in use by another codenas process (pid {holder}); wait for it to end or "
                                   "choose another output folder", folder) from None
            raise CodenasError(f"cannot lock the output folder: {e.strerror}", folder) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held_locks[key] = [f, 1]
    try:
        clean_leftovers(folder)
        yield folder
    finally:
        _held_locks.pop(key, None)
        f.close()  # releases the lock; the file stays (removing it would race with the next locker)


def locks_output(param: str) -> Callable:
    """Decorator: run the function holding ``output_lock`` on its output-folder argument named ``param``."""
    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            folder = signature.bind(*args, **kwargs).arguments.get(param)
            if folder is None:
                return fn(*args, **kwargs)
            with output_lock(folder):
                return fn(*args, **kwargs)
        return locked
    return decorate


_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.(?:tmp|old)$")  # atomic_path/atomic_directory temps


def clean_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove what killed atomic writers left in ``folder`` and beside it (``.NAME.xxxxxxxx.tmp``/``.old``).

    Call it only while holding ``folder``'s lock: then no live process is writing them. Beside ``folder`` only
    its own temporaries count (those of a swapped-in ``folder``). A directory that a kill left only under its
    ``.old`` name (between the two renames of ``atomic_directory``) is first put back. Returns what was removed.
    """
    folder = Path(folder).absolute()
    removed = []
    for where, only in ((folder, None), (folder.parent, folder.name)):
        if not where.is_dir():
            continue
        for entry in sorted(where.iterdir()):
            match = _LEFTOVER.match(entry.name)
            if not match or (only is not None and match["name"] != only):
                continue
            if entry.name.endswith(".old") and entry.is_dir() and not entry.is_symlink():
                recover_directory(where / match["name"])
                if not entry.exists():
                    continue  # it was the complete copy: put back
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def recover_directory(path: str | os.PathLike) -> Path:
    """Make sure the complete directory ``atomic_directory`` was replacing at ``path`` is there.

    A kill between its two renames leaves ``path`` absent and the previous complete copy under a ``.old``
    name beside it: that copy is put back (the newest, if several). Returns ``path``.
    """
    path = Path(path)
    found = find_directory(path)
    if found is not None and found != path:
        os.replace(found, path)
    return path


def find_directory(path: str | os.PathLike) -> Path | None:
    """``path`` when it exists, else the complete copy a kill between ``atomic_directory``'s renames left aside
    (the newest ``.old`` one), else None. Reads only: ``recover_directory`` puts such a copy back."""
    path = Path(path)
    if path.exists():
        return path
    if not path.parent.is_dir():
        return None
    olds = [p for p in path.parent.iterdir() if p.name.endswith(".old") and p.is_dir()
            and (m := _LEFTOVER.match(p.name)) and m["name"] == path.name]
    return max(olds, key=lambda p: p.stat().st_mtime_ns) if olds else None


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL here when ``$CODENAS_FAULT`` names this point (crash tests use it)."""
    if os.environ.get("CODENAS_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def check_new_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Before any work: ``path`` must be writable and new or empty, unless ``overwrite`` (then it may hold an
    earlier output of the same command; ``replace_folder`` checks that before it swaps). Returns ``path``."""
    path = check_writable(path)
    if path.is_dir() and not overwrite:
        held = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE)
        if held:
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise CodenasError(f"output folder is not empty ({shown}): choose a new or empty folder, or pass "
                               "--overwrite to replace an earlier output of this command", path)
    return path


@contextlib.contextmanager
def replace_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """``atomic_directory`` for a user-named output folder: never deletes a file the command did not write.

    ``path`` must be new or empty; with ``overwrite`` it may hold an earlier output of the same command: it is
    replaced only if every entry in it is one the new output also has (so a ``notes.txt`` or another model
    folder inside it makes this an error, and nothing is touched).
    """
    path = check_new_folder(path, overwrite=overwrite)
    with atomic_directory(path) as tmp:
        yield tmp
        if path.is_dir():
            foreign = sorted(set(os.listdir(path)) - set(os.listdir(tmp)) - {LOCK_FILE})
            if foreign:
                shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                raise CodenasError(f"output folder holds files this command does not write ({shown}): not "
                                   "replacing it; choose a new or empty folder", path)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:  # a full disk, a quota: the file is left as it was
        raise CodenasError(f"cannot write: {e.strerror or e}", path) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Deterministic pretty JSON (sorted keys, trailing newline) for manifests and configs."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CodenasError("file not found", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CodenasError(f"invalid JSON: {e.msg}", path, e.lineno) from None


def jsonl_line(row: Any) -> str:
    """One JSONL line: compact, key order preserved, non-ASCII kept, newline-terminated."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """Write all rows atomically (temp file + rename)."""
    atomic_write_text(path, "".join(jsonl_line(r) for r in rows))


def read_jsonl(path: str | os.PathLike, *, allow_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad JSON raises ``CodenasError`` at file:line.

    With ``allow_torn_tail`` (append-only logs that a killed process may have cut), a last line that
    does not end in a newline and does not parse is ignored instead of raising.
    """
    path = Path(path)
    if not path.is_file():
        raise CodenasError("file not found", path)
    data = path.read_bytes()
    complete = data.endswith(b"\n")
    lines = data.split(b"\n")
    if complete:
        lines.pop()  # nothing after the final newline
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        torn = allow_torn_tail and i == len(lines) and not complete
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            if torn:
                return
            raise CodenasError(f"not valid UTF-8 (byte {e.start + 1})", path, i) from None
        except json.JSONDecodeError as e:
            if torn:
                return
            raise CodenasError(f"malformed JSON: {e.msg} (column {e.colno})", path, i) from None
        if not isinstance(obj, dict):
            raise CodenasError(f"expected a JSON object, got {type(obj).__name__}", path, i)
        yield i, obj


def truncate_torn_tail(path: str | os.PathLike) -> None:
    """Cut an append-only JSONL file back to its last complete line (after a kill mid-write)."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


class JsonlAppender:
    """Append-only JSONL log: each row is written whole and flushed, so a kill loses at most a torn tail."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_torn_tail(self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, row: Any) -> None:
        try:
            self._f.write(jsonl_line(row))
            self._f.flush()
        except OSError as e:  # a full disk: at most a torn last line, which the next opening cuts off
            raise CodenasError(f"cannot append: {e.strerror or e}", self.path) from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
