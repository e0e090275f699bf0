"""Training's corpus: a folder of .py files is built through the corpus build into the cache once (filtered,
deduplicated, split by document) and reused by content key; the batch sources."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from codenas.corpus.build import MANIFEST
from codenas.io import read_json
from codenas.model.tokenizer import eot_id, load_tokenizer
from codenas.settings import CorpusSettings
from codenas.train.corpus import RandomWindows, fixed_windows, prepare_corpus

QUICK = CorpusSettings(tasks=2, workers=1, val_fraction=0.2, decontaminate=False)


def test_a_py_folder_is_built_once_and_decodes_to_its_files(small_corpus, small_tokenizer, tmp_path):
    first = prepare_corpus(small_tokenizer, small_corpus, settings=QUICK, cache=tmp_path)
    folder = Path(first.meta["corpus"])
    manifest = read_json(folder / MANIFEST)
    assert folder.parent == tmp_path and manifest["sources"][str(small_corpus)]["files"] == 60
    assert sum(d["docs"] for d in manifest["rules"].values()) + first.meta["train_documents"] + \
        first.meta["val_documents"] == 60  # every file is a document: dropped by a counted rule, or kept
    stamp = (folder / MANIFEST).stat().st_mtime_ns
    again = prepare_corpus(small_tokenizer, small_corpus, settings=QUICK, cache=tmp_path)
    assert again.meta == first.meta and (folder / MANIFEST).stat().st_mtime_ns == stamp
    tok = load_tokenizer(small_tokenizer)
    train = np.asarray(first.train[0:len(first.train)])
    assert train.dtype == np.uint16 and len(train) == first.meta["train_tokens"]
    assert int((train == eot_id(tok)).sum()) == first.meta["train_documents"]
    first_doc = tok.decode(train[: int(np.argmax(train == eot_id(tok)))].tolist(), skip_special_tokens=False)
    assert first_doc in {p.read_text() for p in small_corpus.rglob("*.py")}


def test_an_edited_source_rebuilds_and_max_tokens_truncates(small_corpus, small_tokenizer, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for p in sorted(small_corpus.rglob("*.py"))[:8]:
        shutil.copy(p, source / p.name)
    full = prepare_corpus(small_tokenizer, source, settings=QUICK, cache=tmp_path / "cache")
    short = prepare_corpus(small_tokenizer, source, settings=QUICK, cache=tmp_path / "cache", max_tokens=1000)
    assert short.meta == full.meta and len(short.train) == 1000
    edited = sorted(source.glob("*.py"))[0]
    edited.write_text(edited.read_text() + "\n\ndef added_here():\n    return 'a new function'\n")
    rebuilt = prepare_corpus(small_tokenizer, source, settings=QUICK, cache=tmp_path / "cache")
    assert rebuilt.meta["corpus"] == full.meta["corpus"] and rebuilt.meta["key"] != full.meta["key"]
    assert rebuilt.meta["train_tokens"] + rebuilt.meta["val_tokens"] > full.meta["train_tokens"] + \
        full.meta["val_tokens"]


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
