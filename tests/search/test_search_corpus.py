"""The search trains on a built corpus: a run's (or `corpus build`'s) folder as it is, or its source built once
into the cache the way every pretraining corpus is."""

from __future__ import annotations

from pathlib import Path

from codenas.corpus.build import build_cached
from codenas.io import read_json
from codenas.search.study import prepare_corpus, thin_validation_note


def test_a_source_is_built_once_and_a_built_corpus_is_used_as_it_is(tiny_config, tiny_corpus, tiny_tokenizer):
    folder, tokenizer = prepare_corpus(tiny_config())  # the fixture's source and tokenizer
    assert tokenizer == tiny_tokenizer and (folder / "manifest.json").is_file()
    assert folder == build_cached([str(tiny_corpus)], tokenizer=tiny_tokenizer)  # the same build, from the cache
    assert prepare_corpus(tiny_config(corpus=folder, tokenizer=None)) == (folder, folder / "tokenizer.json")


def test_without_a_tokenizer_the_build_trains_one_of_vocab_size(tiny_config, tiny_corpus):
    folder, tokenizer = prepare_corpus(tiny_config(tokenizer=None, vocab_size=290, max_files=4))
    manifest = read_json(Path(folder) / "manifest.json")
    assert tokenizer == folder / "tokenizer.json"
    assert manifest["tokenizer"]["trained_here"] and manifest["tokenizer"]["vocab_size"] <= 290
    assert manifest["settings"]["max_files"] == 4 and manifest["sources"][str(tiny_corpus)]["files"] == 4
    assert manifest["documents"]["val"] >= 1


def test_a_validation_split_thinner_than_one_evaluation_is_pointed_out(tiny_config):
    config = tiny_config()
    folder, _ = prepare_corpus(config)
    val_tokens = read_json(Path(folder) / "manifest.json")["tokens"]["val"]
    assert thin_validation_note(folder, config) == ""  # 1 batch of 2 windows of at most 32 tokens
    note = thin_validation_note(folder, tiny_config(eval_batches=val_tokens))  # 64x the split at context 32
    assert f"holds {val_tokens:,} tokens, fewer than the {val_tokens * 2 * 32:,}" in note
