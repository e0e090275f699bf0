"""The byte-level BPE tokenizer: exact round trip on every stdlib file, fixed special tokens, deterministic
training (a corpus's tokenizer and its split are the corpus build's: tests/corpus)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codenas.corpus.sources import resolve_sources
from codenas.io import CodenasError, sha256_file
from codenas.model.tokenizer import EOT, PAD, encode_texts, eot_id, load_tokenizer, pad_id, train_tokenizer

TRICKY = ["", " ", "  leading spaces", "tabs\tand\r\nCRLF\n", "emoji 🐍 and ünïcödé", "\x00\x01 nul",
          f"a literal {EOT} and {PAD} inside code", "x = 'ß' * 3\n", "\u200b zero width", "trailing  \n\n"]


def stdlib_sample(n: int | None) -> list[Path]:
    """``n`` stdlib .py files (the corpus sources' deterministic sample; None: all of them)."""
    source = resolve_sources(["stdlib"], n)[0]
    return [Path(source.root) / f for f in source.files]


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    return train_tokenizer(stdlib_sample(150), 1024, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_special_tokens_have_fixed_ids(tok_path):
    tok = load_tokenizer(tok_path)
    assert (eot_id(tok), pad_id(tok)) == (0, 1)
    assert tok.get_vocab_size() == 1024


@pytest.mark.slow
def test_round_trip_every_stdlib_file(tok_path):
    tok = load_tokenizer(tok_path)
    files = stdlib_sample(None)
    kept, texts = [], []
    for f in files:
        try:
            texts.append(f.read_bytes().decode("utf-8"))
            kept.append(f)
        except UnicodeDecodeError:
            continue
    assert len(files) > 500 and len(kept) > 0.99 * len(files)
    decoded = tok.decode_batch(encode_texts(tok, texts), skip_special_tokens=False)
    mismatched = [str(f) for f, a, b in zip(kept, texts, decoded, strict=True) if a != b]
    assert mismatched == []


def test_round_trip_tricky_text_and_literal_special_tokens(tok_path):
    tok = load_tokenizer(tok_path)
    ids = encode_texts(tok, TRICKY)
    assert tok.decode_batch(ids, skip_special_tokens=False) == TRICKY
    assert eot_id(tok) not in ids[6]  # a literal "<|endoftext|>" in source is text, not the separator


def test_training_is_deterministic(tok_path, tmp_path):
    again = train_tokenizer(stdlib_sample(150), 1024, tmp_path / "again.json")
    assert sha256_file(again) == sha256_file(tok_path)


def test_bad_inputs_raise_codenas_error(tmp_path):
    with pytest.raises(CodenasError, match="vocab_size"):
        train_tokenizer(stdlib_sample(3), 100, tmp_path / "t.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CodenasError, match="bad.json"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(CodenasError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
