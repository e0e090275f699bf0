"""The byte-level BPE tokenizer: exact round trip on every stdlib file, fixed special tokens, stable file split."""

from __future__ import annotations

from pathlib import Path

import pytest

from codenas.io import CodenasError, sha256_file
from codenas.model.tokenizer import (
    EOT,
    PAD,
    build_tokenizer,
    encode_texts,
    eot_id,
    load_tokenizer,
    pad_id,
    read_texts,
    sample_files,
    split_files,
    stdlib_dir,
    stdlib_files,
    train_tokenizer,
)

TRICKY = ["", " ", "  leading spaces", "tabs\tand\r\nCRLF\n", "emoji 🐍 and ünïcödé", "\x00\x01 nul",
          f"a literal {EOT} and {PAD} inside code", "x = 'ß' * 3\n", "\u200b zero width", "trailing  \n\n"]


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    files = sample_files(stdlib_files(), stdlib_dir(), 150)
    return train_tokenizer(files, 1024, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_special_tokens_have_fixed_ids(tok_path):
    tok = load_tokenizer(tok_path)
    assert (eot_id(tok), pad_id(tok)) == (0, 1)
    assert tok.get_vocab_size() == 1024


@pytest.mark.slow
def test_round_trip_every_stdlib_file(tok_path):
    tok = load_tokenizer(tok_path)
    files = stdlib_files()
    texts, skipped = read_texts(files)
    assert len(files) > 500 and len(skipped) < 0.01 * len(files)
    decoded = tok.decode_batch(encode_texts(tok, texts), skip_special_tokens=False)
    kept = [f for f in files if f not in skipped]
    mismatched = [str(f) for f, a, b in zip(kept, texts, decoded, strict=True) if a != b]
    assert mismatched == []


def test_round_trip_tricky_text_and_literal_special_tokens(tok_path):
    tok = load_tokenizer(tok_path)
    ids = encode_texts(tok, TRICKY)
    assert tok.decode_batch(ids, skip_special_tokens=False) == TRICKY
    assert eot_id(tok) not in ids[6]  # a literal "<|endoftext|>" in source is text, not the separator


def test_training_is_deterministic(tok_path, tmp_path):
    files = sample_files(stdlib_files(), stdlib_dir(), 150)
    again = train_tokenizer(files, 1024, tmp_path / "again.json")
    assert sha256_file(again) == sha256_file(tok_path)


def test_split_is_stable_and_disjoint(tmp_path):
    files = [tmp_path / f"m{i}.py" for i in range(300)]
    train, val = split_files(files, tmp_path, 0.05)
    assert val and not set(train) & set(val) and len(train) + len(val) == 300
    train2, val2 = split_files(files + [tmp_path / "new.py"], tmp_path, 0.05)
    assert set(val) <= set(val2) and set(train) <= set(train2)
    assert split_files(files[:2], tmp_path, 0.02)[1] != []  # at least one val file


def test_build_tokenizer_skips_non_utf8_and_reports_chars_per_token(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, f in enumerate(sample_files(stdlib_files(), stdlib_dir(), 30)):
        (corpus / f"f{i}.py").write_bytes(f.read_bytes())
    (corpus / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    report = build_tokenizer(corpus, 600, tmp_path / "tok.json", val_fraction=0.2)
    assert report["skipped_not_utf8"] == 1 and report["train_files"] + report["val_files"] == 30
    assert report["val_chars_per_token"] > 1.5
    assert load_tokenizer(tmp_path / "tok.json").get_vocab_size() <= 600


def test_bad_inputs_raise_codenas_error(tmp_path):
    with pytest.raises(CodenasError, match="vocab_size"):
        train_tokenizer(stdlib_files()[:3], 100, tmp_path / "t.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CodenasError, match="bad.json"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(CodenasError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
