"""Shared fixtures for the search tests: a tiny corpus of stdlib files, a tiny tokenizer, a tiny search space."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from codenas.corpus.sources import stdlib_dir
from codenas.model.tokenizer import train_tokenizer
from codenas.search.space import SearchSpace
from codenas.search.study import SearchConfig

CORPUS_FILES = ("fnmatch.py", "glob.py", "shlex.py", "textwrap.py", "colorsys.py", "bisect.py")
TINY_SPACE = SearchSpace(n_layer=(1, 2), n_head=(2,), d_model=(16, 32), d_ff_ratio=(2,), context_length=(16, 32),
                         dropout=(0.0, 0.1))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and CI's two cores are shared by two test workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name in CORPUS_FILES:
        shutil.copy(stdlib_dir() / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_corpus, tmp_path_factory) -> Path:
    return train_tokenizer(sorted(tiny_corpus.glob("*.py")), 300, tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture
def tiny_config(tiny_corpus, tiny_tokenizer, tmp_path, tmp_path_factory, monkeypatch):
    """A factory of SearchConfigs for a search of seconds (the corpus is built once per session, in a private
    cache)."""
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path_factory.getbasetemp() / "codenas_home"))

    def make(**overrides) -> SearchConfig:
        settings = dict(out=tmp_path / "out", max_params=50_000, trials=3, budget_tokens=2 * 2 * 32 * 2,
                        space=TINY_SPACE, tokenizer=tiny_tokenizer, corpus=tiny_corpus, batch_size=2, evals=2,
                        eval_batches=1, device="cpu")
        return SearchConfig(**{**settings, **overrides})

    return make
