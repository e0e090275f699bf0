"""Corpus sources: what each SOURCE argument names, the listing of its files, and the datatrove reader of each.

A source is ``stdlib`` (the running interpreter's library), ``site-packages`` (the ``.py`` files of the
installed packages), a ``.py`` file folder, a JSONL (plain, ``.gz``, ``.zst``), Parquet or Arrow file, a folder
of those, or a folder saved by Hugging Face ``datasets`` (its ``.arrow`` files). Any of them may be an fsspec
URL (``s3://...``, ``hf://datasets/...``) where the filesystem package is installed. ``resolve_sources`` lists
the files once, sorted, so the work split across tasks and the output are the same on every run;
``listing_digest`` hashes the listing (local files by content; remote ones by size and modification time) for
cache keys. A local file that cannot be read (a symlink loop, a dangling link, no read permission) is left out of
the listing and named in ``Source.skipped`` (the manifest counts them), never a traceback.

Every document carries ``metadata["source"]`` (the argument as given) so the manifest counts per source. Python
files become one document each (id ``SOURCE/relative/path.py``); records of data files get the id
``SOURCE/relative/file#row``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.readers import IpcReader, JsonlReader, ParquetReader
from datatrove.pipeline.readers.base import BaseDiskReader

from codenas.io import CodenasError, sha256_file

STDLIB = "stdlib"
SITE_PACKAGES = "site-packages"
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".json.gz", ".ndjson")
_SKIP_PARTS = {"__pycache__", ".git", "site-packages", "dist-packages"}


@dataclass(frozen=True)
class Source:
    """One readable group of files: ``kind`` is python | jsonl | parquet | arrow; ``files`` are relative to
    ``root`` (an fsspec path), with their sizes and modification times (for the listing digest); ``skipped`` are
    the files of this kind left out as unreadable, as ``(relative path, reason)``."""

    name: str
    kind: str
    root: str
    files: tuple[str, ...]
    stamps: tuple[tuple[int, str], ...]
    skipped: tuple[tuple[str, str], ...] = ()


def stdlib_dir() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def _kind(path: str) -> str | None:
    name = path.lower()
    if name.endswith(".py"):
        return "python"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    return None


def site_packages_dirs() -> list[Path]:
    """The folders holding installed packages (purelib, platlib and the site's own), existing ones, sorted."""
    found = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    return sorted({Path(p).resolve() for p in found if Path(p).is_dir()})


def _unreadable(fs, path: str) -> str | None:
    """Why a listed local file cannot be read (None when it can; remote files are taken as listed)."""
    if fs.protocol not in ("file", ("file", "local")):
        return None
    try:
        os.stat(path)  # follows links
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop"
        return "a dangling or broken link" if os.path.islink(path) else f"cannot be read ({e.strerror})"
    if not os.path.isfile(path):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def _listing(fs, root: str, *, python_only: bool, skip: set[str]
             ) -> dict[str, tuple[list[tuple[str, int, str]], list[tuple[str, str]]]]:
    """kind -> ([(relative path, size, mtime)], [(relative path, why unreadable)]) for the files under ``root``
    (sorted)."""
    by_kind: dict[str, tuple[list[tuple[str, int, str]], list[tuple[str, str]]]] = {}
    found = fs.find(root, detail=True)
    prefix = root.rstrip("/") + "/"
    for path, info in sorted(found.items()):
        rel = path[len(prefix):] if path.startswith(prefix) else path
        if skip & set(rel.split("/")[:-1]) or any(part.startswith(".") for part in rel.split("/")):
            continue
        kind = _kind(rel)
        if kind is None or (python_only and kind != "python"):
            continue
        files, skipped = by_kind.setdefault(kind, ([], []))
        why = _unreadable(fs, path)
        if why:
            skipped.append((rel, why))
            continue
        mtime = str(info.get("mtime") or info.get("LastModified") or info.get("last_modified") or "")
        files.append((rel, int(info.get("size") or 0), mtime))
    return by_kind


def _from_folder(name: str, fs, root: str, *, python_only: bool, skip: set[str]) -> list[Source]:
    by_kind = _listing(fs, root, python_only=python_only, skip=skip)
    return [Source(name, kind, _unstrip(fs, root), tuple(f for f, _, _ in files),
                   tuple((size, mtime) for _, size, mtime in files), tuple(skipped))
            for kind, (files, skipped) in sorted(by_kind.items())]


def _unstrip(fs, path: str) -> str:
    """A path that ``datatrove.io.get_datafolder`` opens with the same filesystem."""
    return fs.unstrip_protocol(path) if fs.protocol not in ("file", ("file", "local")) else path


def resolve_sources(specs: list[str], max_files: int | None = 0) -> list[Source]:
    """The sources named by ``specs`` (see the module docstring); ``max_files`` > 0 keeps at most that many files
    per source (a deterministic sample, by a hash of the path; 0 or None: all)."""
    import fsspec

    if not specs:
        raise CodenasError("name at least one corpus source (a folder, a file, stdlib or site-packages)")
    sources: list[Source] = []
    for spec in specs:
        if spec == STDLIB:
            fs = fsspec.filesystem("file")
            found = _from_folder(spec, fs, str(stdlib_dir().resolve()), python_only=True, skip=_SKIP_PARTS)
        elif spec == SITE_PACKAGES:
            fs = fsspec.filesystem("file")
            found = [s for d in site_packages_dirs()
                     for s in _from_folder(spec, fs, str(d), python_only=True, skip={"__pycache__"})]
        else:
            try:
                fs, path = fsspec.core.url_to_fs(spec)
            except (ImportError, ValueError) as e:
                raise CodenasError(f"cannot open corpus source: {e}", spec) from None
            if fs.isdir(path):
                found = _from_folder(spec, fs, path, python_only=False, skip={"__pycache__", ".git"})
            elif fs.isfile(path):
                kind = _kind(path)
                if kind is None:
                    raise CodenasError("unknown corpus file type (expected .py, .jsonl[.gz|.zst], .parquet or "
                                       ".arrow)", spec)
                parent, _, base = path.rpartition("/")
                info = fs.info(path)
                why = _unreadable(fs, path)
                if why:
                    raise CodenasError(f"cannot read the corpus source: {why}", spec)
                found = [Source(spec, kind, _unstrip(fs, parent or "/"), (base,),
                                ((int(info.get("size") or 0), str(info.get("mtime") or "")),))]
            elif os.path.lexists(path) and _unreadable(fs, path):
                raise CodenasError(f"cannot read the corpus source: {_unreadable(fs, path)}", spec)
            else:
                raise CodenasError("corpus source not found (not stdlib, site-packages, a folder or a file)", spec)
        found = [_sample(s, max_files or 0) for s in found]
        if not any(s.files for s in found):
            unreadable = [f"{rel} ({why})" for s in found for rel, why in s.skipped]
            raise CodenasError("corpus source holds no readable .py, JSONL, Parquet or Arrow files"
                               + (f" (unreadable: {', '.join(unreadable[:3])})" if unreadable else ""), spec)
        sources += found
    return sources


def _sample(source: Source, max_files: int) -> Source:
    if max_files <= 0 or len(source.files) <= max_files:
        return source
    order = sorted(range(len(source.files)),
                   key=lambda i: hashlib.sha256(f"sample:{source.files[i]}".encode()).digest())
    keep = sorted(order[:max_files])
    return Source(source.name, source.kind, source.root, tuple(source.files[i] for i in keep),
                  tuple(source.stamps[i] for i in keep), source.skipped)


def _content_digest(root: Path, files: tuple[str, ...]) -> str:
    """sha256 over each file's relative path and the sha256 of its content (an edited, added, removed or renamed
    file changes it; touching a file does not)."""
    h = hashlib.sha256()
    for rel in files:
        try:
            digest = sha256_file(root / rel)
        except OSError as e:  # changed since the listing
            raise CodenasError(f"cannot read corpus file: {e.strerror}", root / rel) from None
        h.update(rel.encode("utf-8", errors="surrogatepass") + b"\0" + digest.encode("ascii") + b"\n")
    return h.hexdigest()


def listing_digest(sources: list[Source]) -> str:
    """sha256 of every source's files: by content for local files (an edited file changes it, a touched one does
    not), by size and modification time for remote ones (reading a remote corpus only to hash it would cost as
    much as building it)."""
    h = hashlib.sha256()
    for s in sources:
        local = "://" not in s.root
        content = _content_digest(Path(s.root), s.files) if local else [list(x) for x in s.stamps]
        h.update(json.dumps([s.name, s.kind, s.root, list(s.files), content]).encode())
    return h.hexdigest()


class PythonFilesReader(BaseDiskReader):
    """One document per source file; bytes that are not UTF-8 are decoded with replacement characters and the
    document is marked ``not_utf8`` (the UTF-8 filter drops it)."""

    type = "codenas"
    name = "python files"

    def read_file(self, filepath: str):
        with self.data_folder.open(filepath, "rb") as f:
            raw = f.read()
        try:
            text, bad = raw.decode("utf-8"), False
        except UnicodeDecodeError:
            text, bad = raw.decode("utf-8", errors="replace"), True
        source = self.default_metadata["source"]
        metadata = {"source": source, "not_utf8": True} if bad else {"source": source}
        yield Document(text=text, id=f"{source}/{filepath}", metadata=metadata)


def _record_adapter(self, data: dict, path: str, id_in_file: int | str) -> dict:
    """A data-file row -> a document of its text field; other fields are not carried along."""
    if self.text_key not in data:
        raise CodenasError(f"no field {self.text_key!r} (fields: {', '.join(sorted(data))}); "
                           "name the text field with --text-field", path)
    text = data[self.text_key]
    if text is not None and not isinstance(text, str):
        raise CodenasError(f"field {self.text_key!r} holds {type(text).__name__}, not text", path)
    source = self.default_metadata["source"]
    return {"text": text or "", "id": f"{source}/{path}#{id_in_file}", "metadata": {}}


def reader_for(source: Source, paths_file: Path, text_field: str) -> BaseDiskReader:
    """The datatrove reader of ``source`` over the files listed (one per line) in ``paths_file``."""
    common = {"paths_file": str(paths_file), "default_metadata": {"source": source.name}}
    if source.kind == "python":
        return PythonFilesReader(source.root, **common)
    record_options = {**common, "text_key": text_field, "adapter": _record_adapter}
    if source.kind == "jsonl":
        return JsonlReader(source.root, compression="infer", **record_options)
    if source.kind == "parquet":
        return ParquetReader(source.root, read_metadata=False, id_key=text_field, **record_options)
    return IpcReader(source.root, stream=True, **record_options)
