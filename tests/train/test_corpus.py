"""The tokenized corpus cache and the batch sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from codenas.model.tokenizer import eot_id, load_tokenizer, read_texts
from codenas.train.corpus import RandomWindows, fixed_windows, prepare_corpus


def test_corpus_is_tokenized_once_and_decodes_to_the_files(small_corpus, small_tokenizer, tmp_path):
    first = prepare_corpus(small_tokenizer, small_corpus, cache=tmp_path)
    stamp = (Path(first.meta["cache"]) / "train.bin").stat().st_mtime_ns
    again = prepare_corpus(small_tokenizer, small_corpus, cache=tmp_path)
    assert again.meta == first.meta
    assert (Path(first.meta["cache"]) / "train.bin").stat().st_mtime_ns == stamp
    tok = load_tokenizer(small_tokenizer)
    train = np.asarray(first.train)
    assert first.train.dtype == np.uint16 and len(train) == first.meta["train_tokens"]
    assert int((train == eot_id(tok)).sum()) == first.meta["train_files"]
    first_doc = train[: int(np.argmax(train == eot_id(tok)))].tolist()
    texts, _ = read_texts(sorted(p for p in small_corpus.rglob("*.py")))
    assert tok.decode(first_doc, skip_special_tokens=False) in texts


def test_cache_key_follows_inputs_and_max_tokens_truncates(small_corpus, small_tokenizer, tmp_path):
    full = prepare_corpus(small_tokenizer, small_corpus, cache=tmp_path)
    fewer = prepare_corpus(small_tokenizer, small_corpus, cache=tmp_path, max_files=10)
    assert fewer.meta["cache"] != full.meta["cache"] and fewer.meta["train_files"] <= 10
    short = prepare_corpus(small_tokenizer, small_corpus, cache=tmp_path, max_tokens=1000)
    assert short.meta["cache"] == full.meta["cache"] and len(short.train) == 1000


def test_random_windows_resume_and_shift():
    tokens = np.arange(1000, dtype=np.uint16)
    source = RandomWindows(tokens, 4, 16, seed=3)
    source.next_batch()
    state = source.state_dict()
    expected = [source.next_batch() for _ in range(2)]
    other = RandomWindows(tokens, 4, 16, seed=3)
    other.load_state_dict(state)
    for want, got in zip(expected, [other.next_batch() for _ in range(2)], strict=True):
        assert torch.equal(want["input_ids"], got["input_ids"])
        assert torch.equal(got["targets"], got["input_ids"] + 1)
    rank0, rank1 = RandomWindows(tokens, 4, 16, seed=3), RandomWindows(tokens, 4, 16, seed=3, rank=1)
    assert not torch.equal(rank0.next_batch()["input_ids"], rank1.next_batch()["input_ids"])


def test_fixed_windows_are_the_same_every_time():
    tokens = np.arange(500, dtype=np.uint16)
    a, b = fixed_windows(tokens, 3, 2, 8), fixed_windows(tokens, 3, 2, 8)
    assert len(a) == 3 and all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))
    assert int(a[-1]["targets"][-1, -1]) == 499
