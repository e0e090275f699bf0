"""The pretraining corpus as training reads it: the memory-mapped shards of a built corpus, and the batches.

Every corpus is a corpus build (``codenas.corpus.build``): a folder with a corpus ``manifest.json`` is used as it
is, and any other corpus source (a folder of ``.py`` files, ``stdlib``, ``site-packages``, a JSONL/Parquet file, a
saved ``datasets`` folder, an fsspec URL) is first built with the given tokenizer into a content-keyed folder of
the cache (``codenas.corpus.build.build_cached``: filtered, deduplicated, decontaminated, split by document) and
reused from there. The train and val shards are memory-mapped and addressed as one token sequence each
(``codenas.corpus.shards``), so a corpus larger than RAM trains.

Batches are random contiguous windows of ``context_length + 1`` tokens drawn from a seeded ``torch.Generator``
whose state is part of the resume state; validation uses fixed, evenly spaced windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codenas.corpus.build import MANIFEST, build_cached, is_built_corpus
from codenas.corpus.shards import TokenShards
from codenas.io import CodenasError, read_json, sha256_file
from codenas.model.tokenizer import TOKENIZER_FILE, tokenizer_file
from codenas.settings import CorpusSettings

DEFAULT_SOURCE = "stdlib"


@dataclass
class TokenCorpus:
    """Token arrays of a built corpus (memory-mapped, read-only) and its description."""

    train: np.ndarray | TokenShards
    val: np.ndarray | TokenShards
    meta: dict


def open_built_corpus(folder: Path, tokenizer_path: Path, *, max_tokens: int | None = None) -> TokenCorpus:
    """Map the shards of a built corpus; the tokenizer must be the one its shards were made with."""
    from codenas.corpus.shards import open_split

    manifest = read_json(folder / MANIFEST)
    tokenizer_sha = sha256_file(tokenizer_file(tokenizer_path))
    if tokenizer_sha != manifest["tokenizer"]["sha256"]:
        raise CodenasError(f"the corpus was tokenized with another tokenizer (sha256 "
                           f"{manifest['tokenizer']['sha256'][:12]}..., {folder / TOKENIZER_FILE}); "
                           f"train with that one (--tokenizer {folder / TOKENIZER_FILE})", tokenizer_path)
    train = open_split(folder, "train")
    val = open_split(folder, "val")
    if max_tokens is not None:
        train = train.head(max_tokens)
    meta = {"corpus": str(folder), "cache": str(folder), "key": manifest["key"], "tokenizer_sha256": tokenizer_sha,
            "dtype": manifest["dtype"], "train_documents": manifest["documents"]["train"],
            "val_documents": manifest["documents"]["val"], "train_tokens": manifest["tokens"]["train"],
            "val_tokens": manifest["tokens"]["val"]}
    return TokenCorpus(train=train, val=val, meta=meta)


def prepare_corpus(tokenizer_path: Path, corpus: Path | str | None = None, *, max_tokens: int | None = None,
                   settings: CorpusSettings | None = None, cache: Path | None = None) -> TokenCorpus:
    """Map the shards of ``corpus``: a built corpus folder, or a corpus source (default: the stdlib) built with
    ``tokenizer_path`` and ``settings`` into the cache first (once; the cached build is reused while the sources'
    content and the settings stay the same).

    ``max_tokens`` only truncates the mapped training array (cheap, shares the build).
    """
    if corpus is None or not is_built_corpus(corpus):
        corpus = build_cached([str(corpus or DEFAULT_SOURCE)], tokenizer=Path(tokenizer_path), settings=settings,
                              cache=cache)
    return open_built_corpus(Path(corpus), Path(tokenizer_path), max_tokens=max_tokens)


def check_corpus(corpus: Path | str | None) -> None:
    """Cheap check of a corpus argument before any work: a built corpus or the default (the stdlib) passes; another
    source must resolve (``corpus.sources``: a folder holding readable files, a file, a URL)."""
    if corpus is None or is_built_corpus(corpus):
        return
    from codenas.corpus.sources import resolve_sources

    resolve_sources([str(corpus)])


def _windows(tokens: np.ndarray | TokenShards, starts: np.ndarray | list[int], length: int) -> dict[str, torch.Tensor]:
    rows = np.stack([np.asarray(tokens[s:s + length + 1], dtype=np.int64) for s in starts])
    data = torch.from_numpy(rows)
    return {"input_ids": data[:, :-1], "targets": data[:, 1:]}


class RandomWindows:
    """An endless, resumable source of random training windows (one seeded stream per DDP rank)."""

    def __init__(self, tokens: np.ndarray | TokenShards, batch_size: int, context_length: int, *, seed: int,
                 rank: int = 0):
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


def fixed_windows(tokens: np.ndarray | TokenShards, n_batches: int, batch_size: int, context_length: int
                  ) -> list[dict[str, torch.Tensor]]:
    """``n_batches`` validation batches of evenly spaced windows (the same every time)."""
    high = len(tokens) - context_length - 1
    if high < 0:
        raise CodenasError(f"validation split has {len(tokens)} tokens, fewer than one window "
                           f"of context_length + 1 = {context_length + 1}")
    starts = np.linspace(0, high, num=n_batches * batch_size).astype(np.int64)
    return [_windows(tokens, starts[i * batch_size:(i + 1) * batch_size], context_length) for i in range(n_batches)]
