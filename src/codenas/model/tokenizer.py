"""The byte-level BPE tokenizer: training on a folder of .py files, loading, special tokens, the file split.

Byte-level means every string maps to bytes first, so ``decode(encode(text)) == text`` for any text (no
normalizer, no prefix space, the 256 byte symbols always in the vocabulary). Special tokens sit at fixed ids:
``<|endoftext|>`` = 0 separates documents in pretraining and ends a supervised answer; ``<|pad|>`` = 1 fills
batches. Source files that are not valid UTF-8 are skipped (and counted), since the tokenizer works on ``str``.

The train/validation split of a corpus is by file and decided by a hash of the file's relative path, so it is
stable when files are added or removed; the tokenizer and the pretraining corpus use the same split.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from codenas.io import CodenasError, atomic_path, check_writable, sha256_file

EOT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOT, PAD)  # ids 0 and 1, in this order

_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_dir() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def list_py_files(root: Path) -> list[Path]:
    """Every ``.py`` file under ``root`` (sorted; installed third-party packages and caches left out)."""
    root = Path(root)
    if not root.is_dir():
        raise CodenasError("corpus folder not found", root)
    files = [p for p in root.rglob("*.py") if p.is_file() and not _SKIP_DIRS & set(p.relative_to(root).parts)]
    return sorted(files)


def files_digest(root: Path, files: list[Path]) -> str:
    """sha256 over each file's path relative to ``root`` and the sha256 of its content: the identity of a corpus
    listing for cache keys (any edited, added, removed or renamed file changes it; touching a file does not)."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).relative_to(root).as_posix().encode("utf-8") + b"\0")
        h.update(sha256_file(f).encode("ascii") + b"\n")
    return h.hexdigest()


def stdlib_files() -> list[Path]:
    """The running interpreter's standard-library ``.py`` files (about 30 MB, offline, on every machine)."""
    return list_py_files(stdlib_dir())


def _path_hash(root: Path, path: Path, salt: str = "split") -> int:
    """A stable 64-bit hash of the relative path; the salt keeps the split and the sampling independent."""
    rel = path.relative_to(root).as_posix()
    return int.from_bytes(hashlib.sha256(f"{salt}:{rel}".encode()).digest()[:8], "big")


def split_files(files: list[Path], root: Path, val_fraction: float = 0.02) -> tuple[list[Path], list[Path]]:
    """Split files into (train, val) by a hash of each relative path; val gets at least one file when there are two."""
    if not 0 <= val_fraction < 1:
        raise CodenasError(f"val_fraction must be in [0, 1), got {val_fraction}")
    threshold = int(val_fraction * 2**64)
    val = [f for f in files if _path_hash(root, f) < threshold]
    if not val and len(files) >= 2 and val_fraction > 0:
        val = [min(files, key=lambda f: _path_hash(root, f))]
    val_set = set(val)
    return [f for f in files if f not in val_set], val


def sample_files(files: list[Path], root: Path, max_files: int | None) -> list[Path]:
    """At most ``max_files`` files, chosen by path hash (spread over the tree, deterministic), in sorted order."""
    if max_files is None or len(files) <= max_files:
        return files
    return sorted(sorted(files, key=lambda f: _path_hash(root, f, "sample"))[:max_files])


def read_texts(files: list[Path]) -> tuple[list[str], list[Path]]:
    """The UTF-8 text of each file, and the files skipped because they are not valid UTF-8."""
    texts, skipped = [], []
    for f in files:
        try:
            texts.append(f.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            skipped.append(f)
    return texts, skipped


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE tokenizer (no normalizer, no prefix space)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(files: list[Path], vocab_size: int, out: Path) -> Path:
    """Train a byte-level BPE of ``vocab_size`` tokens on ``files`` and save it atomically as ``out`` (JSON)."""
    min_size = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < min_size:
        raise CodenasError(f"vocab_size must be at least {min_size} (specials + 256 bytes), got {vocab_size}")
    texts, _ = read_texts(files)
    if not texts:
        raise CodenasError("no UTF-8 .py files to train the tokenizer on")
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


TOKENIZER_FILE = "tokenizer.json"


def tokenizer_file(path: str | os.PathLike) -> Path:
    """The tokenizer.json a path names: the file itself, or ``FOLDER/tokenizer.json`` for a folder (a checkpoint,
    an adapter, a tokenizer stage's output)."""
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
    return tokenizer.token_to_id(EOT)


def pad_id(tokenizer: Tokenizer) -> int:
    """The id of ``<|pad|>``."""
    return tokenizer.token_to_id(PAD)


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


def chars_per_token(tokenizer: Tokenizer, texts: list[str]) -> float:
    """Characters per token over ``texts`` (higher means better compression)."""
    n_tokens = sum(len(ids) for ids in encode_texts(tokenizer, texts))
    return sum(len(t) for t in texts) / max(n_tokens, 1)


def build_tokenizer(corpus: Path | None, vocab_size: int, out: Path, *, max_files: int | None = None,
                    val_fraction: float = 0.02) -> dict:
    """Train on the train split of ``corpus`` (default: stdlib), save ``out``; report chars/token on held-out files."""
    check_writable(Path(out).parent)
    root = Path(corpus) if corpus is not None else stdlib_dir()
    train_files, val_files = split_files(list_py_files(root), root, val_fraction)
    train_files = sample_files(train_files, root, max_files)
    if not train_files:
        raise CodenasError("no .py files found", root)
    _, train_skipped = read_texts(train_files)
    train_tokenizer(train_files, vocab_size, out)
    tok = load_tokenizer(out)
    val_texts, val_skipped = read_texts(val_files)
    return {
        "path": str(out),
        "vocab_size": tok.get_vocab_size(),
        "train_files": len(train_files) - len(train_skipped),
        "skipped_not_utf8": len(train_skipped) + len(val_skipped),
        "val_files": len(val_texts),
        "val_chars_per_token": chars_per_token(tok, val_texts) if val_texts else None,
    }
