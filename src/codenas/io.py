"""Shared file conventions: the project error, atomic writes, JSONL reading and appending, hashing.

Every stage reads and writes files through these helpers so that bad input is reported as
``file:line: message`` and a killed process never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


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
    every moment either the old or the new complete directory exists (under ``path`` or its ``.old`` name).
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
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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
        self._f.write(jsonl_line(row))
        self._f.flush()

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
