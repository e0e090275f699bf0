"""The byte-level BPE tokenizer: training on texts, loading, special tokens, encoding.

Byte-level means every string maps to bytes first, so ``decode(encode(text)) == text`` for any text (no
normalizer, no prefix space, the 256 byte symbols always in the vocabulary). Special tokens sit at fixed ids:
``<|endoftext|>`` = 0 separates documents in pretraining and ends a supervised answer; ``<|pad|>`` = 1 fills
batches. What a tokenizer is trained on is the corpus build's business (``codenas.corpus.build``: the clean
training documents of its sources, the same text pretraining reads).
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from codenas.io import CodenasError, atomic_path
from codenas.names import EOT, PAD, TOKENIZER_FILE

SPECIAL_TOKENS = (EOT, PAD)  # ids 0 and 1, in this order


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE tokenizer (no normalizer, no prefix space)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(files: list[Path], vocab_size: int, out: Path) -> Path:
    """Train a byte-level BPE of ``vocab_size`` tokens on a few named files (those not valid UTF-8 are left out)
    and save it atomically as ``out`` (JSON). For small fixed inputs; a corpus's tokenizer comes from its build
    (``codenas.corpus.build``)."""
    texts = []
    for f in files:
        try:
            texts.append(Path(f).read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return train_tokenizer_on_texts(texts, vocab_size, out)


def train_tokenizer_on_texts(texts: list[str], vocab_size: int, out: Path) -> Path:
    """Train a byte-level BPE of ``vocab_size`` tokens on ``texts`` and save it atomically as ``out`` (JSON)."""
    min_size = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < min_size:
        raise CodenasError(f"vocab_size must be at least {min_size} (specials + 256 bytes), got {vocab_size}")
    if not texts:
        raise CodenasError("no documents to train the tokenizer on")
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    out = Path(out)
    with atomic_path(out) as tmp:
        tok.save(str(tmp))
    return out



def tokenizer_file(path: str | os.PathLike) -> Path:
    """The tokenizer.json a path names: the file itself, or ``FOLDER/tokenizer.json`` for a folder (a checkpoint,
    an adapter, a built corpus)."""
    path = Path(path)
    return path / TOKENIZER_FILE if path.is_dir() else path


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer.json (a folder holding one works too, see ``tokenizer_file``) and check its special
    tokens."""
    path = tokenizer_file(path)
    if not path.is_file():
        raise CodenasError("tokenizer file not found", path)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises plain Exceptions on bad JSON
        raise CodenasError(f"not a tokenizer file: {e}", path) from None
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != expected_id:
            raise CodenasError(f"special token {token} is not at id {expected_id}", path)
    return tok


def eot_id(tokenizer: Tokenizer) -> int:
    """The id of ``<|endoftext|>``."""
    return _special_id(tokenizer, EOT)


def pad_id(tokenizer: Tokenizer) -> int:
    """The id of ``<|pad|>``."""
    return _special_id(tokenizer, PAD)


def _special_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise CodenasError(f"the tokenizer has no {token} token")
    return token_id


def check_vocab_fits(n_tokens: int, vocab_size: int, path: str | os.PathLike | None = None) -> None:
    """Refuse a tokenizer of ``n_tokens`` tokens for a model of ``vocab_size`` rows (higher ids have no embedding).

    A model with more rows than the tokenizer has tokens works (the extra rows are never used).
    """
    if n_tokens > vocab_size:
        raise CodenasError(f"the tokenizer has {n_tokens} tokens but the arch's vocab_size is {vocab_size}: "
                           f"use a tokenizer of at most {vocab_size} tokens (codenas tokenizer train --vocab-size "
                           f"{vocab_size}) or raise vocab_size in the arch JSON", path)


def encode_texts(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, treating special-token strings inside the text as ordinary characters."""
    previous = tokenizer.encode_special_tokens
    tokenizer.encode_special_tokens = True
    try:
        return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    finally:
        tokenizer.encode_special_tokens = previous
