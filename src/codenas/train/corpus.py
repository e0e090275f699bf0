"""The pretraining corpus: a folder of .py files tokenized once into cached memory-mapped token arrays.

Files are split into train/val by a hash of their relative path (``codenas.model.tokenizer.split_files``), each
file's tokens are followed by ``<|endoftext|>``, and the ids are stored as ``train.bin`` / ``val.bin`` (uint16 when
the vocabulary fits, else uint32) under ``cache_dir()/corpus/<key>/``. The key hashes the tokenizer file, the
content of every file (``files_digest``), the split fraction and ``max_files``, so runs with the same inputs share
one cache and any change rebuilds it. ``meta.json`` is written last: its presence marks a complete cache.

A corpus built by ``codenas corpus build`` (a folder with a corpus ``manifest.json``) is used as it is: its
train and val shards are memory-mapped and addressed as one token sequence each (``codenas.corpus.shards``), so
a corpus larger than RAM trains. Any other corpus source (``stdlib``, ``site-packages``, a JSONL/Parquet file, a
saved ``datasets`` folder, an fsspec URL) is first built with ``codenas.corpus.build`` into
``cache_dir()/corpus-build/<key>/`` with the given tokenizer.

Batches are random contiguous windows of ``context_length + 1`` tokens drawn from a seeded ``torch.Generator``
whose state is part of the resume state; validation uses fixed, evenly spaced windows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codenas.corpus.shards import TokenShards, token_dtype
from codenas.io import CodenasError, atomic_path, atomic_write_json, read_json, sha256_bytes, sha256_file
from codenas.model.tokenizer import (
    encode_texts,
    eot_id,
    files_digest,
    list_py_files,
    load_tokenizer,
    read_texts,
    sample_files,
    split_files,
    stdlib_dir,
    tokenizer_file,
)
from codenas.paths import cache_dir
from codenas.progress import progress

_CHUNK_FILES = 256  # files tokenized per encode_batch call (bounds memory)


@dataclass
class TokenCorpus:
    """Token arrays of a tokenized corpus (memory-mapped, read-only) and its description."""

    train: np.ndarray | TokenShards
    val: np.ndarray | TokenShards
    meta: dict


def _cache_key(tokenizer_sha: str, root: Path, files: list[Path], val_fraction: float, max_files: int | None) -> str:
    blob = json.dumps([tokenizer_sha, files_digest(root, files), val_fraction, max_files])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def _write_tokens(path: Path, tokenizer, files: list[Path], dtype: np.dtype, desc: str) -> tuple[int, int]:
    """Tokenize ``files`` (EOT after each) into ``path``; return (tokens written, files skipped as not UTF-8)."""
    eot = eot_id(tokenizer)
    n_tokens = n_skipped = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        bar = progress(total=len(files), desc=desc, unit="file")
        for start in range(0, len(files), _CHUNK_FILES):
            chunk = files[start:start + _CHUNK_FILES]
            texts, skipped = read_texts(chunk)
            n_skipped += len(skipped)
            for ids in encode_texts(tokenizer, texts):
                ids.append(eot)
                np.asarray(ids, dtype=dtype).tofile(f)
                n_tokens += len(ids)
            bar.update(len(chunk))
        bar.close()
        f.flush()
    return n_tokens, n_skipped


def is_built_corpus(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``codenas corpus build``."""
    from codenas.corpus.build import MANIFEST_FORMAT

    manifest = Path(path) / "manifest.json"
    return manifest.is_file() and read_json(manifest).get("format") == MANIFEST_FORMAT


def open_built_corpus(folder: Path, tokenizer_path: Path, *, max_tokens: int | None = None) -> TokenCorpus:
    """Map the shards of a built corpus; the tokenizer must be the one its shards were made with."""
    from codenas.corpus.shards import open_split

    manifest = read_json(folder / "manifest.json")
    tokenizer_sha = sha256_file(tokenizer_file(tokenizer_path))
    if tokenizer_sha != manifest["tokenizer"]["sha256"]:
        raise CodenasError(f"the corpus was tokenized with another tokenizer (sha256 "
                           f"{manifest['tokenizer']['sha256'][:12]}..., {folder / 'tokenizer.json'}); "
                           f"train with that one (--tokenizer {folder / 'tokenizer.json'})", tokenizer_path)
    train = open_split(folder, "train")
    val = open_split(folder, "val")
    if max_tokens is not None:
        train = train.head(max_tokens)
    meta = {"corpus": str(folder), "cache": str(folder), "key": manifest["key"], "tokenizer_sha256": tokenizer_sha,
            "dtype": manifest["dtype"], "train_documents": manifest["documents"]["train"],
            "val_documents": manifest["documents"]["val"], "train_tokens": manifest["tokens"]["train"],
            "val_tokens": manifest["tokens"]["val"]}
    return TokenCorpus(train=train, val=val, meta=meta)


def build_in_cache(tokenizer_path: Path, source: str, *, val_fraction: float, max_files: int | None,
                   cache: Path | None = None) -> Path:
    """Build the corpus source ``source`` with the default filters into the cache (once) and return its folder."""
    from codenas.corpus.build import build_corpus
    from codenas.corpus.settings import CorpusSettings

    tok_file = tokenizer_file(tokenizer_path)
    settings = CorpusSettings(val_fraction=val_fraction, max_files=max_files or 0)
    name = sha256_bytes(json.dumps([source, sha256_file(tok_file), settings.output_settings()]).encode())
    folder = Path(cache or cache_dir() / "corpus-build") / name[:24]
    build_corpus([source], folder, tokenizer=tok_file, settings=settings)
    return folder


def check_corpus(corpus: Path | str | None, *, max_files: int | None = None, val_fraction: float = 0.02) -> None:
    """Cheap checks of a corpus argument before any work: a built corpus or the stdlib pass; a folder of .py files
    must hold a training and a validation file; another source must resolve (``corpus.sources``)."""
    if corpus is None or is_built_corpus(corpus):
        return
    if Path(corpus).is_dir():
        _split_py_files(Path(corpus), val_fraction, max_files)
        return
    from codenas.corpus.sources import resolve_sources

    resolve_sources([str(corpus)], max_files or 0)


def _split_py_files(root: Path, val_fraction: float, max_files: int | None) -> tuple[list[Path], list[Path]]:
    """The training (sampled to ``max_files``) and validation .py files of a folder; an error when either is empty."""
    train_files, val_files = split_files(list_py_files(root), root, val_fraction)
    train_files = sample_files(train_files, root, max_files)
    if not train_files:
        raise CodenasError("no .py files for training", root)
    if not val_files:
        raise CodenasError("need at least two .py files (one is held out for validation)", root)
    return train_files, val_files


def prepare_corpus(tokenizer_path: Path, corpus: Path | str | None = None, *, val_fraction: float = 0.02,
                   max_files: int | None = None, max_tokens: int | None = None,
                   cache: Path | None = None) -> TokenCorpus:
    """Tokenize ``corpus`` (default: the stdlib) once, reuse the cache afterwards, and map the token arrays.

    ``corpus`` is a built corpus folder, a folder of .py files (tokenized whole, split by file), or another
    corpus source (built into the cache first).

    ``max_files`` samples the training files before tokenizing (part of the cache key); ``max_tokens`` only
    truncates the mapped training array (cheap, shares the cache).
    """
    if corpus is not None and not is_built_corpus(corpus) and not Path(corpus).is_dir():
        corpus = build_in_cache(tokenizer_path, str(corpus), val_fraction=val_fraction, max_files=max_files,
                                cache=cache)
    if corpus is not None and is_built_corpus(corpus):
        return open_built_corpus(Path(corpus), tokenizer_path, max_tokens=max_tokens)
    root = Path(corpus) if corpus is not None else stdlib_dir()
    tokenizer_path = Path(tokenizer_path)
    tokenizer = load_tokenizer(tokenizer_path)
    train_files, val_files = _split_py_files(root, val_fraction, max_files)
    tokenizer_sha = sha256_file(tokenizer_file(tokenizer_path))
    key = _cache_key(tokenizer_sha, root, train_files + val_files, val_fraction, max_files)
    folder = Path(cache or cache_dir() / "corpus") / key
    dtype = token_dtype(tokenizer.get_vocab_size())
    if not (folder / "meta.json").is_file():
        n_train, skip_train = _write_tokens(folder / "train.bin", tokenizer, train_files, dtype, "tokenize train")
        n_val, skip_val = _write_tokens(folder / "val.bin", tokenizer, val_files, dtype, "tokenize val")
        atomic_write_json(folder / "meta.json", {
            "root": str(root), "tokenizer_sha256": tokenizer_sha, "dtype": dtype.name,
            "train_files": len(train_files) - skip_train, "val_files": len(val_files) - skip_val,
            "skipped_not_utf8": skip_train + skip_val, "train_tokens": n_train, "val_tokens": n_val,
        })
    meta = read_json(folder / "meta.json")
    train = np.memmap(folder / "train.bin", dtype=meta["dtype"], mode="r")
    val = np.memmap(folder / "val.bin", dtype=meta["dtype"], mode="r")
    if max_tokens is not None:
        train = train[:max_tokens]
    return TokenCorpus(train=train, val=val, meta={**meta, "cache": str(folder)})


def _windows(tokens: np.ndarray, starts: np.ndarray | list[int], length: int) -> dict[str, torch.Tensor]:
    rows = np.stack([np.asarray(tokens[s:s + length + 1], dtype=np.int64) for s in starts])
    data = torch.from_numpy(rows)
    return {"input_ids": data[:, :-1], "targets": data[:, 1:]}


class RandomWindows:
    """An endless, resumable source of random training windows (one seeded stream per DDP rank)."""

    def __init__(self, tokens: np.ndarray, batch_size: int, context_length: int, *, seed: int, rank: int = 0):
        if len(tokens) < context_length + 2:
            raise CodenasError(f"training corpus has {len(tokens)} tokens, fewer than one window "
                               f"of context_length + 1 = {context_length + 1}")
        self.tokens = tokens
        self.batch_size = batch_size
        self.context_length = context_length
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + rank)

    def next_batch(self) -> dict[str, torch.Tensor]:
        high = len(self.tokens) - self.context_length - 1
        starts = torch.randint(0, high + 1, (self.batch_size,), generator=self.generator).tolist()
        return _windows(self.tokens, starts, self.context_length)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def fixed_windows(tokens: np.ndarray, n_batches: int, batch_size: int, context_length: int
                  ) -> list[dict[str, torch.Tensor]]:
    """``n_batches`` validation batches of evenly spaced windows (the same every time)."""
    high = len(tokens) - context_length - 1
    if high < 0:
        raise CodenasError(f"validation split has {len(tokens)} tokens, fewer than one window "
                           f"of context_length + 1 = {context_length + 1}")
    starts = np.linspace(0, high, num=n_batches * batch_size).astype(np.int64)
    return [_windows(tokens, starts[i * batch_size:(i + 1) * batch_size], context_length) for i in range(n_batches)]
